"""A job's run_at is a finite time: no row can make the claims of its queue fail (rev. 0004)."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store, admin
from pgqueue._embed import install_revision
from pgqueue._options import RUN_AT_MAX, RUN_AT_MIN
from pgqueue._retry import MAX_DELAY
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t

INFINITIES = ["-infinity", "infinity"]


def test_active_jobs_holds_a_validated_finite_run_at_check(dsn: str) -> None:
    """A migrated database has the constraint, validated (new and upgraded ones alike); since
    revision 0006 it bounds run_at to what psycopg reads back, which excludes the infinities."""
    constraint = (
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint"
        " WHERE conname = 'active_jobs_run_at_check'"
    )
    assert query(dsn, constraint) == [
        (
            "CHECK (((run_at >= '0001-01-02 00:00:00+00'::timestamp with time zone)"
            " AND (run_at <= '9999-12-31 00:00:00+00'::timestamp with time zone)))",
            True,
        )
    ]


@pytest.mark.parametrize("when", INFINITIES)
def test_sql_enqueue_insert_and_update_reject_an_infinite_run_at(dsn: str, when: str) -> None:
    """pgqueue.enqueue, an INSERT and an UPDATE fail on active_jobs_run_at_check; nothing
    is written and the job already there keeps its run_at."""
    query(dsn, "SELECT pgqueue.enqueue('t')")
    before = query(dsn, "SELECT id, run_at FROM pgqueue.jobs")
    for statement in [
        "SELECT pgqueue.enqueue('t', run_at => %s)",
        "INSERT INTO pgqueue.active_jobs (task, run_at) VALUES ('t', %s)",
        "UPDATE pgqueue.active_jobs SET run_at = %s",
    ]:
        with pytest.raises(psycopg.errors.CheckViolation, match="active_jobs_run_at_check"):
            query(dsn, statement, [when])
    assert query(dsn, "SELECT id, run_at FROM pgqueue.jobs") == before


@pytest.mark.parametrize("delay", [math.inf, math.nan])
def test_python_api_rejects_an_infinite_or_nan_delay_before_any_sql(
    conn: psycopg.Connection[Any], delay: float
) -> None:
    """Task.using, app.using and enqueue_many's COPY path raise ValueError with nothing sent."""
    calls = [((1, 2), {})] * _store.COPY_THRESHOLD
    attempts = [
        lambda: t.add.using(delay=delay).enqueue(conn, 1, 2),
        lambda: t.app.using("billing.render", delay=delay).enqueue(conn),
        lambda: t.add.using(delay=delay).enqueue_many(conn, calls),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="delay must be"):
            attempt()
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def test_an_infinite_run_at_cannot_stop_the_claims_of_its_queue(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A '-infinity' job made every claim of its queue fail (now() - run_at overflows); it
    cannot be enqueued any more, so a worker runs the queue's other job."""
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    with contextlib.suppress(psycopg.errors.CheckViolation):
        query(dsn, "SELECT pgqueue.enqueue(%s, '[3, 4]', queue => 'io', run_at => '-infinity')",
              [t.add.name])  # fmt: skip
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 1}, timeout=10)


def test_the_longest_delays_are_written_and_read_back(conn: psycopg.Connection[Any]) -> None:
    """An enqueue and a retry MAX_DELAY (1000 years) away fit SQL and psycopg's datetimes."""
    job_id = t.add.using(delay=MAX_DELAY).enqueue(conn, 1, 2)
    conn.execute("UPDATE pgqueue.active_jobs SET run_at = now()")
    claim = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 1}, 30))
    outcome = _store.Outcome(job_id, claim.rows[0][5], "queued", delay=MAX_DELAY)
    assert _store.run(conn.cursor(), _store.jobs_ack([outcome])) == ([job_id], [], [1])
    job = admin.get_job(conn, job_id)
    assert job is not None and job.state == "queued"
    assert job.run_at.year - job.created_at.year in (999, 1000)


async def test_migrating_from_0003_makes_infinite_run_at_finite_and_keeps_the_jobs(
    empty_dsn: str,
) -> None:
    """Revision 0004 upgrades a database holding infinite run_at values: a '-infinity' job
    becomes due since it was created (or now, if created_at is infinite too) and runs, an
    'infinity' one waits until 9999-12-31; each keeps its meta plus the old value."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0003", lambda text: cur.execute(text.encode()))
        cur.execute(
            "INSERT INTO pgqueue.active_jobs (task, args, queue, run_at, created_at, meta)"
            " VALUES (%(t)s, '[1, 2]', 'io', '-infinity', now() - interval '1 hour', '{\"k\": 1}'),"
            "        (%(t)s, '[3, 4]', 'io', 'infinity', now(), '{}'),"
            "        (%(t)s, '[5, 6]', 'io', '-infinity', '-infinity', '{}')",
            {"t": t.add.name},
        )
    pgqueue.migrate(empty_dsn)
    assert pgqueue.schema_check(empty_dsn) is None
    rows = (
        "SELECT args, run_at = created_at, run_at = '9999-12-31 00:00+00', meta"
        " FROM pgqueue.active_jobs ORDER BY id"
    )
    assert query(empty_dsn, rows) == [
        ([1, 2], True, False, {"k": 1, "run_at_was": "-infinity"}),
        ([3, 4], False, True, {"run_at_was": "infinity"}),
        # 0007 gives the infinite created_at the time of the upgrade, as 0004 gave run_at.
        ([5, 6], True, False, {"run_at_was": "-infinity", "created_at_was": "-infinity"}),
    ]
    worker = t.app.worker(dsn=empty_dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(empty_dsn) == {"succeeded": 2, "queued": 1})
    ran = "SELECT args FROM pgqueue.jobs WHERE state = 'succeeded' ORDER BY id"
    assert query(empty_dsn, ran) == [([1, 2],), ([5, 6],)]


@pytest.mark.parametrize("count, ids", [(1, "1"), (12, "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more")])
def test_the_upgrade_notice_names_the_count_and_at_most_ten_ids(
    empty_dsn: str, count: int, ids: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One NOTICE, bounded however many jobs were repaired: it used to list every id, a
    message of megabytes behind a backlog of a million."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0003", lambda text: cur.execute(text.encode()))
        cur.execute(
            "INSERT INTO pgqueue.active_jobs (id, task, run_at)"
            " SELECT i, 't', 'infinity' FROM generate_series(1, %s) AS i",
            [count],
        )
        with caplog.at_level(logging.WARNING, "pgqueue.migrate"):
            assert install_revision(cur, "0004", lambda text: cur.execute(text.encode()))
    assert [r.getMessage() for r in caplog.records if r.name == "pgqueue.migrate"] == [
        f"pgqueue 0004: {count} jobs had an infinite run_at (ids {ids}); it is now finite,"
        " and the old value is in meta->>'run_at_was'"
    ]


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12", "America/Metlakatla"])
def test_the_extreme_run_ats_accepted_are_read_back_in_any_session_zone(
    conn: psycopg.Connection[Any], zone: str
) -> None:
    """The earliest and latest run_at pgqueue accepts still load as datetimes in sessions
    far east and west of UTC, whose local mean time in year 1 is hours away."""
    ids = [t.add.using(run_at=when).enqueue(conn, 1, 2) for when in (RUN_AT_MIN, RUN_AT_MAX)]
    conn.execute(psycopg.sql.SQL("SET TIME ZONE {}").format(zone))
    assert [admin.get_job(conn, i).run_at for i in ids] == [RUN_AT_MIN, RUN_AT_MAX]  # type: ignore[union-attr]
    assert len(admin.list_jobs(conn)) == 2
