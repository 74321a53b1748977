"""``pgqueue demo``: orders and their jobs committed together, then run by a worker.

With a DSN (``PGQUEUE_DSN`` or ``--dsn``) the demo uses that database; without one it starts a
throwaway embedded PostgreSQL (the optional ``pgserver`` package) and deletes it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgqueue import _store
from pgqueue._connections import normalize_dsn
from pgqueue._demo._report import report, show_leftovers
from pgqueue._demo._server import embedded_server
from pgqueue._demo._shop import DECLINE_EVERY, Placed, place_orders, prepare
from pgqueue._demo._tasks import BOUNCING, QUEUES, TASKS, app, send_receipt
from pgqueue._migrate import migrate, schema_check

POLL = 0.1  # seconds between progress reads
PROCESSES = 2


def run_demo(dsn: str | None, orders: int) -> None:
    """Run the demo on ``dsn``, or on a throwaway embedded PostgreSQL when ``dsn`` is None."""
    with _quiet_logs():
        _run_demo(dsn, orders)


def _run_demo(dsn: str | None, orders: int) -> None:
    if dsn:
        dsn = normalize_dsn(dsn)
        click.echo(f"Using the database given by --dsn or PGQUEUE_DSN ({_where(dsn)}).")
        placed = _demo(dsn, orders)
        show_leftovers(placed)
        return
    click.echo(
        "No database given (--dsn or PGQUEUE_DSN): starting a throwaway embedded PostgreSQL"
        " (pgserver)."
    )
    with embedded_server() as embedded:
        _demo(embedded, orders)
    click.echo("The embedded PostgreSQL is stopped and its data directory deleted.")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep the progress bar whole: hide the worker's INFO lines (started, stopped) and the
    ERROR lines of the jobs that fail on purpose, which the report explains instead."""
    loggers = [logging.getLogger(name) for name in ("pgqueue", "pgserver")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        if logger.getEffectiveLevel() == logging.INFO:
            logger.setLevel(logging.WARNING)
    worker_log = logging.getLogger("pgqueue.worker")
    worker_log.addFilter(_not_on_purpose)
    try:
        yield
    finally:
        worker_log.removeFilter(_not_on_purpose)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _not_on_purpose(record: logging.LogRecord) -> bool:
    """False for the record of a receipt to the address that bounces, failed for good."""
    return not (
        getattr(record, "action", None) == "job_failed"
        and getattr(record, "task", None) == send_receipt.name
        and BOUNCING in record.getMessage()
    )


def _where(dsn: str) -> str:
    info = conninfo_to_dict(dsn)
    return ", ".join(f"{k}={info[k]}" for k in ("host", "port", "dbname") if info.get(k))


def _demo(dsn: str, orders: int) -> Placed:
    _install_schema(dsn)
    click.echo(
        f"\nPlacing {orders} orders, one transaction each: INSERT the order, enqueue"
        " send_receipt and render_invoice, COMMIT.\n"
        f"Every {DECLINE_EVERY}th payment is declined on purpose: that transaction rolls back."
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        prepare(conn)
        placed = place_orders(conn, orders)
    click.echo(
        f"  {len(placed.orders)} orders committed ({len(placed.jobs)} jobs),"
        f" {len(placed.rolled_back_orders)} rolled back."
    )
    _run_worker(dsn, placed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        report(conn, placed)
    return placed


def _install_schema(dsn: str) -> None:
    problem = schema_check(dsn)
    migrate(dsn)
    click.echo("Installed pgqueue's schema." if problem else "pgqueue's schema is up to date.")


def _run_worker(dsn: str, placed: Placed) -> None:
    io, cpu = QUEUES.values()
    click.echo(
        f"\nRunning a worker: queue pgqueue_demo.io ({io} at once, async tasks on the event loop)"
        f" and pgqueue_demo.cpu ({cpu} at once, sync tasks in a process pool of {PROCESSES})."
    )
    started = time.monotonic()
    asyncio.run(_work(dsn, placed))
    click.echo(f"Queue empty after {time.monotonic() - started:.1f} s.")


async def _work(dsn: str, placed: Placed) -> None:
    # A short poll: the claimer only re-claims for a busy queue on a wake-up or a poll tick.
    worker = app.worker(queues=QUEUES, dsn=dsn, poll_interval=0.05, processes=PROCESSES)
    runner = asyncio.create_task(worker.run())
    try:
        await _watch(dsn, placed, runner)
    finally:
        worker.stop()
        await runner


async def _watch(dsn: str, placed: Placed, runner: asyncio.Task[None]) -> None:
    """Show a progress bar until none of this run's jobs is queued or running."""
    total = len(placed.jobs)
    query = _store.demo_jobs_unfinished(min(placed.jobs), max(placed.jobs), TASKS)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with click.progressbar(length=total, label="Jobs", show_pos=True) as bar:
            done = 0
            while done < total:
                if runner.done():
                    runner.result()  # the worker failed: raise its error
                    raise RuntimeError("the worker stopped early")
                await asyncio.sleep(POLL)
                async with conn.cursor() as cur:
                    now_done = total - await _store.arun(cur, query)
                bar.update(now_done - done)
                done = now_done
