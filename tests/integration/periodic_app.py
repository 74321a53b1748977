"""An app with periodic tasks, for the `pgqueue cron list` command tests."""

from __future__ import annotations

from datetime import timedelta

import pgqueue

app = pgqueue.PgQueue()


@app.periodic(
    "0 2 * * *", timezone="Europe/Berlin", name="nightly", kwargs={"full": True},
    catch_up=timedelta(hours=6),
)  # fmt: skip
def nightly_report(full: bool) -> None:
    """Pretend to build a report."""


@app.periodic("*/5 * * * *", name="refresh", coalesce=True, overlap=False, catch_up=90.5)
def refresh_cache() -> None:
    """Pretend to refresh a cache: after downtime, once, not once per missed tick, and never
    while the previous run goes on."""
