"""From SQL too, a job holds only a meta, timeout and run_at its worker and readers can use,
and pgqueue.enqueue names an out-of-range priority (rev. 0006)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._embed import install_revision
from pgqueue._options import RUN_AT_MAX, RUN_AT_MIN
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t

CHECKS = (
    "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
    " WHERE conrelid = 'pgqueue.active_jobs'::regclass"
    " AND conname IN ('active_jobs_lease_check', 'active_jobs_meta_check',"
    " 'active_jobs_run_at_check', 'active_jobs_timeout_check') ORDER BY 1"
)
# Values each check refuses: (column, value), as pgqueue.enqueue's named argument takes it.
BAD = [
    ("meta", "[1]", "active_jobs_meta_check"),
    ("meta", '"text"', "active_jobs_meta_check"),
    ("meta", "null", "active_jobs_meta_check"),
    ("timeout", "NaN", "active_jobs_timeout_check"),
    ("timeout", "Infinity", "active_jobs_timeout_check"),
    ("timeout", "0", "active_jobs_timeout_check"),
    ("run_at", "200000-01-01 00:00+00", "active_jobs_run_at_check"),
    ("run_at", "9999-12-31 00:00:00.000001+00", "active_jobs_run_at_check"),
    ("run_at", "0001-01-01 23:59:59+00", "active_jobs_run_at_check"),
    ("run_at", "infinity", "active_jobs_run_at_check"),
    ("run_at", "-infinity", "active_jobs_run_at_check"),
]
CASTS = {"meta": "jsonb", "timeout": "double precision", "run_at": "timestamptz"}
# Rows written before 0006: (id, meta, timeout, run_at, created_at as now() plus this).
BEFORE_0006 = [
    (1, "[1]", None, "2026-01-01 00:00+00", "-1 day"),
    (2, '{"k": 1}', "NaN", "2026-01-01 00:00+00", "-1 day"),
    (3, "{}", "Infinity", "200000-01-01 00:00+00", "-1 day"),
    (4, "null", None, "0001-01-01 00:00+00", "-1 hour"),
    (5, "{}", None, "0001-01-01 00:00+00", "1 day"),
    (6, "{}", 2.5, "2026-01-01 00:00+00", "-1 day"),
]
REPAIRED = [
    (1, {"meta_was": [1]}, None, "2026-01-01"),
    (2, {"k": 1, "timeout_was": "NaN"}, None, "2026-01-01"),
    (3, {"timeout_was": "Infinity", "run_at_was": "200000-01-01 00:00:00+00"}, None, "max"),
    (4, {"meta_was": None, "run_at_was": "0001-01-01 00:00:00+00"}, None, "created"),
    (5, {"run_at_was": "0001-01-01 00:00:00+00"}, None, "now"),
    (6, {}, 2.5, "2026-01-01"),
]
READ_BACK = (
    "SELECT id, meta, timeout, CASE WHEN run_at = '9999-12-31 00:00+00' THEN 'max'"
    " WHEN run_at = created_at THEN 'created'"
    " WHEN run_at BETWEEN now() - interval '1 minute' AND now() THEN 'now'"
    " ELSE to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') END FROM pgqueue.{} ORDER BY id"
)


@pytest.fixture(autouse=True)
def utc_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every session in UTC (libpq reads PGTZ), so that the old run_at the repair writes to
    meta as text reads the same whatever the server's own zone."""
    monkeypatch.setenv("PGTZ", "UTC")


def at_0005_with(dsn: str, table: str, rows: list[tuple[Any, ...]]) -> None:
    """Install revision 0005 on ``dsn`` and write ``rows`` straight into ``table``."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0005", lambda text: cur.execute(text.encode()))
        columns = (
            "id, queue, task, args, kwargs, priority, attempts, max_attempts, meta, timeout, run_at"
        )
        state = "'cancelled'" if table == "finished_jobs" else "'queued'"
        cur.executemany(
            psycopg.sql.SQL(
                "INSERT INTO pgqueue.{} ({}, state, created_at) VALUES (%s, 'io', %s, '[1, 2]',"
                " '{{}}', 0, 0, 3, %s, %s, %s, {}, now() + %s::interval)"
            ).format(
                psycopg.sql.Identifier(table), psycopg.sql.SQL(columns), psycopg.sql.SQL(state)
            ),
            [(i, t.add.name, meta, timeout, run_at, ago) for i, meta, timeout, run_at, ago in rows],
        )


def read_back(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        statement = psycopg.sql.SQL(READ_BACK).format(psycopg.sql.Identifier(table))
        return conn.execute(statement).fetchall()


@pytest.mark.parametrize("column, value, check", BAD)
def test_sql_enqueue_insert_and_update_refuse_what_no_worker_can_use(
    dsn: str, column: str, value: str, check: str
) -> None:
    """pgqueue.enqueue, an INSERT and an UPDATE fail on the check that names the column, and
    the job already there keeps its values. Before 0006 each of these was written."""
    query(dsn, "SELECT pgqueue.enqueue('t', timeout => 1, meta => '{\"k\": 1}')")
    before = query(dsn, "SELECT id, meta, timeout, run_at FROM pgqueue.jobs")
    name = psycopg.sql.Identifier(column)
    cast = psycopg.sql.SQL(CASTS[column])
    for statement in [
        psycopg.sql.SQL("SELECT pgqueue.enqueue('t', {} => %s::{})").format(name, cast),
        psycopg.sql.SQL("INSERT INTO pgqueue.active_jobs (task, {}) VALUES ('t', %s::{})").format(
            name, cast
        ),
        psycopg.sql.SQL("UPDATE pgqueue.active_jobs SET {} = %s::{}").format(name, cast),
    ]:
        with pytest.raises(psycopg.errors.CheckViolation, match=check):
            query(dsn, statement, [value])
    assert query(dsn, "SELECT id, meta, timeout, run_at FROM pgqueue.jobs") == before


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"])
def test_the_bounds_python_accepts_are_the_bounds_sql_accepts(dsn: str, zone: str) -> None:
    """RUN_AT_MIN and RUN_AT_MAX themselves are written by SQL, in any session zone, and read
    back; one microsecond outside either is refused."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("SET TIME ZONE {}").format(psycopg.sql.Literal(zone)))
        ids = [
            conn.execute("SELECT pgqueue.enqueue('t', run_at => %s)", [when]).fetchone()[0]  # type: ignore[index]
            for when in (RUN_AT_MIN, RUN_AT_MAX)
        ]
        app = pgqueue.PgQueue(dsn)
        assert [app.get_job(conn, i).run_at for i in ids] == [RUN_AT_MIN, RUN_AT_MAX]  # type: ignore[union-attr]
        for outside in ("0001-01-01 23:59:59.999999+00", "9999-12-31 00:00:00.000001+00"):
            with pytest.raises(psycopg.errors.CheckViolation, match="active_jobs_run_at_check"):
                conn.execute("SELECT pgqueue.enqueue('t', run_at => %s::timestamptz)", [outside])


@pytest.mark.parametrize("priority", [32768, -32769, 2**31 - 1])
def test_sql_enqueue_names_an_out_of_range_priority(dsn: str, priority: int) -> None:
    """The message names the parameter and its bounds; the SQLSTATE stays 22003, as the
    smallint cast's was. The bounds themselves are taken."""
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as raised:
        query(dsn, "SELECT pgqueue.enqueue('t', priority => %s)", [priority])
    assert raised.value.diag.message_primary == (
        f"pgqueue.enqueue: priority {priority} is out of range: use -32768..32767"
    )
    query(
        dsn,
        "SELECT pgqueue.enqueue('t', priority => 32767), pgqueue.enqueue('t', priority => -32768)",
    )
    assert query(dsn, "SELECT priority FROM pgqueue.jobs ORDER BY id") == [(32767,), (-32768,)]


async def test_upgrading_from_0005_repairs_the_active_jobs_and_a_worker_runs_them(
    empty_dsn: str,
) -> None:
    """Each value is replaced by the one that keeps its meaning, the old one goes to meta, and
    every job is read back and run, but the one whose run_at was past year 9999."""
    at_0005_with(empty_dsn, "active_jobs", BEFORE_0006)
    pgqueue.migrate(empty_dsn)
    assert pgqueue.schema_check(empty_dsn) is None
    assert read_back(empty_dsn, "active_jobs") == REPAIRED
    app = pgqueue.PgQueue(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        assert [app.get_job(conn, i).id for i in range(1, 7)] == list(range(1, 7))  # type: ignore[union-attr]
    worker = t.app.worker(dsn=empty_dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(empty_dsn) == {"succeeded": 5, "queued": 1})
    assert query(empty_dsn, "SELECT id FROM pgqueue.jobs WHERE state = 'queued'") == [(3,)]


def test_upgrading_from_0005_repairs_the_history_and_its_jobs_can_be_retried(
    empty_dsn: str,
) -> None:
    """The same repair in finished_jobs: the rows are read back, and retried into
    active_jobs, whose new checks they now pass."""
    at_0005_with(empty_dsn, "finished_jobs", BEFORE_0006)
    pgqueue.migrate(empty_dsn)
    assert read_back(empty_dsn, "finished_jobs") == REPAIRED
    app = pgqueue.PgQueue(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        assert [app.get_job(conn, i).state for i in range(1, 7)] == ["cancelled"] * 6  # type: ignore[union-attr]
    retried = query(empty_dsn, "SELECT pgqueue.retry(id) FROM generate_series(1, 6) AS id")
    assert retried == [(True,)] * 6
    assert states(empty_dsn) == {"queued": 6}


@pytest.mark.parametrize(
    "count, ids", [(2, "1, 2"), (12, "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more")]
)
def test_the_upgrade_notice_names_the_table_the_count_and_at_most_ten_ids(
    empty_dsn: str, count: int, ids: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One NOTICE per table that had rows to repair, logged at WARNING on pgqueue.migrate."""
    rows = [(i, "[]", None, "2026-01-01 00:00+00", "0 s") for i in range(1, count + 1)]
    at_0005_with(empty_dsn, "active_jobs", rows)
    with (
        psycopg.connect(empty_dsn) as conn,
        conn.cursor() as cur,
        caplog.at_level(logging.WARNING, "pgqueue.migrate"),
    ):
        assert install_revision(cur, "0006", lambda text: cur.execute(text.encode()))
    assert [r.getMessage() for r in caplog.records if r.name == "pgqueue.migrate"] == [
        f"pgqueue 0006: {count} rows of pgqueue.active_jobs held a meta, timeout or run_at no"
        f" worker can use (ids {ids}); they are repaired, and the old values are in"
        " meta->>'meta_was', 'timeout_was' and 'run_at_was'"
    ]


def test_fresh_and_upgraded_databases_end_with_the_same_checks(dsn: str, empty_dsn: str) -> None:
    """Same definitions, all validated, whichever way the database came; and the migration
    leaves no helper function behind."""
    at_0005_with(empty_dsn, "active_jobs", BEFORE_0006)
    pgqueue.migrate(empty_dsn)
    fresh, upgraded = query(dsn, CHECKS), query(empty_dsn, CHECKS)
    assert upgraded == fresh
    assert [(name, valid) for name, _, valid in fresh] == [
        ("active_jobs_lease_check", True),
        ("active_jobs_meta_check", True),
        ("active_jobs_run_at_check", True),
        ("active_jobs_timeout_check", True),
    ]
    leftover = "SELECT count(*) FROM pg_proc WHERE proname LIKE 'pgqueue_0006%'"
    assert query(empty_dsn, leftover) == [(0,)]


@pytest.mark.parametrize("lease", [None, "infinity", "200000-01-01 00:00+00"])
def test_a_running_job_cannot_lose_its_lease(dsn: str, lease: str | None) -> None:
    """The rescue gives back running jobs whose lease expired: one with no lease, or an
    infinite one, stayed running for ever. An UPDATE or INSERT that makes one fails on
    active_jobs_lease_check; a queued job has no lease, as pgqueue writes it."""
    query(dsn, "SELECT pgqueue.enqueue('t')")
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'running', worker_id = 'w',"
               " lease_expires_at = now() + interval '30 s'")  # fmt: skip
    before = query(dsn, "SELECT id, state, lease_expires_at FROM pgqueue.active_jobs")
    for statement in [
        "UPDATE pgqueue.active_jobs SET lease_expires_at = %s::timestamptz",
        "INSERT INTO pgqueue.active_jobs (task, state, lease_expires_at)"
        " VALUES ('t', 'running', %s::timestamptz)",
    ]:
        with pytest.raises(psycopg.errors.CheckViolation, match="active_jobs_lease_check"):
            query(dsn, statement, [lease])
    assert query(dsn, "SELECT id, state, lease_expires_at FROM pgqueue.active_jobs") == before
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'queued', lease_expires_at = NULL")


async def test_upgrading_from_0005_gives_a_lease_to_running_jobs_without_one(
    empty_dsn: str,
) -> None:
    """A running job with no lease, or an infinite one, gets a lease that ends now: the next
    rescue gives it back and a worker runs it. Before 0006 both stayed running for ever."""
    at_0005_with(empty_dsn, "active_jobs", [(1, "{}", None, "2026-01-01 00:00+00", "-1 day")])
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgqueue.active_jobs (id, task, queue, args, state, attempts, worker_id,"
            " lease_expires_at) VALUES (2, %(t)s, 'io', '[3, 4]', 'running', 1, 'gone', NULL),"
            " (3, %(t)s, 'io', '[5, 6]', 'running', 1, 'gone', 'infinity')",
            {"t": t.add.name},
        )
    pgqueue.migrate(empty_dsn)
    leases = (
        "SELECT id, lease_expires_at BETWEEN now() - interval '1 minute' AND now(),"
        " meta->'lease_expires_at_was' FROM pgqueue.active_jobs WHERE state = 'running' ORDER BY id"
    )
    assert query(empty_dsn, leases) == [(2, True, None), (3, True, "infinity")]
    worker = t.app.worker(dsn=empty_dsn, queues=["io"], poll_interval=0.05, rescue_interval=0.1)
    await run_worker_until(worker, lambda: states(empty_dsn) == {"succeeded": 3})
