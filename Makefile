# Serika Web. `make run` starts the app on the embedded defaults; `make test` runs every check.
# Both set up the virtualenv first, so a fresh clone needs nothing but Python 3.11+.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# PostgreSQL + Redis for the second test pass (trust auth on this machine's defaults).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/serika
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: install run migrate superuser test test-embedded test-services lint format migrations-check bench pygments-css clean

# Create the virtualenv and install the app with its dev tools; redone when pyproject changes.
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Start the app at http://$(HOST):$(PORT) (SQLite under data/, in-memory channel layer).
run: install
	mkdir -p data
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py collectstatic --noinput -v 0
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py import_starter_character
	DEBUG=$${DEBUG:-true} $(BIN)/python -m serika_web.serve -b $(HOST) -p $(PORT) serika_web.asgi:application

migrate: install
	$(BIN)/python manage.py migrate

# Create the first admin (asks for a name and password), with the same settings as `make run`.
superuser: install
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py createsuperuser

# Lint, migrations check, then the suite on the embedded defaults and on PostgreSQL + Redis.
test: install lint migrations-check test-embedded test-services

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrations-check: install
	DEBUG=true DATABASE_URL=sqlite://:memory: $(BIN)/python manage.py makemigrations --check --dry-run

# The whole suite on SQLite and the in-memory channel layer.
test-embedded: install
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest

# The whole suite again on PostgreSQL and Redis; skipped (and said so) when neither answers,
# except in CI, where a missing service is a failure.
# The wheel test is left out: it proves the package, which the database does not change.
test-services: install
	@if $(BIN)/python tests/services_up.py "$(TEST_DATABASE_URL)" "$(TEST_REDIS_URL)"; then \
		DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" $(BIN)/pytest -m "not wheel"; \
	elif [ "$${CI:-}" = "true" ]; then \
		echo "CI: PostgreSQL or Redis is not reachable"; exit 1; \
	else \
		echo "SKIPPED the PostgreSQL + Redis pass: services not reachable (see above)"; \
	fi

# Relay benchmarks (see bench/README.md); results go to docs/benchmarks.md by hand.
bench: install
	$(BIN)/python -m bench.run

# Regenerate the code-highlighting stylesheet from Pygments' styles.
pygments-css: install
	$(BIN)/python -c "from serika_web.rendering import pygments_css; print(pygments_css(), end='')" > static/css/pygments.css

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
