"""Run daphne on uvloop: `python -m serika_web.serve [daphne options] serika_web.asgi:application`.

daphne builds its event loop when `daphne.server` is first imported, from the loop policy in
force then; installing uvloop's policy before that import puts Twisted's asyncio reactor, and so
every websocket frame, upstream read and task switch, on uvloop, which costs less CPU per
relayed token than asyncio's default loop (measured in docs/benchmarks.md). Options are daphne's.

It also bounds request bodies while they arrive (HTTP_MAX_BODY_BYTES), which plain daphne cannot,
and shuts down gracefully on SIGTERM: Twisted turns the signal into a reactor stop, whose
"before shutdown" phase waits for `chat.generation.drain` (replies finish for up to
SHUTDOWN_GRACE_SECONDS, the rest are saved as interrupted with all their text) before daphne
closes its sockets and exits.
"""

from __future__ import annotations

import asyncio
import sys


def install_uvloop() -> bool:
    """Make uvloop the loop policy (before daphne is imported); False where it is unavailable."""
    try:
        import uvloop
    except ImportError:  # Windows: daphne stays on asyncio's default loop
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def install_graceful_shutdown() -> None:
    """Make a reactor stop (SIGTERM) wait for the process's live replies (see the docstring)."""
    from twisted.internet import defer, reactor

    def drain() -> defer.Deferred:
        import django
        from django.conf import settings

        django.setup()  # done already by daphne's application import; cheap when so
        from chat import generation

        return defer.Deferred.fromFuture(
            asyncio.ensure_future(generation.drain(settings.SHUTDOWN_GRACE_SECONDS))
        )

    reactor.addSystemEventTrigger("before", "shutdown", drain)


def main() -> None:
    """daphne's command line, on uvloop, with request bodies bounded (serika_web/body_limit.py)
    and a graceful SIGTERM."""
    install_uvloop()
    from serika_web import body_limit

    body_limit.install()
    import daphne.server  # noqa: F401  (installs Twisted's asyncio reactor on uvloop)

    install_graceful_shutdown()
    from daphne.cli import CommandLineInterface

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
