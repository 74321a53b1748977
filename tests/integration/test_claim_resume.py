"""Claims resume where the last one ended: the same order as claims from the head, without
walking the rows claimed behind them while a long transaction keeps those from being removed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import _store
from tests.helpers import query, run_worker_until
from tests.integration import tasks_app as t

ENTRIES_READ = "SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass)"


def enqueue(
    dsn: str, queue: str, n: int, priority: int = 0, ago: str = "1 hour", apart: str = "1 us"
) -> None:
    """``n`` runnable jobs of ``queue``, their run_at ``apart`` from each other, from ``ago``
    back."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, priority, run_at) "
               "SELECT %s, 'x', %s, now() - %s::interval + i * %s::interval "
               "FROM generate_series(1, %s) i", [queue, priority, ago, apart, n])  # fmt: skip


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


def take_in_order(
    claim: _store.Claim, expected: dict[str, list[int]], got: dict[str, list[int]], batch: int
) -> None:
    """Check that ``claim`` took, of each queue, the next ``batch`` jobs of ``expected`` (or
    all that were left) after those in ``got``, and add them to ``got``."""
    for queue in expected:
        mine = [r for r in claim.rows if r[1] == queue]
        assert len(mine) == min(batch, len(expected[queue]) - len(got[queue]))
        # Within one claim the rows come in no particular order: compare sets.
        window = expected[queue][len(got[queue]) : len(got[queue]) + len(mine)]
        assert {r[0] for r in mine} == set(window)
        got[queue] += window


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
            take_in_order(claim, expected, got, 4)
            after.update(claim.ends)
    assert got == expected


@pytest.mark.parametrize("count", [True, False], ids=["counted", "idle"])
def test_a_claim_reports_where_it_ended_counted_or_not(dsn: str, count: bool) -> None:
    """The last row in claim order (lowest priority, latest run_at, highest id among jobs
    enqueued together) is the claim's end, whether or not the claim counts what it walked."""
    enqueue(dsn, "io", 3, priority=4)
    enqueue(dsn, "io", 3, priority=2, ago="2 hours")
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, priority, run_at) SELECT 'io', "
               "'x', 2, now() - interval '30 minutes' FROM generate_series(1, 3)")  # fmt: skip
    enqueue(dsn, "io", 5, priority=0)
    [(end,)] = query(dsn, "SELECT max(id) FROM pgqueue.active_jobs WHERE priority = 2 AND "
                          "run_at > now() - interval '1 hour'")  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        claim = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 9}, 30, count=count))
    assert claim.ends == {"io": _store.ClaimPoint(2, end)}
    assert claim.walked == 0  # nothing dead to walk past, counted or not


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


def dirty_the_head(dsn: str, queues: list[str], jobs: int) -> dict[str, _store.ClaimPoint]:
    """Claim and acknowledge ``jobs`` queued jobs of each of ``queues`` in batches of 100; with
    a snapshot held, their claim-index entries stay. Returns where the last claims ended."""
    after: dict[str, _store.ClaimPoint] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(jobs // 100):
            wanted = dict.fromkeys(queues, 100)
            claim = _store.run(conn.cursor(), _store.jobs_claim("w", wanted, 30, after))
            after.update(claim.ends)
            done = [_store.Outcome(r[0], r[5], "succeeded", result="null") for r in claim.rows]
            _store.run(conn.cursor(), _store.jobs_ack(done))
    return after


@pytest.mark.parametrize("queues", [["io"], ["io", "cpu"]], ids=["one", "two"])
def test_a_resumed_claim_does_not_walk_the_rows_claimed_behind_it(
    dsn: str, held: psycopg.Connection[Any], queues: list[str]
) -> None:
    """With a snapshot held, 2,000 claimed and acknowledged jobs leave 2,000 entries in the
    claim index that nothing may remove: a claim from the head reads them all, a resumed one
    reads about its own batch. Both report what they walked past."""
    for queue in queues:
        enqueue(dsn, queue, 2_500)
    after = dirty_the_head(dsn, queues, 2_000)
    with psycopg.connect(dsn) as conn:

        def claim(points: dict[str, _store.ClaimPoint]) -> tuple[int, int]:
            """(entries the claim read as the statistics count them, what it reported)"""
            before: int = conn.execute(ENTRIES_READ).fetchone()[0]  # type: ignore[index]
            wanted = dict.fromkeys(queues, 100)
            got = _store.run(conn.cursor(), _store.jobs_claim("w", wanted, 30, points))
            assert len(got.rows) == 100 * len(queues)
            read: int = conn.execute(ENTRIES_READ).fetchone()[0]  # type: ignore[index]
            conn.rollback()
            assert got.walked == read - before - len(got.rows)
            return read - before, got.walked

        (from_head, walked_from_head), (resumed, walked_resumed) = claim({}), claim(after)
    assert from_head >= 2_100 * len(queues), from_head
    assert walked_from_head >= 2_000 * len(queues)
    assert resumed <= 110 * len(queues), resumed
    assert walked_resumed <= 10 * len(queues)


class ClaimSpy:
    """Records, for each claim a worker makes, whether it resumed and what it walked."""

    def __init__(self, worker: Any) -> None:
        self.claims: list[tuple[bool, int]] = []
        self.idle: list[bool] = []  # whether each claim resumed as an idle queue
        self.took: list[int] = []  # how many jobs each claim took
        self.at: list[float] = []  # when each claim came back
        run = worker._claim_db.run

        async def spy(query: _store.Query[Any]) -> Any:
            result = await run(query)
            if isinstance(result, _store.Claim):
                params: dict[str, Any] = query.params  # type: ignore[assignment]
                resumed = bool(params.get("ids") or params.get("id"))
                self.claims.append((resumed, result.walked))
                self.idle.append(bool(params.get("back") or any(params.get("backs") or ())))
                self.took.append(len(result.rows))
                self.at.append(time.monotonic())
            return result

        worker._claim_db.run = spy


async def drain_2000(dsn: str, conn: psycopg.Connection[Any]) -> ClaimSpy:
    """Enqueue 2,000 jobs, run a worker (batches of 50) until they are done; its claims."""
    t.add.enqueue_many(conn, [((i, 1), {}) for i in range(2_000)])
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues={"io": 100}, batch_size=50)
    spy = ClaimSpy(worker)
    finished = "SELECT count(*) FROM pgqueue.finished_jobs WHERE task = %s"
    await run_worker_until(worker, lambda: query(dsn, finished, [t.add.name])[0][0] == 2_000)
    return spy


async def test_a_worker_whose_claims_walk_thousands_of_entries_resumes(
    dsn: str, held: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    """With 8,000 entries left by claimed jobs at the head of the queue, the worker's first
    claim walks them all; the ones after resume and walk next to nothing."""
    enqueue(dsn, "io", 8_000)
    dirty_the_head(dsn, ["io"], 8_000)
    spy = await drain_2000(dsn, conn)
    resumed, from_head = [w for r, w in spy.claims if r], [w for r, w in spy.claims if not r]
    assert from_head[0] >= 8_000, spy.claims
    assert len(resumed) >= 20, spy.claims
    assert sorted(resumed)[len(resumed) // 2] <= 50, spy.claims


async def test_a_resuming_worker_claims_a_job_behind_its_point_within_its_rescan_interval(
    dsn: str, held: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    """A job that becomes runnable behind the point (here enqueued with run_at in the past)
    is claimed once the worker claims from the head again, not after the whole backlog."""
    enqueue(dsn, "io", 8_000)
    dirty_the_head(dsn, ["io"], 8_000)
    t.sleepy.enqueue_many(conn, [((0.05,), {}) for _ in range(100)])
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues={"io": 1}, batch_size=1)
    worker._claim_rescan = 0.3
    spy = ClaimSpy(worker)
    marker: list[int] = []

    def late_job_done() -> bool:
        if not marker and query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs WHERE "
                                     "task = %s", [t.sleepy.name])[0][0] >= 5:  # fmt: skip
            [(job_id,)] = query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, args, run_at) "
                                     "VALUES ('io', %s, '[0.05]', now() - interval '1 day') "
                                     "RETURNING id", [t.sleepy.name])  # fmt: skip
            marker.append(job_id)
        return bool(marker) and bool(
            query(dsn, "SELECT 1 FROM pgqueue.finished_jobs WHERE id = %s", [marker[0]])
        )

    await run_worker_until(worker, late_job_done, timeout=60)
    assert any(resumed for resumed, _ in spy.claims), "the worker never resumed"
    [(after_it,)] = query(dsn, "SELECT count(*) FROM pgqueue.active_jobs WHERE state = 'queued'")
    assert after_it >= 40, f"the late job waited behind all but {after_it} of the backlog"


async def test_a_worker_claims_from_the_head_while_little_is_left_to_walk(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Without anything holding row versions back, claims from the head walk next to nothing,
    and the worker never pays for the longer statement."""
    spy = await drain_2000(dsn, conn)
    assert len(spy.claims) >= 40, spy.claims
    assert not any(resumed for resumed, _ in spy.claims), spy.claims
    assert max(walked for _, walked in spy.claims) < 2_000, spy.claims


# -- a worker that has caught up, beside a held snapshot ---------------------------------------


def point_run_at(dsn: str, point: _store.ClaimPoint, shift: str) -> Any:
    """The run_at of ``point``'s row, moved by ``shift``."""
    [(at,)] = query(dsn, "SELECT run_at + %s::interval FROM pgqueue.jobs WHERE id = %s",
                    [shift, point.id])  # fmt: skip
    return at


def enqueue_at(dsn: str, queue: str, run_at: Any, priority: int = 0) -> int:
    [(job_id,)] = query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, priority, run_at) "
                             "VALUES (%s, 'x', %s, %s) RETURNING id",
                        [queue, priority, run_at])  # fmt: skip
    return int(job_id)


@pytest.mark.parametrize("queues", [["io"], ["io", "cpu"]], ids=["one", "two"])
def test_an_idle_queue_resumes_a_second_before_its_point_and_never_reads_the_head(
    dsn: str, held: psycopg.Connection[Any], queues: list[str]
) -> None:
    """With 2,000 dead entries 10 ms apart behind the point, an idle queue's resumed claim
    takes what lies after the point, up to a second behind it, and of a higher or a lower
    priority, reading about a second's worth of entries; a job further behind is left to the
    claim from the head, which reads all 2,000."""
    for queue in queues:
        enqueue(dsn, queue, 2_000, ago="1 hour", apart="10 ms")
    after = dirty_the_head(dsn, queues, 2_000)
    idle = dict.fromkeys(queues, 1.0)
    expected: dict[str, set[int]] = {}
    lowest: dict[str, _store.ClaimPoint] = {}
    behind: dict[str, int] = {}
    for queue in queues:
        point = after[queue]
        low = enqueue_at(dsn, queue, point_run_at(dsn, point, "-5 seconds"), priority=-3)
        expected[queue] = {
            low,
            enqueue_at(dsn, queue, point_run_at(dsn, point, "1 minute")),  # after the point
            enqueue_at(dsn, queue, point_run_at(dsn, point, "-0.5 seconds")),
            enqueue_at(dsn, queue, point_run_at(dsn, point, "-5 seconds"), priority=3),
        }
        lowest[queue] = _store.ClaimPoint(-3, low)
        behind[queue] = enqueue_at(dsn, queue, point_run_at(dsn, point, "-5 seconds"))
    with psycopg.connect(dsn) as conn:
        before: int = conn.execute(ENTRIES_READ).fetchone()[0]  # type: ignore[index]
        claim = _store.run(
            conn.cursor(), _store.jobs_claim("w", dict.fromkeys(queues, 10), 30, after, True, idle)
        )
        read: int = conn.execute(ENTRIES_READ).fetchone()[0]  # type: ignore[index]
        conn.commit()
        for queue in queues:
            assert {r[0] for r in claim.rows if r[1] == queue} == expected[queue]
        assert read - before <= 160 * len(queues), read - before
        assert claim.ends == lowest
        before = read
        head = _store.run(conn.cursor(), _store.jobs_claim("w", dict.fromkeys(queues, 10), 30))
        read = conn.execute(ENTRIES_READ).fetchone()[0]  # type: ignore[index]
        conn.commit()
    assert {r[0] for r in head.rows} == set(behind.values())
    assert read - before >= 2_000 * len(queues), read - before


def test_an_idle_queue_whose_point_is_gone_reads_from_the_head(
    dsn: str, held: psycopg.Connection[Any]
) -> None:
    """Once the point's row is neither running nor in history (it was retried, or deleted),
    an idle queue's claim cannot step back from it: it reads from the head, and misses
    nothing."""
    enqueue(dsn, "io", 200, apart="10 ms")
    after = dirty_the_head(dsn, ["io"], 200)
    far_behind = enqueue_at(dsn, "io", point_run_at(dsn, after["io"], "-1 day"))
    query(dsn, "DELETE FROM pgqueue.finished_jobs WHERE id = %s", [after["io"].id])
    with psycopg.connect(dsn, autocommit=True) as conn:
        claim = _store.run(
            conn.cursor(), _store.jobs_claim("w", {"io": 10}, 30, after, True, {"io": 1.0})
        )
    assert [r[0] for r in claim.rows] == [far_behind]


async def trickle(
    dsn: str, worker: Any, jobs: int, gap: float, late: bool = False, timeout: float = 60
) -> list[int]:
    """Run ``worker`` while ``jobs`` jobs are enqueued one per transaction, ``gap`` seconds
    apart, from when it has registered and its claimer connected (a worker slow to start
    would find a backlog), until all are done; with ``late``, one more, enqueued a day behind
    the others. Returns the ids."""
    ids: list[int] = []
    started = ("SELECT EXISTS (SELECT FROM pgqueue.worker_processes WHERE id = %s) AND EXISTS"
               " (SELECT FROM pg_stat_activity WHERE datname = current_database()"
               " AND application_name = 'pgqueue claimer')")  # fmt: skip

    def enqueue_one() -> None:
        deadline = time.monotonic() + timeout
        while not query(dsn, started, [worker.name])[0][0] and time.monotonic() < deadline:
            time.sleep(0.01)
        with psycopg.connect(dsn, autocommit=True) as conn:
            while len(ids) < jobs:
                ids.append(t.add.enqueue(conn, 1, 1))
                time.sleep(gap)
            if late:
                ids.append(enqueue_at(dsn, "io", "2000-01-01T00:00:00Z"))

    sender = threading.Thread(target=enqueue_one)
    sender.start()
    finished = "SELECT count(*) FROM pgqueue.finished_jobs WHERE id = ANY(%s)"
    try:
        await run_worker_until(
            worker,
            lambda: len(ids) == jobs + late and query(dsn, finished, [ids])[0][0] == len(ids),
            timeout,
        )
    finally:
        sender.join()
    return ids


@pytest.mark.parametrize("dead", [8_000, 2_000])
async def test_a_caught_up_worker_resumes_and_claims_from_the_head_about_once_a_second(
    dsn: str, held: psycopg.Connection[Any], dead: int
) -> None:
    """With thousands of dead entries at the head (2,000 would not make a claim with a
    backlog resume), a worker that claims each job as it arrives counts one claim from the
    head, then resumes as an idle queue: over 150 jobs, 5 ms apart, at most one claim in
    (0.3 s rescan) comes from the head, and each of those walks the dead entries again or
    carries no count."""
    enqueue(dsn, "io", dead)
    dirty_the_head(dsn, ["io"], dead)
    worker = t.app.worker(dsn=dsn, queues={"io": 4}, batch_size=4)
    worker._claim_rescan = 0.3
    spy = ClaimSpy(worker)
    await trickle(dsn, worker, 150, 0.005)
    idle_taking = [idle for idle, n in zip(spy.idle, spy.took, strict=True) if n]
    from_head = [walked for (resumed, walked) in spy.claims if not resumed]
    # The first claim has a backlog by default, so 2,000 entries do not make it resume: the
    # next counted one (0.3 s, some 60 jobs later) does. From the first resumed claim on,
    # one claim in 0.3 s comes from the head.
    assert sum(idle_taking) >= 75, spy.claims
    first = spy.idle.index(True)
    later = [resumed for resumed, _ in spy.claims[first:]]
    elapsed = spy.at[-1] - spy.at[first]
    assert later.count(False) <= elapsed / 0.3 + 2, (elapsed, spy.claims)
    assert max(from_head) >= dead, spy.claims
    assert all(w >= dead or w == 0 for w in from_head), spy.claims


async def test_a_caught_up_worker_on_a_clean_queue_keeps_claiming_from_the_head(dsn: str) -> None:
    """Without anything holding row versions back, a worker that claims each job as it
    arrives finds next to nothing to walk, and never resumes."""
    worker = t.app.worker(dsn=dsn, queues={"io": 4}, batch_size=4)
    spy = ClaimSpy(worker)
    await trickle(dsn, worker, 150, 0.005)
    assert sum(spy.took) == 150, spy.claims
    assert not any(resumed for resumed, _ in spy.claims), spy.claims
    assert max(walked for _, walked in spy.claims) < 1_000, spy.claims


async def test_a_caught_up_resuming_worker_still_claims_a_job_far_behind_its_point(
    dsn: str, held: psycopg.Connection[Any]
) -> None:
    """A job that becomes runnable long behind the point (here, run_at in 2000) is not
    within an idle queue's second: the next claim from the head takes it, although the
    worker would resume for a minute (as after walking 1.2 million entries)."""
    enqueue(dsn, "io", 8_000)
    dirty_the_head(dsn, ["io"], 8_000)
    worker = t.app.worker(dsn=dsn, queues={"io": 4}, batch_size=4)
    worker._claim_rescan = 0.3
    worker._walk_rate = 100  # 8,000 entries walked: resume for the longest, 60 s
    spy = ClaimSpy(worker)
    await trickle(dsn, worker, 60, 0.005, late=True, timeout=20)
    assert any(spy.idle), spy.claims


def test_a_look_behind_a_point_finds_only_what_the_resumed_claim_would_miss(dsn: str) -> None:
    """jobs_behind_point: true for a runnable job of the point's priority at or before the
    point stepped back, false for one after it, for another priority or queue, or not yet
    due; true when the point's row is gone (the claim then reads from the head anyway)."""
    enqueue(dsn, "io", 10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        claim = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 10}, 30))
    point = claim.ends["io"]

    def behind() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return _store.run(conn.cursor(), _store.jobs_behind_point("io", point, 1.0))

    assert behind() is False
    enqueue_at(dsn, "io", point_run_at(dsn, point, "-0.5 s"))  # within the step back
    enqueue_at(dsn, "io", point_run_at(dsn, point, "-2 s"), priority=1)  # the higher branch
    enqueue_at(dsn, "cpu", point_run_at(dsn, point, "-1 day"))
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, run_at) VALUES ('io', 'x', %s)",
          [point_run_at(dsn, point, "+1 day")])  # fmt: skip
    assert behind() is False
    late = enqueue_at(dsn, "io", point_run_at(dsn, point, "-2 s"))
    assert behind() is True
    query(dsn, "DELETE FROM pgqueue.active_jobs WHERE id = %s", [late])
    assert behind() is False
    query(dsn, "DELETE FROM pgqueue.active_jobs WHERE id = %s", [point.id])
    assert behind() is True


class LookSpy:
    """Counts the worker's looks behind its points, and what they found."""

    def __init__(self, worker: Any) -> None:
        self.found: list[bool] = []
        run = worker._maint_db.run

        async def spy(query: _store.Query[Any]) -> Any:
            result = await run(query)
            if query.sql is _store.q.JOBS_BEHIND_POINT:
                self.found.append(result)
            return result

        worker._maint_db.run = spy


async def test_a_caught_up_worker_looks_behind_its_points_instead_of_claiming_from_the_head(
    dsn: str, held: psycopg.Connection[Any]
) -> None:
    """Beside 8,000 dead entries and told to resume for a minute, a worker that claims each
    job as it arrives (150 jobs, 20 ms apart: 3 s, ten rescans) claims from the head once,
    then resumes for every later claim: its looks behind the points, on the maintenance
    connection, find nothing. Before, it claimed from the head once per rescan, and each
    such claim walked the 8,000 entries on the latency path."""
    enqueue(dsn, "io", 8_000)
    dirty_the_head(dsn, ["io"], 8_000)
    worker = t.app.worker(dsn=dsn, queues={"io": 4}, batch_size=4)
    worker._claim_rescan = 0.3
    worker._walk_rate = 100  # 8,000 entries walked: resume for the longest, 60 s
    spy, looks = ClaimSpy(worker), LookSpy(worker)
    await trickle(dsn, worker, 150, 0.02)
    first = spy.idle.index(True)
    assert [resumed for resumed, _ in spy.claims[first:]].count(False) == 0, spy.claims
    assert sum(took for took, idle in zip(spy.took, spy.idle, strict=True) if idle) >= 140
    assert len(looks.found) >= 5 and not any(looks.found), looks.found


def test_only_a_claim_with_a_backlog_makes_claims_with_a_backlog_resume(dsn: str) -> None:
    """A caught-up worker's walk makes only its idle queues resume, within a rescan interval
    of its last claim from the head; its queues with a backlog keep the cheaper claim from
    the head until a claim of theirs walks as far."""
    worker = t.app.worker(dsn=dsn, queues={"io": 4, "cpu": 4})
    points = {"io": _store.ClaimPoint(0, 1), "cpu": _store.ClaimPoint(0, 2)}
    worker._claim_after.update(points)
    worker._backlog = {"io"}
    wanted = {"io": 4, "cpu": 4}
    now = time.monotonic()
    worker._behind_clear_until = now + 1
    worker._idle_resume_until = now + 5
    assert worker._resume_points(wanted, now + 0.5) == ({"cpu": points["cpu"]}, {"cpu": 1.0})
    assert worker._resume_points(wanted, now + 1.5) == ({}, {})  # time to look from the head
    worker._resume_until = now + 5
    assert worker._resume_points(wanted, now + 0.5) == (points, {"cpu": 1.0})
    assert worker._resume_points(wanted, now + 1.5) == ({"io": points["io"]}, {})
    assert worker._resume_points(wanted, now + 6) == ({}, {})


def test_a_queue_whose_claim_came_back_full_is_noted_as_backlogged(dsn: str) -> None:
    """Per queue of a claim: one that got all it wanted is claimed again as a slot frees up;
    one that got fewer (or none) leaves the backlog, whatever the other queues got."""
    worker = t.app.worker(dsn=dsn, queues={"io": 4, "cpu": 4, "slow": 4})
    worker._backlog = {"cpu", "slow"}
    rows = [(1, "io", "x"), (2, "cpu", "x"), (3, "io", "x"), (4, "io", "x")]
    worker._note_backlog(rows, {"io": 3, "cpu": 2, "slow": 1})
    assert worker._backlog == {"io"}
    worker._note_backlog(rows, {"io": 4, "cpu": 1})
    assert worker._backlog == {"cpu"}  # io got 3 of 4
    worker._note_backlog(rows, {"io": 3, "cpu": 1})
    assert worker._backlog == {"io", "cpu"}
