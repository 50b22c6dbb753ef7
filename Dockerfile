# Serika Web: the wheel on a slim Python, run as a non-root user (see compose.yaml and README.md).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    STATIC_ROOT=/srv/serika-web/static
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home serika
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
# Static files belong to the image (so an upgrade brings its own), not to the /data volume.
# A throwaway key and database: nothing from the build may become the site's key.
RUN SECRET_KEY=collectstatic-only DATABASE_URL=sqlite://:memory: \
    serika-web collectstatic --noinput -v 0
USER 10001:10001
WORKDIR /data
# The mount point of compose.yaml's media volume, so that the volume starts owned by serika.
RUN mkdir -p /data/media
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["serika-web", "serve", "--host", "0.0.0.0", "--port", "8000"]
