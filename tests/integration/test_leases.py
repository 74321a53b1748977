"""Leases: fenced acks and heartbeats, rescue of expired leases, graceful release."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from pgqueue._store import Outcome
from tests.helpers import query, run_worker_until, states, terminate
from tests.integration import tasks_app as t

T = TypeVar("T")


def run(dsn: str, q: _store.Query[T]) -> T:
    """Run one store query in its own autocommit connection."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        return _store.run(cur, q)


def claim(dsn: str, worker: str, lease: float, n: int = 10) -> list[tuple]:
    """Claim up to n jobs of queue io."""
    return run(dsn, _store.jobs_claim(worker, {"io": n}, lease)).rows


def test_claim_sets_running_bumps_attempts_and_sets_a_lease(dsn: str, conn) -> None:
    """A claim marks the row running, counts the attempt and sets lease_expires_at."""
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    [row] = claim(dsn, "w1", lease=30)
    assert row[5] == 1  # attempts
    assert query(dsn, "SELECT state, worker_id, lease_expires_at > now() + interval '29 s' "
                      "FROM pgqueue.jobs") == [("running", "w1", True)]  # fmt: skip


def test_one_queue_and_several_queue_claims_agree(dsn: str) -> None:
    """The one-queue claim (its own statement) and the several-queue claim take the jobs
    first in line, honour each queue's limit and return the same row shape."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, priority, run_at) "
               "SELECT q, 'x', i % 3, now() - make_interval(secs => i) "
               "FROM generate_series(1, 6) i, unnest(ARRAY['io', 'cpu']) q")  # fmt: skip
    order = "SELECT id FROM pgqueue.jobs WHERE queue = %s ORDER BY priority DESC, run_at, id"
    expected = {q: [r[0] for r in query(dsn, order, [q])] for q in ("io", "cpu")}
    one = run(dsn, _store.jobs_claim("w1", {"io": 4}, 30)).rows
    both = run(dsn, _store.jobs_claim("w2", {"io": 4, "cpu": 2}, 30)).rows
    assert sorted(r[0] for r in one) == sorted(expected["io"][:4])
    got = {q: sorted(r[0] for r in both if r[1] == q) for q in ("io", "cpu")}
    assert got == {"io": sorted(expected["io"][4:]), "cpu": sorted(expected["cpu"][:2])}
    shapes = {tuple(type(v).__name__ for v in r) for r in [*one, *both]}  # type: ignore[misc]
    assert len(shapes) == 1 and len(shapes.pop()) == 11


def test_claim_returns_decoded_json_arguments_and_meta(dsn: str, conn) -> None:
    """args, kwargs and meta come back as Python values, nested, empty or not."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, args, kwargs, meta) VALUES "
               "('io', 'a', %s, '{}', %s), ('io', 'b', '[]', %s, '{}')",
          ['[1, "d\u00e9j\u00e0 \\"vu\\"", {"n": [null, true, 2.5]}]', '{"tick": "x"}',
           '{"k": {"deep": []}}'])  # fmt: skip
    rows = sorted(claim(dsn, "w1", lease=30), key=lambda r: r[2])
    assert [(r[3], r[4], r[8]) for r in rows] == [
        ([1, 'déjà "vu"', {"n": [None, True, 2.5]}], {}, {"tick": "x"}),
        ([], {"k": {"deep": []}}, {}),
    ]


def test_claims_never_hand_out_the_same_job_twice(dsn: str, conn) -> None:
    """Concurrent claimers partition the jobs between them (SKIP LOCKED)."""
    t.add.enqueue_many(conn, [((i, i), {}) for i in range(200)])
    conn.commit()
    first, second, third = (claim(dsn, w, 30, 90) for w in ("a", "b", "c"))
    ids = [r[0] for r in first + second + third]
    assert len(ids) == len(set(ids)) == 200


def test_stale_ack_after_rescue_changes_nothing(dsn: str, conn) -> None:
    """A worker whose lease expired and was rescued cannot complete the job any more."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    claim(dsn, "stale", lease=0.05)
    time.sleep(0.1)
    assert run(dsn, _store.leases_rescue()) == (1, 0, 0, 0)
    assert run(dsn, _store.jobs_ack([Outcome(job_id, 1, "succeeded", result="3")])).ids == []
    [row] = claim(dsn, "fresh", lease=30)
    assert row[5] == 2
    assert run(dsn, _store.jobs_ack([Outcome(job_id, 1, "succeeded", result="3")])).ids == []
    acked = run(dsn, _store.jobs_ack([Outcome(job_id, 2, "succeeded", result="3")]))
    assert acked == ([job_id], [], [2])
    assert query(dsn, "SELECT state, attempts, errors->0->>'error' FROM pgqueue.jobs") == [
        ("succeeded", 2, "worker lost")
    ]


def test_an_ack_names_the_attempt_it_wrote_of_a_job_two_of_whose_attempts_it_carries(
    dsn: str, conn
) -> None:
    """A stale attempt's outcome and the job's next attempt's travel in one batch (and another
    job's retry and success): the ack says which attempt of each id it wrote, so that the
    stale one, fenced off, is not taken for written."""
    job_id, other, third = (t.add.enqueue(conn, i, i) for i in (1, 2, 3))
    conn.commit()
    claim(dsn, "stale", lease=30)
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'queued' WHERE id = %s", [job_id])
    claim(dsn, "fresh", lease=30)
    acked = run(dsn, _store.jobs_ack([
        Outcome(third, 1, "succeeded", result="6"), Outcome(job_id, 2, "succeeded", result="2"),
        Outcome(job_id, 1, "queued", error="stale"), Outcome(other, 1, "queued", delay=60.0),
    ]))  # fmt: skip
    assert acked.applied() == {(job_id, 2), (other, 1), (third, 1)}
    assert len(acked.ids) == len(acked.attempts) == 3 and acked.cancelled == []


def test_ack_of_a_job_already_in_history_keeps_that_history_and_acks_the_rest(
    dsn: str, conn
) -> None:
    """A job whose id is already in finished_jobs (put there by hand) leaves active_jobs, its
    history row stands, and the other jobs of the same ack are written as usual."""
    first, second = (t.add.enqueue(conn, i, i) for i in (1, 2))
    conn.commit()
    claim(dsn, "w", lease=30)
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, "
               "priority, attempts, max_attempts, run_at, created_at, result) SELECT id, queue, "
               "task, args, kwargs, 'cancelled', priority, attempts, max_attempts, run_at, "
               "created_at, '\"by hand\"' FROM pgqueue.active_jobs WHERE id = %s",
          [first])  # fmt: skip
    acked = run(dsn, _store.jobs_ack([Outcome(first, 1, "succeeded", result="2"),
                                      Outcome(second, 1, "succeeded", result="4")]))  # fmt: skip
    assert sorted(acked.ids) == sorted([first, second]) and acked.cancelled == []
    assert query(dsn, "SELECT count(*) FROM pgqueue.active_jobs") == [(0,)]
    assert query(dsn, "SELECT id, state, result FROM pgqueue.finished_jobs ORDER BY id") == [
        (first, "cancelled", "by hand"), (second, "succeeded", 4),
    ]  # fmt: skip


def test_stale_heartbeat_extends_nothing(dsn: str, conn) -> None:
    """A heartbeat for an attempt that is no longer current returns no live lease."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    claim(dsn, "w", lease=0.05)
    time.sleep(0.1)
    run(dsn, _store.leases_rescue())
    claim(dsn, "w2", lease=30)
    assert run(dsn, _store.leases_extend("w", 30, [(job_id, 1)])).leases == {}
    assert run(dsn, _store.leases_extend("w2", 30, [(job_id, 2)])).leases == {(job_id, 2): False}


def test_a_heartbeat_of_an_attempt_given_back_leaves_the_claim_that_took_it_again(
    dsn: str, conn
) -> None:
    """w gives its claim back at shutdown (the attempt is not counted), and w2 claims the job:
    attempt 1 again. A heartbeat w sends after that (it was waiting for the connection the
    release used, or it holds an abandoned task's attempt until its loops end) neither extends
    w2's lease nor reports it alive: it extended w2's lease, which then outlived w2."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    claim(dsn, "w", lease=30)
    assert run(dsn, _store.leases_release([(job_id, 1)])) == (1, [])
    claim(dsn, "w2", lease=30)
    lease = "SELECT lease_expires_at FROM pgqueue.jobs WHERE id = %s"
    before = query(dsn, lease, [job_id])
    assert run(dsn, _store.leases_extend("w", 3600, [(job_id, 1)])).leases == {}
    assert query(dsn, lease, [job_id]) == before
    assert run(dsn, _store.leases_extend("w2", 30, [(job_id, 1)])).leases == {(job_id, 1): False}


@pytest.mark.parametrize(
    ("task", "options"),
    [("sleepy", {}), ("sleepy", {"listen": False}), ("spin", {"processes": 1})],
    ids=["async", "poll-only", "process"],
)
async def test_a_job_outliving_its_lease_keeps_it_by_its_own_workers_heartbeats(
    dsn: str, conn: psycopg.Connection, task: str, options: dict[str, object]
) -> None:
    """Heartbeats are fenced by worker as well as attempt: a job twice as long as its lease,
    claimed by a worker that sweeps for expired leases itself every 0.2 s, keeps its lease on
    that worker's heartbeats, whichever way it was claimed or runs (an async task, a
    poll-only worker's claim as drain() makes, a process task), and runs once."""
    job_id = getattr(t, task).enqueue(conn, 2.5)
    conn.commit()
    worker = t.app.worker(
        dsn=dsn, queues=["io", "cpu"], lease=1.2, heartbeat=0.2, rescue_interval=0.2,
        poll_interval=0.05, **options,
    )  # fmt: skip
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 1)
    row = "SELECT attempts, errors, worker_id FROM pgqueue.jobs WHERE id = %s"
    assert query(dsn, row, [job_id]) == [(1, [], worker.name)]


def test_rescue_fails_jobs_out_of_attempts_as_worker_lost(dsn: str, conn) -> None:
    """An expired lease on the last attempt ends the job failed with 'worker lost'."""
    t.add.using(max_attempts=1).enqueue(conn, 1, 2)
    conn.commit()
    claim(dsn, "w", lease=0.05)
    time.sleep(0.1)
    assert run(dsn, _store.leases_rescue()) == (0, 1, 0, 0)
    assert query(dsn, "SELECT state, last_error FROM pgqueue.jobs") == [("failed", "worker lost")]


def test_release_gives_the_attempt_back(dsn: str, conn) -> None:
    """Jobs released at shutdown are queued again without an attempt counted."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    claim(dsn, "w", lease=30)
    assert run(dsn, _store.leases_release([(job_id, 1)])) == (1, [])
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]


async def test_worker_rescues_expired_leases_by_itself(dsn: str, conn) -> None:
    """A job claimed by a vanished worker runs again on a live worker after its lease."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    claim(dsn, "vanished", lease=0.2)
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, rescue_interval=0.1)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT attempts, result FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        (2, 3)
    ]


async def test_lost_lease_stops_the_local_attempt_and_drops_its_outcome(dsn: str, conn) -> None:
    """When the heartbeat finds the lease gone, the local task is cancelled and never acked."""
    job_id = t.sleepy.enqueue(conn, 5)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, heartbeat=0.1)
    runner = asyncio.create_task(worker.run())
    while worker.running == 0:
        await asyncio.sleep(0.01)
    query(dsn, "UPDATE pgqueue.active_jobs SET attempts = attempts + 1")  # someone else's now
    while worker.running:
        await asyncio.sleep(0.01)
    worker.stop()
    await runner
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        ("running", 2)
    ]


async def test_a_job_claimed_again_after_its_lease_was_lost_keeps_its_copies_apart(
    dsn: str, conn
) -> None:
    """A worker whose lease was lost may claim the same job again while its stale copy
    still runs: the two attempts are tracked apart, the stale one is stopped at the next
    heartbeat, the new one is acknowledged and every slot comes back.

    The test beats for the worker, which polls and does not listen: a heartbeat landing
    between the rescue and the claim, timed or asked for by the listener once it listens,
    would stop the stale copy before there were two (about once in 15 runs, before)."""
    job_id = t.sleepy.enqueue(conn, 1.0)
    conn.commit()
    worker = t.app.worker(
        dsn=dsn, queues={"io": 2}, poll_interval=0.05, lease=1200, heartbeat=600, listen=False
    )
    runner = asyncio.create_task(worker.run())
    try:
        await _until(lambda: worker.running == 1)
        # What a rescue does once the lease has expired: back to the queue, attempt kept.
        query(dsn, "UPDATE pgqueue.active_jobs SET state = 'queued', worker_id = NULL, "
                   "lease_expires_at = NULL")  # fmt: skip
        await _until(lambda: worker.running == 2)  # attempt 2 beside the stale attempt 1
        await worker.extend_leases()  # the next heartbeat: attempt 1's lease is gone
        await _until(lambda: worker.running == 1)  # the stale copy is stopped
        await _until(lambda: states(dsn) == {"succeeded": 1})
        await _until(lambda: worker.running == 0)
    finally:
        worker.stop()
        await runner
    assert query(dsn, "SELECT attempts, result FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        (2, "slept")
    ]
    assert worker._free == {"io": 2}
    assert (worker.stats.claimed, worker.stats.succeeded) == (2, 1)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s")
        await asyncio.sleep(0.01)


async def test_stop_finishes_running_jobs_within_the_shutdown_timeout(dsn: str, conn) -> None:
    """stop(): running jobs finish, nothing is left running, nothing new is claimed."""
    t.sleepy.enqueue_many(conn, [((0.3,), {}) for _ in range(3)])
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues={"io": 3}, poll_interval=0.05, shutdown_timeout=10)
    runner = asyncio.create_task(worker.run())
    while worker.running < 3:
        await asyncio.sleep(0.01)
    t.add.enqueue(conn, 1, 1)
    conn.commit()
    worker.stop()
    await runner
    assert states(dsn) == {"succeeded": 3, "queued": 1}


@pytest.mark.parametrize("task", [t.sleepy, t.sleeps_in_a_group, t.cancels_when_stopped])
async def test_stop_past_the_timeout_requeues_without_spending_an_attempt(
    dsn: str, conn, task: pgqueue.Task[[float], object]
) -> None:
    """Jobs still running when the shutdown timeout ends go back to queued, attempts unchanged:
    one whose TaskGroup raised its tasks' errors in place of the CancelledError too (it failed,
    an attempt spent and the errors recorded), and one that raised Cancel then (its job was
    cancelled for good, though a TaskGroup's Cancel went back)."""
    task.enqueue(conn, 30)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=0.1)
    runner = asyncio.create_task(worker.run())
    while worker.running == 0:
        await asyncio.sleep(0.01)
    worker.stop()
    await runner
    assert query(dsn, "SELECT state, attempts, worker_id FROM pgqueue.jobs") == [
        ("queued", 0, None)
    ]


async def test_stop_releases_jobs_after_its_connections_were_dropped(dsn: str, conn) -> None:
    """Connections dropped while idle (a server restart, pg_terminate_backend) do not keep a
    stopping worker from putting its unfinished jobs back and removing its row: a job left
    running would wait for its lease and lose an attempt as "worker lost"."""
    job_id = t.sleepy.enqueue(conn, 30)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=0.1)
    runner = asyncio.create_task(worker.run())
    await _until(lambda: worker.running == 1)
    terminate(dsn, "acker", "maintenance")
    worker.stop()
    await runner
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        ("queued", 0)
    ]
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []


def test_a_large_mixed_ack_pairs_each_id_with_the_attempt_it_wrote(dsn: str) -> None:
    """JOBS_ACK pairs ids and attempts without sorting them (both arrays read retried, then
    done): 1,000 running jobs of scattered attempts, some asked to cancel, and a shuffled
    batch of retries, successes, failures and cancels, with stale and future attempts fenced
    off. Acked.applied() must be the (id, attempt) of exactly the rows the statement wrote."""
    rnd = random.Random(35)
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, state, attempts, worker_id, "
               "lease_expires_at, cancel_requested) SELECT 'io', 'x', 'running', "
               "1 + (random() * 60)::int, 'w', now() + interval '1 h', random() < 0.1 "
               "FROM generate_series(1, 1000)")  # fmt: skip
    attempts = dict(query(dsn, "SELECT id, attempts FROM pgqueue.active_jobs"))
    kinds = [("queued", None, "e"), ("queued", None, None), ("succeeded", "1", None),
              ("failed", None, "x"), ("cancelled", None, "x")]  # fmt: skip
    outcomes = []
    for job_id, attempt in attempts.items():
        state, result, error = rnd.choice(kinds)
        for tried in (attempt - rnd.randint(1, 3), attempt + 1, attempt):
            if tried == attempt or rnd.random() < 0.2:
                outcomes.append(Outcome(job_id, tried, state, result=result, error=error))
    rnd.shuffle(outcomes)
    acked = run(dsn, _store.jobs_ack(outcomes[:-50]))  # the last 50 are not written
    left = {r[0] for r in query(dsn, "SELECT id FROM pgqueue.active_jobs WHERE state = 'running'")}
    written = {(job_id, a) for job_id, a in attempts.items() if job_id not in left}
    assert 800 < len(written) < 1000 and len(acked.ids) == len(written)
    assert acked.applied() == written


def read_both_ways(dsn: str, statement: _store.Query[T]) -> tuple[T, T]:
    """What ``statement`` returns read in binary and as text, each in a transaction rolled
    back (so both read the same rows); asserts the first really came back in binary."""
    results = []
    with psycopg.connect(dsn) as conn:
        for binary in (True, False):
            with conn.transaction(force_rollback=True), conn.cursor() as cur:
                results.append(_store.run(cur, dataclasses.replace(statement, binary=binary)))
                assert cur.pgresult is not None and cur.pgresult.fformat(0) == int(binary)
    return results[0], results[1]


def test_claims_and_acks_read_in_binary_what_text_would_give(dsn: str) -> None:
    """Every claim statement and the ack read their rows in binary (psycopg parses a text
    row's numbers from their digits), and get what the text form gives: ids, attempts,
    priorities, counts, timeouts, NULLs, JSON and text alike."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, args, kwargs, priority, timeout, "
               "meta, last_error) VALUES ('io', 'x', '[\"\u00df\", 1.5]', "
               "'{\"k\": [null, 1099511627776]}', -7, 2.5, '{\"\u00e9\": \"\u2603\"}', "
               "'worker lost'), ('io', 'y', '[]', '{}', 3, NULL, '{}', NULL), "
               "('cpu', 'z', '[1]', '{}', 0, NULL, '{}', 'other')")  # fmt: skip
    point = _store.ClaimPoint(0, 0)
    claims = [
        _store.jobs_claim("w", {"io": 5}, 30, count=False),
        _store.jobs_claim("w", {"io": 5}, 30),
        _store.jobs_claim("w", {"io": 5}, 30, pages=False),
        _store.jobs_claim("w", {"io": 5}, 30, skip=True),
        _store.jobs_claim("w", {"io": 5, "cpu": 5}, 30),
        _store.jobs_claim("w", {"io": 5, "cpu": 5}, 30, skip=True),
        _store.jobs_claim("w", {"io": 5}, 30, after={"io": point}, idle={"io": 60.0}),
        _store.jobs_claim("w", {"io": 5, "cpu": 5}, 30, after={"io": point}),
        _store.jobs_claim("w", {"nothing": 5}, 30, look=True),
    ]
    for statement in claims:
        assert statement.binary, statement.sql
        binary, text = read_both_ways(dsn, statement)
        assert binary.rows or binary.counted, statement.sql  # the look counts, taking none
        waits = [(r[:9], r[10:]) for r in binary.rows], [(r[:9], r[10:]) for r in text.rows]
        assert waits[0] == waits[1] and binary.ends == text.ends
        assert (binary.walked, binary.counted, binary.pages) == (text.walked, text.counted,
                                                                 text.pages)  # fmt: skip
        assert all(type(r[9]) is float for r in binary.rows)
        assert [[*map(type, r)] for r in binary.rows] == [[*map(type, r)] for r in text.rows]
    [first, second] = claim(dsn, "w", lease=30)
    ack = _store.jobs_ack([Outcome(first[0], 1, "succeeded", result="1"),
                           Outcome(second[0], 1, "queued", error="again"),
                           Outcome(second[0] + 99, 1, "succeeded")])  # fmt: skip
    assert ack.binary
    binary_acked, text_acked = read_both_ways(dsn, ack)
    assert binary_acked == text_acked == ([second[0], first[0]], [], [1, 1])


def test_an_ack_writes_each_outcome_of_a_mixed_batch_and_of_a_batch_of_successes(
    dsn: str,
) -> None:
    """A success without an error travels in a shorter form than the other outcomes (see
    JOBS_ACK): in one batch with retries, failures and cancels, and in a batch of successes
    alone, each job ends as its outcome says: its result (none, JSON null, large non-ASCII
    JSON with a huge integer), state, error, attempts and retry delay."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, state, attempts, worker_id, "
               "lease_expires_at, cancel_requested, last_error) SELECT 'io', 'x', 'running', 1, "
               "'w', now() + interval '1 h', i = 8, 'before' "
               "FROM generate_series(1, 13) i")  # fmt: skip
    ids = [r[0] for r in query(dsn, "SELECT id FROM pgqueue.active_jobs ORDER BY id")]
    big = '{"\u00df":"\u2603 \\"q\\"","n":123456789012345678901234567890,"s":"' + "x" * 5000 + '"}'
    mixed = [Outcome(ids[0], 1, "succeeded"), Outcome(ids[1], 1, "succeeded", result="null"),
             Outcome(ids[2], 1, "succeeded", result=big),
             Outcome(ids[3], 1, "failed", error="boom", traceback="tb"),
             Outcome(ids[4], 1, "queued", error="again", delay=600.0),
             Outcome(ids[5], 1, "queued", delay=0.0), Outcome(ids[6], 1, "cancelled", error="c"),
             Outcome(ids[7], 1, "queued", error="again"),
             Outcome(ids[8], 1, "succeeded", result="[1]", error="odd")]  # fmt: skip
    successes = [Outcome(ids[9], 1, "succeeded"), Outcome(ids[10], 1, "succeeded", result="null"),
                 Outcome(ids[11], 1, "succeeded", result=big),
                 Outcome(ids[12], 1, "succeeded", result='"\u00e9"')]  # fmt: skip
    for batch in (mixed, successes):
        assert sorted(run(dsn, _store.jobs_ack(batch[::-1])).ids) == [o.job_id for o in batch]
    rows = query(dsn, "SELECT id, state, attempts, result IS NULL, result::text, last_error, "
                      "jsonb_array_length(errors), run_at > now() + interval '500 s' "
                      "FROM pgqueue.jobs ORDER BY id")  # fmt: skip
    big_text = query(dsn, "SELECT %s::jsonb::text", [big])[0][0]
    assert [r[1:] for r in rows] == [
        ("succeeded", 1, True, None, "before", 0, False),
        ("succeeded", 1, False, "null", "before", 0, False),
        ("succeeded", 1, False, big_text, "before", 0, False),
        ("failed", 1, True, None, "boom", 1, False),
        ("queued", 1, True, None, "again", 1, True),
        ("queued", 0, True, None, "before", 0, False),
        ("cancelled", 1, True, None, "c", 1, False),
        ("cancelled", 1, True, None, "cancelled on request", 1, False),
        ("succeeded", 1, False, "[1]", "odd", 1, False),
        ("succeeded", 1, True, None, "before", 0, False),
        ("succeeded", 1, False, "null", "before", 0, False),
        ("succeeded", 1, False, big_text, "before", 0, False),
        ("succeeded", 1, False, '"\u00e9"', "before", 0, False),
    ]
