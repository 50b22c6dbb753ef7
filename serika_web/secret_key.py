"""The signing key of an installation that was given none: made once, kept in DATA_DIR.

A self-hosted app should start on its first run without asking for a secret (Open WebUI does the
same): the first process to start writes a random key to `DATA_DIR/secret_key` (mode 0600) and
every later one, or one started at the same moment, reads that same file. An explicit
`SECRET_KEY` always wins, and several hosts must share one (or one DATA_DIR).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

KEY_FILE_NAME = "secret_key"


def load_or_create_secret_key(data_dir: Path) -> str:
    """The key stored in `data_dir`, created there (with the folder) when there is none yet.

    Creation is atomic: the key is written in full to a private temporary file, which is then
    hard-linked to its final name. A link never replaces an existing file, so of two processes
    starting at once exactly one wins, and neither can read a half-written key.
    """
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # 64 URL-safe characters: well past check --deploy's 50-character, 5-distinct minimum.
        key = secrets.token_urlsafe(48)
        fd, temporary = _private_temporary_file(data_dir)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(key)
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use its key
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"{path} is empty: delete it to have a new key made, or set SECRET_KEY")
    return key


def _private_temporary_file(directory: Path) -> tuple[int, str]:
    """A new file in `directory` that only its owner may read (0600 whatever the umask)."""
    while True:
        name = str(directory / f".{KEY_FILE_NAME}.{secrets.token_hex(8)}.tmp")
        with contextlib.suppress(FileExistsError):
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), name
