"""What the demo prints at the end: job states read with SQL, and the rollback proof."""

from __future__ import annotations

from typing import Any

import click
import psycopg

from pgqueue import _store
from pgqueue._demo._shop import Placed
from pgqueue._demo._tasks import BOUNCING, OPTED_OUT, TASKS, send_receipt

HEADER = ("task", "state", "jobs", "attempts", "last error (one of them)")


def report(conn: psycopg.Connection[Any], placed: Placed) -> None:
    """Print this run's jobs per task and state, then prove the rolled-back jobs never existed."""
    with conn.cursor() as cur:
        rows = _store.run(cur, _store.demo_jobs_by_state(min(placed.jobs), max(placed.jobs), TASKS))
        ghost_jobs = _store.run(cur, _store.demo_jobs_count(placed.rolled_back_jobs))
        ghost_orders = _store.run(cur, _store.demo_orders_count(placed.rolled_back_orders))
    click.echo("\nJob states, read with SQL from pgqueue.jobs (this run's jobs):")
    click.echo("  SELECT task, state, count(*), max(attempts), min(last_error)")
    click.echo(f"    FROM pgqueue.jobs WHERE id BETWEEN {min(placed.jobs)} AND {max(placed.jobs)}")
    click.echo("     AND task LIKE 'pgqueue.demo.%' GROUP BY task, state;\n")
    _table([HEADER, *[(t, s, str(n), str(a), e or "") for t, s, n, a, e in rows]])
    receipts = {s: n for t, s, n, _, _ in rows if t == send_receipt.name}
    _on_purpose(receipts.get("failed", 0), receipts.get("cancelled", 0))
    _proof(placed, ghost_jobs, ghost_orders)


def _on_purpose(bounced: int, opted_out: int) -> None:
    if not bounced:  # a run of fewer than 3 orders (the opted-out customer comes later)
        return
    attempts = send_receipt.options.max_attempts
    click.echo(
        "\nFailed on purpose (their log lines are held back, not to break the progress bar):"
    )
    click.echo(
        f"  {bounced} receipts to {BOUNCING} (no such mailbox): {attempts} attempts each, retried"
        " with backoff, then failed; each attempt's error and traceback is kept in pgqueue.jobs"
        " (pgqueue jobs show ID)."
    )
    if opted_out:
        click.echo(
            f"  {opted_out} receipts to {OPTED_OUT} (opted out of e-mail): the task raised"
            " pgqueue.Cancel, so they ended cancelled at once, without a retry."
        )
    click.echo(
        "  Invoices of orders ending in 3: the printer jams on the first attempt; retried, they"
        " succeed."
    )


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            c.rjust(w) if c.isdigit() else c.ljust(w) for c, w in zip(row, widths, strict=True)
        ]
        click.echo(("  " + "  ".join(cells)).rstrip())


def _proof(placed: Placed, ghost_jobs: int, ghost_orders: int) -> None:
    orders, jobs = len(placed.rolled_back_orders), len(placed.rolled_back_jobs)
    click.echo(
        f"\nThe {orders} rolled-back orders: enqueue() had returned {jobs} job ids inside"
        " those transactions."
    )
    click.echo(f"  rolled-back job ids found in pgqueue.jobs:        {ghost_jobs}")
    click.echo(f"  rolled-back orders found in pgqueue_demo.orders:  {ghost_orders}")
    if ghost_jobs == 0 and ghost_orders == 0:
        click.echo("  Rolled back means never enqueued: no job ran, no worker was woken.")


CLEAN_UP = (
    "  DROP SCHEMA pgqueue_demo CASCADE;\n"
    "  DELETE FROM pgqueue.finished_jobs WHERE task LIKE 'pgqueue.demo.%';"
)


def show_leftovers(placed: Placed) -> None:
    """Say what a demo run against the user's own database leaves there, and how to remove it."""
    click.echo(
        "\nLeft in your database: pgqueue's schema; schema pgqueue_demo with table orders"
        f" ({len(placed.orders)} rows from this run); this run's {len(placed.jobs)} finished"
        " jobs (tasks pgqueue.demo.*) in pgqueue.finished_jobs. To remove the demo's part:"
    )
    click.echo(CLEAN_UP)
