"""`pgqueue demo` end to end: the real CLI in a subprocess, on a test database or embedded."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import query

ORDERS = 50
ROLLED_BACK = ORDERS // 8  # every 8th order is declined on purpose
COMMITTED = ORDERS - ROLLED_BACK


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m pgqueue demo ARGS` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", "demo", *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """This process' environment without any database setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL")}
    return {**env, **extra}


def test_demo_on_pgqueue_dsn_commits_orders_with_their_jobs_and_runs_them(dsn: str) -> None:
    """With PGQUEUE_DSN, committed orders' jobs all finish and rolled-back ones never exist."""
    done = run_demo(clean_env(PGQUEUE_DSN=dsn), "--orders", str(ORDERS))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{COMMITTED} orders committed ({2 * COMMITTED} jobs), {ROLLED_BACK} rolled back" in out
    assert "rolled-back job ids found in pgqueue.jobs:        0" in out
    assert "rolled-back orders found in pgqueue_demo.orders:  0" in out
    assert "DROP SCHEMA pgqueue_demo CASCADE" in out
    assert query(dsn, "SELECT count(*) FROM pgqueue_demo.orders") == [(COMMITTED,)]
    rows = query(dsn, "SELECT task, state, count(*) FROM pgqueue.jobs GROUP BY 1, 2 ORDER BY 1, 2")
    assert sum(n for _, _, n in rows) == 2 * COMMITTED
    assert {state for _, state, _ in rows} <= {"succeeded", "failed", "cancelled"}
    assert ("pgqueue.demo.render_invoice", "succeeded", COMMITTED) in rows
    for task, state, n in rows:  # the printed table is what SQL says
        assert any(line.split()[:3] == [task, state, str(n)] for line in out.splitlines())


def test_the_demo_reports_its_failures_on_purpose_instead_of_logging_them(dsn: str) -> None:
    """The receipts to the address that bounces fail for good on purpose (about 38 of 300
    orders): each logged an ERROR line that cut across the progress bar. Now stderr is quiet
    and the report says what failed, that it was retried, and where the errors are kept."""
    done = run_demo(clean_env(PGQUEUE_DSN=dsn), "--orders", "16")
    assert (done.returncode, done.stderr) == (0, "")
    assert query(
        dsn, "SELECT count(*), min(attempts) FROM pgqueue.jobs WHERE state = 'failed'"
    ) == [(2, 3)]  # orders 3 and 10; the errors are kept, not logged
    assert "\nFailed on purpose (their log lines are held back" in done.stdout
    assert (
        "\n  2 receipts to mallory@example.invalid (no such mailbox): 3 attempts each"
        in done.stdout
    )


def test_the_demo_explains_the_receipts_it_cancels_on_purpose(dsn: str) -> None:
    """The report's table shows receipts ended 'cancelled' (a customer who opted out): the
    report says why, as it does for the failures, instead of leaving them unexplained."""
    done = run_demo(clean_env(PGQUEUE_DSN=dsn), "--orders", "16")
    assert done.returncode == 0, done.stderr
    [(cancelled,)] = query(dsn, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'cancelled'")
    assert cancelled > 0
    assert (
        f"\n  {cancelled} receipts to oscar@example.com (opted out of e-mail): the task raised"
        " pgqueue.Cancel, so they ended cancelled at once, without a retry." in done.stdout
    )


def test_the_query_the_demo_prints_gives_the_table_it_prints(dsn: str) -> None:
    """Run twice on one database, the SQL shown above the table, pasted into psql, gives that
    table (it left out the filter on this run's jobs, so it counted the earlier run's too)."""
    for _ in range(2):
        done = run_demo(clean_env(PGQUEUE_DSN=dsn), "--orders", "16")
        assert done.returncode == 0, done.stderr
    shown, table = done.stdout.split("(this run's jobs):\n", 1)[1].split("\n\n", 2)[:2]
    rows = query(dsn, shown)
    assert sum(n for _, _, n, *_ in rows) == 2 * (16 - 16 // 8)
    for task, state, n, *_ in rows:
        assert any(line.split()[:3] == [task, state, str(n)] for line in table.splitlines())


def test_demo_orders_never_reference_a_rolled_back_job(dsn: str) -> None:
    """Every job's order exists in pgqueue_demo.orders: no job outlived its rollback."""
    done = run_demo(clean_env(PGQUEUE_DSN=dsn), "--orders", "16")
    assert done.returncode == 0, done.stderr
    orphans = query(
        dsn,
        "SELECT count(*) FROM pgqueue.jobs j WHERE NOT EXISTS"
        " (SELECT 1 FROM pgqueue_demo.orders o WHERE o.id = (j.args->>0)::bigint)",
    )
    assert orphans == [(0,)]


@pytest.mark.skipif(importlib.util.find_spec("pgserver") is None, reason="pgserver not installed")
def test_demo_without_dsn_runs_on_an_embedded_server_and_deletes_it(tmp_path: Path) -> None:
    """No PGQUEUE_DSN: the demo starts an embedded PostgreSQL, runs, and leaves nothing behind."""
    done = run_demo(clean_env(TMPDIR=str(tmp_path)), "--orders", "20")
    assert done.returncode == 0, done.stderr
    assert "embedded PostgreSQL" in done.stdout
    assert "rolled-back job ids found in pgqueue.jobs:        0" in done.stdout
    assert "stopped and its data directory deleted" in done.stdout
    assert not list(tmp_path.glob("pgqueue-demo-*"))


def test_demo_without_dsn_or_pgserver_says_what_to_install() -> None:
    """No PGQUEUE_DSN and no pgserver: one line naming --dsn, PGQUEUE_DSN and pip install
    'pgqueue[demo]', exit 1 (it left out --dsn)."""
    code = "import sys; sys.modules['pgserver'] = None; from pgqueue._cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "demo"],
        env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr.strip().splitlines()) == (1, [
        "Error: the demo needs a database: pass --dsn DSN or set PGQUEUE_DSN, or install the"
        " embedded PostgreSQL with pip install 'pgqueue[demo]'"
    ])  # fmt: skip


def test_the_demo_on_dsn_says_where_its_database_comes_from(dsn: str) -> None:
    """`pgqueue --dsn DSN demo` said "Using the database in PGQUEUE_DSN", which was not set:
    the demo now names both ways it can have been given."""
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "demo", "--orders", "8"],
        env=clean_env(), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Using the database given by --dsn or PGQUEUE_DSN (host=")
