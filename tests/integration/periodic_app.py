"""An app with one periodic task, for the `pgqueue cron list` command test."""

from __future__ import annotations

import pgqueue

app = pgqueue.PgQueue()


@app.periodic("0 2 * * *", timezone="Europe/Berlin", name="nightly", kwargs={"full": True})
def nightly_report(full: bool) -> None:
    """Pretend to build a report."""


@app.periodic("*/5 * * * *", name="refresh", coalesce=True)
def refresh_cache() -> None:
    """Pretend to refresh a cache: after downtime, once, not once per missed tick."""
