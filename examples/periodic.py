"""Periodic tasks: cron schedules that every worker may fire, one job per tick.

    python periodic.py                                  # show the schedules (like cron list)
    pgqueue --app periodic:app worker --queues default,reports
    pgqueue --app periodic:app cron list

Start the worker command in two terminals at once: each tick still becomes one job.

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pgqueue

app = pgqueue.PgQueue()


@app.periodic("* * * * * */2", name="heartbeat")  # a 6th field gives seconds
async def heartbeat() -> str:
    """Report which tick this job serves (it is in the job's meta, in UTC)."""
    tick = datetime.fromisoformat(pgqueue.current_job().meta["tick"])
    return f"heartbeat for {tick:%H:%M:%S}"


@app.periodic("*/5 * * * *", name="rates.refresh", coalesce=True)
async def refresh_rates() -> None:
    """Every five minutes (UTC); after downtime once, for the latest missed tick, not once
    for each tick missed (coalesce=True): only fresh rates matter."""


@app.periodic(
    "0 2 * * *",
    timezone="Europe/Berlin",
    kwargs={"full": True},
    queue="reports",
    name="reports.nightly",
    catch_up=timedelta(hours=6),  # still worth running after a long outage
)
def nightly_report(full: bool) -> str:
    """At 02:00 Berlin time; a run missed by up to six hours is caught up."""
    tick = datetime.fromisoformat(pgqueue.current_job().meta["tick"])
    return f"{'full' if full else 'quick'} report for the night before {tick:%Y-%m-%d}"


def main() -> None:
    """Print each schedule with its last and next tick, whether its runs may overlap, and how
    it catches up missed ticks ("-" for a schedule removed from the code, which nothing fires
    any more)."""
    for status in pgqueue.cron_list(app):
        if status.catch_up is None:  # not in code: its options are unknown
            options = "overlap -, catch-up -, missed ticks: -"
        else:
            missed = "latest only" if status.coalesce else "each"
            options = (
                f"overlap {'yes' if status.overlap else 'no'},"
                f" catch-up {status.catch_up.total_seconds():.15g} s, missed ticks: {missed}"
            )
        print(
            f"{status.name}: {status.schedule}, last {status.last_tick},"
            f" next {status.next_tick}, {options}"
        )


if __name__ == "__main__":
    main()
