"""Whether this process can reach its database, logged once per outage with its end."""

from __future__ import annotations

import logging
import time

from serika_web import metrics

log = logging.getLogger(__name__)


class DatabaseHealth:
    """Tracks failures of the writes that must outlive an outage (reply saves, heartbeats).

    Those writes retry every second or so while the database is away; logging each failure
    would bury the one line an operator needs: when the outage began, and when it ended.
    """

    def __init__(self) -> None:
        self.down_since: float | None = None

    def failed(self, exc: BaseException) -> None:
        """A write failed; the first failure of an outage is logged as a warning."""
        metrics.DATABASE_ERRORS.inc()
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(
                "The database is unreachable (%s: %s); live replies keep their text and retry",
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )

    def succeeded(self) -> None:
        """A write went through; ends an outage (logged with its length)."""
        if self.down_since is not None:
            log.warning(
                "The database is reachable again after %.1f s", time.monotonic() - self.down_since
            )
            self.down_since = None


database_health = DatabaseHealth()
