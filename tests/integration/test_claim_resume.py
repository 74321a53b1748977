"""Claims resume where the last one ended: the same order as claims from the head, without
walking the rows claimed behind them while a long transaction keeps those from being removed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import _store
from tests.helpers import query, run_worker_until
from tests.integration import tasks_app as t

ENTRIES_READ = "SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass)"


def enqueue(dsn: str, queue: str, n: int, priority: int = 0, ago: str = "1 hour") -> None:
    """``n`` runnable jobs of ``queue``, their run_at one microsecond apart, ``ago`` back."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, priority, run_at) "
               "SELECT %s, 'x', %s, now() - %s::interval + i * interval '1 microsecond' "
               "FROM generate_series(1, %s) i", [queue, priority, ago, n])  # fmt: skip


def claim_order(dsn: str, queue: str) -> list[int]:
    """The ids of ``queue``'s runnable jobs in the order a claim takes them."""
    rows = query(dsn, "SELECT id FROM pgqueue.active_jobs WHERE queue = %s AND state = 'queued' "
                      "ORDER BY priority DESC, run_at, id", [queue])  # fmt: skip
    return [r[0] for r in rows]


@pytest.fixture
def held(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A REPEATABLE READ snapshot left open, as a forgotten report would: no row version that
    dies while it is held can be removed."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT 1").fetchall()
        yield conn
        conn.rollback()


@pytest.mark.parametrize("queues", [["io"], ["io", "cpu"]], ids=["one", "two"])
def test_resumed_claims_take_jobs_in_claim_order(dsn: str, queues: list[str]) -> None:
    """Claims chained through their end points take every job exactly once, in the order
    claims from the head would: higher priorities first, batches filled across priorities."""
    for queue in queues:
        for priority in (0, 5, 2):
            enqueue(dsn, queue, 7, priority)
    expected = {queue: claim_order(dsn, queue) for queue in queues}
    got: dict[str, list[int]] = {queue: [] for queue in queues}
    after: dict[str, _store.ClaimPoint] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(10):
            claim = _store.run(
                conn.cursor(), _store.jobs_claim("w", dict.fromkeys(queues, 4), 30, after)
            )
            for queue in queues:
                mine = [r for r in claim.rows if r[1] == queue]
                assert len(mine) == min(4, len(expected[queue]) - len(got[queue]))
                # Within one claim the rows come in no particular order: compare sets.
                window = expected[queue][len(got[queue]) : len(got[queue]) + len(mine)]
                assert {r[0] for r in mine} == set(window)
                got[queue] += window
            after.update(claim.ends)
    assert got == expected


def test_a_higher_priority_job_is_claimed_before_the_rest_of_the_point_s_priority(
    dsn: str,
) -> None:
    """A job of a higher priority enqueued after the point was set comes first; a job of the
    same priority that became runnable behind the point waits until what lies after the point
    no longer fills a claim, then comes before anything of a lower priority."""
    enqueue(dsn, "io", 10, priority=1)
    enqueue(dsn, "io", 3, priority=0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 4}, 30))
        enqueue(dsn, "io", 1, priority=9, ago="1 second")
        enqueue(dsn, "io", 1, priority=1, ago="1 day")  # behind the point
        [(urgent,)] = query(dsn, "SELECT id FROM pgqueue.jobs WHERE priority = 9")
        [(late,)] = query(dsn, "SELECT id FROM pgqueue.jobs WHERE run_at < now() - "
                               "interval '2 hours'")  # fmt: skip
        second = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 4}, 30, first.ends))
        assert urgent in {r[0] for r in second.rows}
        assert late not in {r[0] for r in second.rows}
        # Three priority-1 jobs remain after the point: the fourth slot comes from the head.
        third = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 4}, 30, second.ends))
        taken = {r[0] for r in third.rows}
        assert late in taken and len(taken) == 4
        [(left,)] = query(dsn, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'queued' "
                               "AND priority = 1")  # fmt: skip
        assert left == 0


@pytest.mark.parametrize("queues", [["io"], ["io", "cpu"]], ids=["one", "two"])
def test_a_resumed_claim_does_not_walk_the_rows_claimed_behind_it(
    dsn: str, held: psycopg.Connection[Any], queues: list[str]
) -> None:
    """With a snapshot held, 2,000 claimed and acknowledged jobs leave 2,000 entries in the
    claim index that nothing may remove: a claim from the head reads them all, a resumed one
    reads about its own batch."""
    for queue in queues:
        enqueue(dsn, queue, 2_500)
    after: dict[str, _store.ClaimPoint] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(20):
            claim = _store.run(
                conn.cursor(), _store.jobs_claim("w", dict.fromkeys(queues, 100), 30, after)
            )
            after.update(claim.ends)
            done = [_store.Outcome(r[0], r[5], "succeeded", result="null") for r in claim.rows]
            _store.run(conn.cursor(), _store.jobs_ack(done))
    with psycopg.connect(dsn) as conn:

        def entries_read(points: dict[str, _store.ClaimPoint]) -> int:
            before = conn.execute(ENTRIES_READ).fetchone()[0]  # type: ignore[index]
            claim = _store.run(
                conn.cursor(), _store.jobs_claim("w", dict.fromkeys(queues, 100), 30, points)
            )
            assert sorted(len([r for r in claim.rows if r[1] == q]) for q in queues) == [100] * len(
                queues
            )
            read: int = conn.execute(ENTRIES_READ).fetchone()[0]  # type: ignore[index]
            conn.rollback()
            return read - before

        from_head, resumed = entries_read({}), entries_read(after)
    assert from_head >= 2_100 * len(queues), from_head
    assert resumed <= 110 * len(queues), resumed


async def test_a_worker_drops_its_points_so_a_job_behind_them_does_not_wait_for_the_backlog(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A job that becomes runnable behind the point (here enqueued with run_at in the past)
    is claimed within the worker's rescan interval, not after the whole backlog."""
    t.sleepy.enqueue_many(conn, [((0.05,), {}) for _ in range(100)])
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues={"io": 1}, batch_size=1)
    worker._claim_rescan = 0.3
    marker: list[int] = []

    def late_job_done() -> bool:
        if not marker and query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs")[0][0] >= 5:
            [(job_id,)] = query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, args, run_at) "
                                     "VALUES ('io', %s, '[0.05]', now() - interval '1 day') "
                                     "RETURNING id", [t.sleepy.name])  # fmt: skip
            marker.append(job_id)
        return bool(marker) and bool(
            query(dsn, "SELECT 1 FROM pgqueue.finished_jobs WHERE id = %s", [marker[0]])
        )

    await run_worker_until(worker, late_job_done, timeout=60)
    [(after_it,)] = query(dsn, "SELECT count(*) FROM pgqueue.active_jobs WHERE state = 'queued'")
    assert after_it >= 40, f"the late job waited behind all but {after_it} of the backlog"
