"""The deployed launcher really puts daphne on uvloop, and bounds request bodies."""

from __future__ import annotations

import subprocess
import sys


def run_probe(probe: str) -> str:
    """Run `probe` in a fresh interpreter (daphne builds its loop once, when daphne.server is
    first imported) and return what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_daphne_started_through_the_launcher_runs_on_uvloop():
    probe = (
        "from serika_web.serve import install_uvloop\n"
        "assert install_uvloop()\n"
        "import daphne.server\n"
        "print(type(daphne.server.twisted_loop).__module__)\n"
    )
    assert run_probe(probe).startswith("uvloop")


def test_without_the_launcher_daphne_would_use_asyncios_loop():
    # The control: the assertion above depends on the launcher, not on the environment.
    probe = "import daphne.server\nprint(type(daphne.server.twisted_loop).__module__)\n"
    assert run_probe(probe).startswith("asyncio")


def test_the_body_limit_still_fits_daphne_and_twisted():
    # Fails loudly if a daphne or Twisted upgrade moves what serika_web.body_limit replaces
    # (tests/test_body_limit.py checks that it works).
    probe = (
        "from serika_web.serve import install_uvloop\n"
        "install_uvloop()\n"
        "from serika_web import body_limit\n"
        "body_limit.install()\n"
        "import daphne.server\n"
        "from twisted.web import http\n"
        "assert daphne.server.HTTPFactory is body_limit.BoundedHTTPFactory\n"
        "assert issubclass(body_limit.BoundedWebRequest, http.Request)\n"
        "for hook in ('gotLength', 'handleContentChunk', 'requestReceived'):\n"
        "    assert hook in vars(http.Request), hook\n"
        "print('ok')\n"
    )
    assert run_probe(probe) == "ok"
