"""A database or role whose DateStyle is not ISO ('SQL, DMY' in legacy databases): psycopg
reads timestamptz text in the ISO style only, and raised NotImplementedError on the rest."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

import pgqueue
from pgqueue import admin
from pgqueue._cli import cli
from pgqueue._periodic import cron_list
from tests.helpers import query, run_worker_until, states


@pytest.fixture
def dmy(dsn: str) -> str:
    """The test database, every session opened from now on writing dates as 'SQL, DMY'."""
    name = sql.Identifier(conninfo_to_dict(dsn)["dbname"])
    query(dsn, sql.SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(name))
    with psycopg.connect(dsn) as conn:
        assert conn.info.parameter_status("DateStyle") == "SQL, DMY"
    return dsn


async def run_job_and_ticks(dsn: str, listen: bool) -> None:
    """A worker on ``dsn`` runs a job and the ticks of a schedule of every second, which
    ``cron list`` then reads; the healthcheck sees it live."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.periodic("* * * * * *", name="beat")
    async def beat() -> None:
        return None

    with psycopg.connect(dsn) as conn:
        add.enqueue(conn, 1, 2)
    worker = app.worker(listen=listen, poll_interval=0.05)
    # health_problem reads the worker's row (its timestamps) on a connection of its own.
    ran = lambda: states(dsn).get("succeeded", 0) >= 3  # noqa: E731
    await run_worker_until(worker, lambda: ran() and admin.health_problem(dsn, worker.name) is None)
    [status] = cron_list(app)  # `pgqueue cron list`, which reads the last tick
    assert status.last_tick is not None


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll-only"])
async def test_a_worker_runs_jobs_and_schedules_whatever_the_datestyle(
    dmy: str, listen: bool
) -> None:
    """A worker on a database whose DateStyle is 'SQL, DMY' runs jobs and ticks schedules: it
    failed at start, reading a timestamp psycopg cannot parse in that style."""
    await run_job_and_ticks(dmy, listen)


async def test_a_poll_only_worker_reads_iso_dates_through_pgbouncer(
    dmy: str, pgbouncer: str
) -> None:
    """Through a transaction-mode PgBouncer whose server sessions write 'SQL, DMY', the
    worker's DateStyle holds on every backend its transactions reach (PgBouncer keeps it per
    client): jobs run and schedules tick."""
    with psycopg.connect(pgbouncer, prepare_threshold=None) as conn:
        assert conn.info.parameter_status("DateStyle") == "SQL, DMY"
    await run_job_and_ticks(pgbouncer, listen=False)


def test_the_cli_and_wait_read_jobs_whatever_the_datestyle(dmy: str) -> None:
    """`pgqueue jobs list`, `jobs show` and app.wait_sync, on connections of their own, read a
    job's timestamps on a database whose DateStyle is 'SQL, DMY'."""
    app = pgqueue.PgQueue(dmy)
    with psycopg.connect(dmy) as conn:
        job_id = app.task(name="t")(lambda: None).enqueue(conn)
    query(dmy, "SELECT pgqueue.cancel(%s)", [job_id])
    for args in (["jobs", "list"], ["jobs", "show", str(job_id)]):
        result = CliRunner().invoke(cli, ["--dsn", dmy, *args], catch_exceptions=False)
        assert result.exit_code == 0 and "cancelled" in result.output, result.output
    assert app.wait_sync(job_id, timeout=5).state == "cancelled"


async def test_wait_reads_a_job_whatever_the_datestyle(dmy: str) -> None:
    """app.wait, on a connection of its own, reads a job on a 'SQL, DMY' database."""
    app = pgqueue.PgQueue(dmy)
    with psycopg.connect(dmy) as conn:
        job_id = app.task(name="t")(lambda: None).enqueue(conn)
    query(dmy, "SELECT pgqueue.cancel(%s)", [job_id])
    assert (await app.wait(job_id, timeout=5)).state == "cancelled"


def test_admin_on_a_caller_connection_names_its_datestyle(dmy: str) -> None:
    """Reading jobs on the caller's connection, whose DateStyle pgqueue leaves as it is, is
    refused with an error naming DateStyle and the way out (psycopg's NotImplementedError
    named none); once the caller sets ISO, the same calls read."""
    app = pgqueue.PgQueue(dmy)
    with psycopg.connect(dmy, autocommit=True) as conn:
        job_id = app.task(name="t")(lambda: None).enqueue(conn)
        for read in (lambda: admin.get_job(conn, job_id), lambda: admin.list_jobs(conn)):
            with pytest.raises(pgqueue.ConfigurationError, match=r"DateStyle is 'SQL, DMY'.*SET"):
                read()
        conn.execute("SET DateStyle = ISO")
        assert admin.get_job(conn, job_id).state == "queued"  # type: ignore[union-attr]
        assert [job.id for job in admin.list_jobs(conn)] == [job_id]
