"""The ack's encoding against the one before it: a success without an error travels as
[id, attempt, result], the other outcomes as [id, attempt, result, state, error, tb, delay];
before, every outcome travelled as [id, attempt, state, result, error, tb, delay]. Random jobs
and random batches of outcomes, written both ways, must leave every row alike."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest

from pgqueue import _json, _store
from pgqueue._retry import MAX_DELAY
from pgqueue._store import Outcome, _queries

# The statement before: its outcomes' CTE read the seven fields in the older order.
_NEW_O = (
    "(e->>1)::int AS attempt, coalesce(e->>3, 'succeeded') AS state,\n"
    "           e->>2 AS result, e->>4 AS error, e->>5 AS tb,"
    " coalesce((e->>6)::float8, 0) AS delay,"
)
_OLD_O = (
    "(e->>1)::int AS attempt, e->>2 AS state, e->>3 AS result,\n"
    "           e->>4 AS error, e->>5 AS tb, (e->>6)::float8 AS delay,"
)
assert _queries.JOBS_ACK.count(_NEW_O) == 1, "JOBS_ACK's outcomes changed: update this test"
OLD_JOBS_ACK = _queries.JOBS_ACK.replace(_NEW_O, _OLD_O)


def old_jobs_ack(outcomes: Sequence[Outcome]) -> _store.Query[_store.Acked]:
    """jobs_ack as it was: seven fields for every outcome."""
    text = _store.pg_text
    rows = [
        [o.job_id, o.attempt, o.state, o.result, o.error, o.traceback, o.delay]
        if o.error is None and o.traceback is None
        else [o.job_id, o.attempt, o.state, o.result, text(o.error), text(o.traceback), o.delay]
        for o in sorted(outcomes, key=lambda o: o.job_id)
    ]
    return _store.Query(OLD_JOBS_ACK, {"outcomes": json.dumps(rows)}, _store._acked, binary=True)


VALUES: list[Any] = [
    None, 0, -1, 2**100, -(2**70), 1e308, -0.0, 0.1, 5e-324, True, "", "x",
    '"q" \\ \\" \t\n\x01\x1f', "\u00df\u2603\U0001f600",
    "\\u0000", {"a": [1, {"b": None}]}, [], {}, ["x" * 3000],
]  # fmt: skip
RESULTS = [None, "null", "1e308", "-0.0", " [1, 2] ", '{"n":123456789012345678901234567890}'] + [
    _json.dumps(v) for v in VALUES
]
TEXTS = [None, "", "boom", "nul \x00 in it", "lone \udc80 surrogate", "\u00e9 \"q\" \\ \x07",
         "x" * 70000, "\\x00 already"]  # fmt: skip
DELAYS = [0, 0.0, -0.0, 0.25, 1e-9, 1.5, 12.345678, 3600, 31557600.5, MAX_DELAY]


def random_outcome(rng: random.Random, job_id: int, attempts: int) -> Outcome:
    """An outcome of ``job_id`` (of any attempt near ``attempts``), of any kind."""
    attempt = rng.choice([attempts] * 6 + [attempts - 1, attempts + 1, 0])
    kind = rng.choice(["ok"] * 4 + ["ok_texts", "failed", "retry", "retry_back", "cancelled"])
    text, tb = rng.choice(TEXTS), rng.choice(TEXTS + [None] * 4)
    if kind == "ok":
        return Outcome(job_id, attempt, "succeeded", result=rng.choice(RESULTS))
    if kind == "ok_texts":  # a success carrying an error, a traceback or both
        if text is None is tb:
            text, tb = rng.choice([("e", None), (None, "tb")])
        return Outcome(job_id, attempt, "succeeded", rng.choice(RESULTS), text, tb)
    if kind == "failed":
        return Outcome(job_id, attempt, "failed", error=text, traceback=tb)
    if kind == "cancelled":
        return Outcome(job_id, attempt, "cancelled", error=text, traceback=tb)
    delay = rng.choice(DELAYS)
    if kind == "retry":
        error = "e" if text is None else text
        return Outcome(job_id, attempt, "queued", error=error, traceback=tb, delay=delay)
    return Outcome(job_id, attempt, "queued", delay=delay)


def random_jobs(cur: psycopg.Cursor[Any], rng: random.Random) -> dict[int, int]:
    """Insert random jobs; returns each one's attempts. Some are queued, some asked to cancel,
    some already in history, some with errors near or past the bound."""
    jobs: dict[int, int] = {}
    for n in range(rng.randint(1, 25)):
        attempts, queued = rng.randint(1, 4), rng.random() < 0.1
        errors: list[Any] = [
            {"attempt": i, "error": f"e{i}"} for i in range(rng.choice([0, 0, 1, 8, 9, 10, 12]))
        ]
        if errors and rng.random() < 0.3:
            errors[-8 if len(errors) >= 8 else 0] = rng.choice([5, {"dropped": 3}, "s"])
        cur.execute(
            "INSERT INTO pgqueue.active_jobs (id, queue, task, state, attempts, max_attempts,"
            " worker_id, lease_expires_at, cancel_requested, last_error, errors, run_at,"
            " started_at, meta, unique_key) VALUES (%s, 'io', 'x', %s, %s, %s, %s,"
            " now() + interval '1 h', %s, %s, %s, now() - interval '1 min', now(), %s, %s)",
            [n + 1, "queued" if queued else "running", attempts - queued, rng.randint(1, 5),
             rng.choice(["w1", "w1", "w2", None]), rng.random() < 0.2,
             rng.choice([None, "before"]), json.dumps(errors), json.dumps({"n": n}),
             rng.choice([None, f"k{n}"])],
        )  # fmt: skip
        if rng.random() < 0.1:  # already in history (put there by hand, say)
            cur.execute(
                "INSERT INTO pgqueue.finished_jobs SELECT id, queue, task, args, kwargs,"
                " 'succeeded', priority, attempts, max_attempts, run_at, created_at,"
                " started_at, now(), worker_id, timeout, unique_key, '\"old\"', last_error,"
                " errors, meta FROM pgqueue.active_jobs WHERE id = %s",
                [n + 1],
            )
        jobs[n + 1] = attempts
    return jobs


def random_batches(rng: random.Random, jobs: dict[int, int]) -> list[tuple[bool, list[Outcome]]]:
    """Batches (written again, or not) of outcomes of these jobs, of missing ones, of one job
    twice, and sent again."""
    batches: list[tuple[bool, list[Outcome]]] = []
    for _ in range(rng.randint(1, 3)):
        ids = [*rng.sample(sorted(jobs), rng.randint(1, len(jobs))), len(jobs) + 7]
        batch = [random_outcome(rng, i, jobs.get(i, 1)) for i in ids]
        batch += [random_outcome(rng, i, jobs.get(i, 1)) for i in rng.sample(ids, min(2, len(ids)))]
        if rng.random() < 0.5:  # most batches: successes alone
            batch = [o for o in batch if o.state == "succeeded" and o.error is o.traceback is None]
        if batches and rng.random() < 0.3:
            batch += batches[-1][1]  # sent again
        if rng.random() < 0.05:  # a result the database refuses: the batch fails
            job_id = rng.choice(ids[:-1])
            refused = rng.choice(["NaN", '"\\u0000"'])
            batch.append(Outcome(job_id, jobs[job_id], "succeeded", refused))
        rng.shuffle(batch)
        batches.append((rng.random() < 0.25, batch))
    return batches


SNAPSHOT = """
SELECT 'a', to_jsonb(j)::text, run_at - now(), NULL FROM pgqueue.active_jobs AS j
UNION ALL
SELECT 'f', to_jsonb(j)::text, run_at - now(), result IS NULL FROM pgqueue.finished_jobs AS j
ORDER BY 1, 2
"""

Ack = Callable[[Sequence[Outcome]], _store.Query[_store.Acked]]


def written(conn: psycopg.Connection[Any], ack: Ack, batches: Any, monkeypatch: Any) -> list[Any]:
    """Each batch's Acked (or its error's SQLSTATE) and the tables after it, written by
    ``ack`` (jobs_ack_again's writes too) in the caller's transaction."""
    seen: list[Any] = []
    with monkeypatch.context() as patched, conn.cursor() as cur:
        patched.setattr(_store, "jobs_ack", ack)
        for again, batch in batches:
            cur.execute("SAVEPOINT batch")
            try:
                if again:
                    got: Any = _store.run_together(conn, _store.jobs_ack_again(batch, "w1"))
                else:
                    got = _store.run(cur, ack(batch))
            except psycopg.Error as exc:
                cur.execute("ROLLBACK TO SAVEPOINT batch")
                got = exc.sqlstate
            seen.append((got, cur.execute(SNAPSHOT).fetchall()))
    return seen


def differences(dsn: str, seeds: range, monkeypatch: Any, new: Ack = _store.jobs_ack) -> list[int]:
    """The seeds whose jobs and batches the old encoding and ``new`` write differently."""
    differ = []
    with psycopg.connect(dsn) as conn:
        for seed in seeds:
            rng = random.Random(seed)
            with conn.cursor() as cur:
                jobs = random_jobs(cur, rng)
                batches = random_batches(rng, jobs)
                cur.execute("SAVEPOINT jobs")
                old = written(conn, old_jobs_ack, batches, monkeypatch)
                cur.execute("ROLLBACK TO SAVEPOINT jobs")
                if written(conn, new, batches, monkeypatch) != old:
                    differ.append(seed)
            conn.rollback()  # one transaction per seed: now() is the same for both
    return differ


def test_an_ack_writes_what_the_encoding_before_it_wrote(dsn: str, monkeypatch: Any) -> None:
    """Random jobs (running, queued, asked to cancel, already in history, with long error
    lists) and random batches of outcomes of every kind (results of every JSON value,
    error texts with NUL and lone surrogates, stale and future attempts, one job twice, sent
    again, written again) leave the same rows, run_at and Acked as the previous encoding."""
    assert differences(dsn, range(40), monkeypatch) == []


@pytest.mark.slow
def test_an_ack_writes_what_the_encoding_before_it_wrote_over_many_seeds(
    dsn: str, monkeypatch: Any
) -> None:
    """As above, over many more seeds."""
    assert differences(dsn, range(40, 500), monkeypatch) == []
