"""The `serika-web` command of an installed package: manage.py's commands, plus `serve`.

    serika-web migrate
    serika-web createsuperuser
    serika-web collectstatic --noinput
    serika-web serve --host 127.0.0.1 --port 8000 [daphne options]

`serve` is `serika_web.serve` (daphne on uvloop) with `serika_web.asgi:application`. It is
handled here, before Django is set up, because uvloop must be installed before daphne is first
imported; every other word goes to Django's command-line utility, as `manage.py` does.
"""

from __future__ import annotations

import argparse
import os
import sys

APPLICATION = "serika_web.asgi:application"


def serve(args: list[str]) -> None:
    """Run daphne on uvloop with our application; options beyond host and port are daphne's."""
    parser = argparse.ArgumentParser(
        prog="serika-web serve",
        description="Serve the app with daphne on uvloop. Other options are passed to daphne.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (127.0.0.1).")
    parser.add_argument("--port", type=int, default=8000, help="Port to bind (8000).")
    options, daphne_options = parser.parse_known_args(args)

    from serika_web import serve as launcher

    sys.argv = ["daphne", "-b", options.host, "-p", str(options.port), *daphne_options]
    sys.argv.append(APPLICATION)
    launcher.main()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `serika-web` console script."""
    argv = list(sys.argv if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")
    if argv[1:2] == ["serve"]:
        serve(argv[2:])
        return
    if argv[1:] in ([], ["help"], ["--help"], ["-h"]):
        print("serika-web serve [--host HOST] [--port PORT]: run the app (daphne on uvloop).\n")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["serika-web", *argv[1:]])


if __name__ == "__main__":
    main()
