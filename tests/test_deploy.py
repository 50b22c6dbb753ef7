"""The deployment files: what can be checked without a container runtime or systemd.

The Dockerfile is linted by hadolint and compose.yaml validated against the compose
specification's JSON schema (vendored by check-jsonschema); each check is shown to reject a
broken file. The rest is structure: the pieces these files must agree on (ports, the probe
path, the websocket headers). Nothing here builds an image or starts a container.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NGINX_CONFIGS = [
    ROOT / "deploy" / "nginx" / "serika-web.conf",
    ROOT / "deploy" / "nginx" / "compose.conf",
]


def hadolint(dockerfile: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=60,
    )


def validate_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose() -> dict:
    return YAML(typ="safe").load(ROOT / "compose.yaml")


def test_the_dockerfile_passes_hadolint():
    result = hadolint((ROOT / "Dockerfile").read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_careless_dockerfile():
    # The control: the linter runs and fails on findings.
    result = hadolint("FROM python:latest\nRUN pip install django\n")
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def test_the_image_runs_the_wheel_as_a_non_root_user_and_probes_healthz():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, flags=re.MULTILINE)
    assert "pip wheel" in dockerfile and "pip install --no-cache-dir /tmp/dist/*.whl" in dockerfile
    user = re.findall(r"^USER (\S+)", dockerfile, flags=re.MULTILINE)
    assert user and not user[-1].startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, flags=re.MULTILINE)
    assert 'CMD ["serika-web", "serve", "--host", "0.0.0.0", "--port", "8000"]' in dockerfile


def test_compose_yaml_follows_the_compose_specification(tmp_path):
    result = validate_compose(ROOT / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        (ROOT / "compose.yaml").read_text().replace("  redis:\n", "  redis:\n    restartt: no\n", 1)
    )
    assert validate_compose(broken).returncode != 0  # the control: the schema is enforced


def test_compose_runs_two_apps_on_postgresql_and_redis_behind_nginx():
    services = compose()["services"]
    assert set(services) >= {"db", "redis", "migrate", "app1", "app2", "nginx"}
    for name in ["app1", "app2"]:
        app = services[name]
        assert app["build"] == "."
        assert app["command"][:2] == ["serika-web", "serve"]
        assert app["environment"]["DATABASE_URL"].startswith("postgres://")
        assert app["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert app["environment"]["USE_X_FORWARDED_PROTO"] == "true"
        assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"][:2] == ["serika-web", "migrate"]
    nginx_volumes = services["nginx"]["volumes"]
    assert "./deploy/nginx/compose.conf:/etc/nginx/conf.d/default.conf:ro" in nginx_volumes
    upstream = (ROOT / "deploy" / "nginx" / "compose.conf").read_text()
    assert "server app1:8000;" in upstream and "server app2:8000;" in upstream


@pytest.mark.parametrize("path", NGINX_CONFIGS, ids=lambda p: p.name)
def test_nginx_proxies_websockets_with_the_scheme_and_long_timeouts(path):
    conf = path.read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert "client_max_body_size 32m;" in conf
    assert "listen 443 ssl http2;" in conf and "ssl_certificate " in conf
    # Overwritten: daphne's --proxy-headers takes the first entry as the client's address.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert "location /static/" in conf
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))
    assert read_timeout > 600  # longer than SERIKA_STREAM_MAX_SECONDS' default
    assert len(re.findall(r"^\s+server \S+:\d+;", conf, flags=re.MULTILINE)) == 2
    assert conf.count("{") == conf.count("}")


def test_the_systemd_units_start_serika_web_serve_per_port_after_the_setup():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "systemd" / "serika-web@.service")
    exec_start = unit["Service"]["ExecStart"]
    assert exec_start.endswith("serika-web serve --host 127.0.0.1 --port %i --proxy-headers")
    assert "serika-web-setup.service" in unit["Unit"]["Requires"]
    assert unit["Service"]["User"] != "root"
    conf = (ROOT / "deploy" / "nginx" / "serika-web.conf").read_text()
    assert "server 127.0.0.1:8001;" in conf and "server 127.0.0.1:8002;" in conf
    setup = (ROOT / "deploy" / "systemd" / "serika-web-setup.service").read_text()
    assert "serika-web migrate --noinput" in setup
    assert "serika-web collectstatic --noinput" in setup
