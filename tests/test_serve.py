"""The deployed launcher really puts daphne on uvloop."""

from __future__ import annotations

import subprocess
import sys


def test_daphne_started_through_the_launcher_runs_on_uvloop():
    # A fresh interpreter: daphne builds its loop once, when daphne.server is first imported.
    probe = (
        "from serika_web.serve import install_uvloop\n"
        "assert install_uvloop()\n"
        "import daphne.server\n"
        "print(type(daphne.server.twisted_loop).__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().startswith("uvloop")


def test_without_the_launcher_daphne_would_use_asyncios_loop():
    # The control: the assertion above depends on the launcher, not on the environment.
    probe = "import daphne.server\nprint(type(daphne.server.twisted_loop).__module__)\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().startswith("asyncio")
