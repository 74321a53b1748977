"""A finished job's run_at is a finite time too, so history can always be read (rev. 0005)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import psycopg
import pytest

import pgqueue
from pgqueue._embed import install_revision
from tests.acceptance.conftest import cli
from tests.helpers import query

FAR = datetime(9999, 12, 31, tzinfo=UTC)
CHECKS = (
    "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
    " WHERE conname IN ('active_jobs_run_at_check', 'finished_jobs_run_at_check') ORDER BY 1"
)
# Each (id, run_at, created_at as now() plus this, meta) of a history written before 0005.
HISTORY = [
    (1, "infinity", "-1 hour", '{"k": 1}'),
    (2, "-infinity", "-1 hour", "{}"),
    (3, "-infinity", "1 day", "[1]"),
    (4, "2026-01-01 00:00+00", "-1 day", "{}"),
]


def at_0004_with_history(dsn: str, history: list[tuple[int, str, str, str]]) -> None:
    """Install revision 0004 on ``dsn`` and write ``history`` straight into finished_jobs."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0004", lambda text: cur.execute(text.encode()))
        cur.executemany(
            "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
            " attempts, max_attempts, run_at, created_at, meta) VALUES (%s, 'default', 't',"
            " '[]', '{}', 'cancelled', 0, 0, 3, %s, now() + %s::interval, %s)",
            history,
        )


def test_upgrading_from_0004_makes_finished_run_at_finite_and_the_history_readable(
    empty_dsn: str,
) -> None:
    """'infinity' becomes 9999-12-31, '-infinity' created_at (now when that is ahead); meta
    keeps the old value when it is an object. app.get_job and the CLI then read every row:
    before 0005 they raised psycopg.DataError ("timestamp too large (after year 10K)")."""
    at_0004_with_history(empty_dsn, HISTORY)
    pgqueue.migrate(empty_dsn)
    assert pgqueue.schema_check(empty_dsn) is None
    rows = (
        "SELECT id, run_at = '9999-12-31 00:00+00', run_at = created_at,"
        " run_at BETWEEN now() - interval '1 minute' AND now(), meta"
        " FROM pgqueue.finished_jobs ORDER BY id"
    )
    assert query(empty_dsn, rows) == [
        (1, True, False, False, {"k": 1, "run_at_was": "infinity"}),
        (2, False, True, False, {"run_at_was": "-infinity"}),
        (3, False, False, True, {"meta_was": [1]}),  # revision 0006 makes meta an object
        (4, False, False, False, {}),
    ]
    assert query(empty_dsn, "SELECT run_at FROM pgqueue.finished_jobs WHERE id = 4") == [
        (datetime(2026, 1, 1, tzinfo=UTC),)
    ]
    app = pgqueue.PgQueue(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        jobs = [app.get_job(conn, job_id) for job_id in (1, 2, 3, 4)]
    assert [job.id for job in jobs if job is not None] == [1, 2, 3, 4]
    assert jobs[0] is not None and jobs[0].run_at == FAR
    listed = cli(empty_dsn, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)] == [4, 3, 2, 1]
    shown = cli(empty_dsn, "jobs", "show", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    assert datetime.fromisoformat(json.loads(shown.stdout)["run_at"]) == FAR


@pytest.mark.parametrize(
    "count, ids", [(2, "1, 2"), (12, "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more")]
)
def test_the_upgrade_notice_names_the_count_and_at_most_ten_ids(
    empty_dsn: str, count: int, ids: str
) -> None:
    """One NOTICE, bounded however many rows were repaired: the count and the first ten ids."""
    at_0004_with_history(empty_dsn, [(i, "infinity", "0 s", "{}") for i in range(1, count + 1)])
    notices: list[str] = []
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        conn.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary or ""))
        assert install_revision(cur, "0005", lambda text: cur.execute(text.encode()))
    assert [n for n in notices if n.startswith("pgqueue 0005")] == [
        f"pgqueue 0005: {count} finished jobs had an infinite run_at (ids {ids}); it is now"
        " finite, and the old value is in meta->>'run_at_was'"
    ]


def test_pgqueue_migrate_prints_what_a_revision_repaired(empty_dsn: str) -> None:
    """The CLI shows the revisions' NOTICEs about repaired rows (psycopg drops NOTICEs unless
    a handler takes them), and only those: not PostgreSQL's own, such as "already exists"."""
    at_0004_with_history(empty_dsn, HISTORY[:2])
    done = cli(empty_dsn, "migrate")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "pgqueue 0005" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], done.stderr
    assert "2 finished jobs had an infinite run_at (ids 1, 2)" in lines[0]
    assert "skipping" not in done.stderr and "NOTICE" not in done.stderr, done.stderr
    again = cli(empty_dsn, "migrate")
    assert (again.returncode, again.stderr) == (0, "")


def test_embedded_installs_log_what_a_revision_repaired(
    empty_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Django's and a user's alembic revisions install through install_revision: it logs the
    same NOTICE, at WARNING, on the pgqueue.migrate logger."""
    at_0004_with_history(empty_dsn, HISTORY[:1])
    with (
        psycopg.connect(empty_dsn) as conn,
        conn.cursor() as cur,
        caplog.at_level(logging.WARNING, "pgqueue.migrate"),
    ):
        assert install_revision(cur, "0005", lambda text: cur.execute(text.encode()))
    assert [(r.name, r.getMessage()[:43]) for r in caplog.records] == [
        ("pgqueue.migrate", "pgqueue 0005: 1 finished jobs had an infini")
    ]


@pytest.mark.parametrize("when", ["-infinity", "infinity"])
def test_finished_jobs_refuses_an_infinite_run_at(dsn: str, when: str) -> None:
    """An INSERT or UPDATE of finished_jobs with an infinite run_at fails on
    finished_jobs_run_at_check, and the row already there keeps its run_at."""
    query(dsn, "SELECT pgqueue.cancel(pgqueue.enqueue('t'))")
    before = query(dsn, "SELECT id, run_at FROM pgqueue.finished_jobs")
    for statement in [
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at) VALUES (100, 'default', 't', '[]', '{}',"
        " 'cancelled', 0, 0, 3, %s, now())",
        "UPDATE pgqueue.finished_jobs SET run_at = %s",
    ]:
        with pytest.raises(psycopg.errors.CheckViolation, match="finished_jobs_run_at_check"):
            query(dsn, statement, [when])
    assert query(dsn, "SELECT id, run_at FROM pgqueue.finished_jobs") == before


def test_fresh_and_upgraded_databases_end_with_the_same_run_at_checks(
    dsn: str, empty_dsn: str
) -> None:
    """Both checks, same definition and same convalidated, whichever way the database came:
    both validated (a NOT VALID check makes SQLAlchemy warn whenever it reflects the table)."""
    at_0004_with_history(empty_dsn, HISTORY)
    pgqueue.migrate(empty_dsn)
    fresh, upgraded = query(dsn, CHECKS), query(empty_dsn, CHECKS)
    assert upgraded == fresh
    assert fresh == [
        (
            "active_jobs_run_at_check",
            "CHECK (((run_at >= '0001-01-02 00:00:00+00'::timestamp with time zone)"
            " AND (run_at <= '9999-12-31 00:00:00+00'::timestamp with time zone)))",
            True,
        ),
        ("finished_jobs_run_at_check", "CHECK (isfinite(run_at))", True),
    ]
