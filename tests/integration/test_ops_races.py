"""The operations API racing workers and other operators: retry_job and retry_failed when a
job changes state while they run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store, admin
from pgqueue._store import Outcome
from tests.helpers import query


class _AfterRetry(psycopg.Cursor[Any]):
    """A cursor that calls ``hook`` once, right after its first statement that retries jobs:
    the moment between retry_job's retry and its look at the job."""

    hook: Callable[[], None] | None = None

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        done = super().execute(query, params, **kwargs)
        hook = type(self).hook
        if hook is not None and "pgqueue.retry" in str(query):
            type(self).hook = None
            hook()
        return done


def _store_run(dsn: str, q: _store.Query[Any]) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        return _store.run(cur, q)


def _running_job(dsn: str, unique_key: str | None = None) -> int:
    """A job claimed by worker "w" (attempt 1 of 1); returns its id."""
    [(job_id,)] = query(dsn, "SELECT pgqueue.enqueue('t', queue => 'q', max_attempts => 1,"
                             " unique_key => %s)", [unique_key])  # fmt: skip
    assert [r[0] for r in _store_run(dsn, _store.jobs_claim("w", {"q": 1}, 30)).rows] == [job_id]
    return int(job_id)


@pytest.fixture
def hooked(dsn: str) -> Any:
    """An operator's connection whose cursors run a hook after their retry statement."""
    with psycopg.connect(dsn, cursor_factory=_AfterRetry) as conn:
        yield conn
    _AfterRetry.hook = None


def test_retry_of_a_job_that_fails_as_it_is_retried_requeues_it(dsn: str, hooked: Any) -> None:
    """retry_job found the job running, and by its second look it had failed: it said the
    job's unique key (None) was held by an active job. It now retries it again."""
    job_id = _running_job(dsn)
    failed = Outcome(job_id, 1, "failed", error="boom")
    _AfterRetry.hook = lambda: _store_run(dsn, _store.jobs_ack([failed]))
    admin.retry_job(hooked, job_id)
    hooked.commit()
    assert query(dsn, "SELECT state, attempts, last_error FROM pgqueue.jobs") == [
        ("queued", 1, "boom")
    ]


def test_retry_refused_for_a_held_key_names_the_job_holding_it(dsn: str, conn: Any) -> None:
    """A failed job whose unique key a newer job holds stays failed, and the error names that
    job; the caller's transaction is still usable."""
    [(old,)] = query(dsn, "SELECT pgqueue.enqueue('t', unique_key => 'k')")
    query(dsn, "SELECT pgqueue.cancel(%s)", [old])
    [(new,)] = query(dsn, "SELECT pgqueue.enqueue('t', unique_key => 'k')")
    with pytest.raises(pgqueue.JobStateError) as refused:
        admin.retry_job(conn, old)
    assert str(refused.value) == (
        f"job {old}'s unique key 'k' is held by active job {new}: retry it once that job has"
        " finished"
    )
    assert admin.get_job(conn, old).state == "cancelled"  # type: ignore[union-attr]


def _failed_job(dsn: str) -> int:
    """A failed job in the history; returns its id."""
    [(job_id,)] = query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, last_error)"
        " VALUES (nextval(pg_get_serial_sequence('pgqueue.active_jobs', 'id')), 'q', 't',"
        " '[]', '{}', 'failed', 0, 3, 3, now(), now(), 'boom') RETURNING id",
    )
    return int(job_id)


def _wait_until_blocked(dsn: str, pid: int) -> None:
    """Wait until backend ``pid`` waits for a lock."""
    for _ in range(1000):
        if query(dsn, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                 [pid]) == [(True,)]:  # fmt: skip
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_retry_failed_leaves_a_job_cancelled_after_it_began(dsn: str) -> None:
    """retry_failed (`pgqueue jobs retry --failed`) picked the failed jobs from its snapshot
    and requeued each if failed or cancelled when it got to it: a job another operator retried
    and then cancelled meanwhile (here while retry_failed waited for a row a third one held)
    was requeued, cancelled or not. Only jobs still failed are requeued now."""
    held, other = _failed_job(dsn), _failed_job(dsn)
    with psycopg.connect(dsn) as third, psycopg.connect(dsn) as operator:
        assert third.execute("SELECT pgqueue.retry(%s)", [held]).fetchone() == (True,)
        retried: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: retried.update(n=admin.retry_failed(operator)))
        thread.start()
        _wait_until_blocked(dsn, operator.info.backend_pid)
        query(dsn, "SELECT pgqueue.retry(%s)", [other])  # another operator: retry, then cancel
        assert query(dsn, "SELECT pgqueue.cancel(%s)", [other]) == [("cancelled",)]
        third.rollback()
        thread.join(10)
        operator.commit()
    assert retried == {"n": 1}
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
        (held, "queued"), (other, "cancelled"),
    ]  # fmt: skip


def test_a_retry_waiting_for_a_prune_of_its_job_says_there_is_none(dsn: str) -> None:
    """A prune deleting the job holds its row: the retry waits, then finds no job and says so;
    nothing is requeued."""
    job_id = _failed_job(dsn)
    with psycopg.connect(dsn) as pruner, psycopg.connect(dsn) as operator:
        assert admin.prune(pruner, 0) == 1
        refused: dict[str, Exception] = {}

        def retry() -> None:
            try:
                admin.retry_job(operator, job_id)
            except pgqueue.JobStateError as exc:
                refused["error"] = exc

        thread = threading.Thread(target=retry)
        thread.start()
        _wait_until_blocked(dsn, operator.info.backend_pid)
        pruner.commit()
        thread.join(10)
        operator.commit()
    assert str(refused["error"]) == f"there is no job {job_id}"
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


def test_a_prune_skips_a_job_being_retried(dsn: str) -> None:
    """A retry in progress holds the job's history row: a prune passes it by without waiting,
    and the job is requeued."""
    job_id = _failed_job(dsn)
    with psycopg.connect(dsn) as operator, psycopg.connect(dsn, autocommit=True) as pruner:
        admin.retry_job(operator, job_id)
        pruner.execute("SET lock_timeout = '10s'")  # were it to wait: an error, not a hang
        assert admin.prune(pruner, 0) == 0
        operator.commit()
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs") == [(job_id, "queued")]
