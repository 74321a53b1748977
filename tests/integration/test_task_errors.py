"""What a worker records of a task's exception groups and of its very long error messages."""

from __future__ import annotations

import asyncio
import logging

import pytest

import pgqueue
from pgqueue._errors import LOG_LIMIT, TEXT_LIMIT
from tests.helpers import query, run_worker_until

app = pgqueue.PgQueue()


def _raised(what: str) -> Exception:
    """``retry<seconds>``, ``cancel`` or anything else: the exception a task raises for it."""
    if what.startswith("retry"):
        return pgqueue.Retry(float(what.removeprefix("retry")))
    return pgqueue.Cancel("gave up") if what == "cancel" else RuntimeError(what)


@app.task(queue="io", max_attempts=1)
async def in_task_group(*raising: str) -> None:
    """Raise each of ``raising`` from its own task of one asyncio.TaskGroup."""

    async def one(what: str) -> None:
        raise _raised(what)

    async with asyncio.TaskGroup() as group:
        for what in raising:
            group.create_task(one(what))


@app.task(queue="io", max_attempts=1)
async def in_group(*raising: str) -> None:
    """Raise one ExceptionGroup of ``raising``, its last one nested in a group of its own."""
    *first, last = [_raised(what) for what in raising]
    raise ExceptionGroup("several", [*first, ExceptionGroup("nested", [last])])


@app.task(queue="io", max_attempts=1)
async def long_message(size: int) -> None:
    """Raise an error whose message is ``size`` characters between an A and a Z."""
    raise RuntimeError("A" + "x" * size + "Z")


@app.task(queue="cpu", executor="process", max_attempts=1)
def long_message_in_child(size: int) -> None:
    """As long_message, in a child process."""
    raise RuntimeError("A" + "x" * size + "Z")


def job_row(dsn: str, job_id: int) -> tuple[str, int, str | None, list[dict[str, str]], bool]:
    """``(state, attempts, last_error, errors, whether run_at is over 50 minutes away)``."""
    [row] = query(
        dsn, "SELECT state, attempts, last_error, errors, run_at > now() + interval '50 min'"
        " FROM pgqueue.jobs WHERE id = %s", [job_id],
    )  # fmt: skip
    return row


async def run_one(dsn: str, conn, task: pgqueue.Task, *args: object) -> tuple:  # type: ignore[type-arg]
    """Enqueue one job of ``task``, run a worker until its outcome is written; its row."""
    job_id = task.enqueue(conn, *args)
    conn.commit()

    def ended() -> bool:
        state, _, _, _, later = job_row(dsn, job_id)
        return state in ("failed", "cancelled") or later

    worker = app.worker(dsn=dsn, queues=["io", "cpu"], poll_interval=0.05)
    await run_worker_until(worker, ended, timeout=60)
    return job_row(dsn, job_id)


@pytest.mark.parametrize("task", [in_task_group, in_group])
async def test_a_group_of_retries_is_a_retry_after_its_longest_delay(dsn: str, conn, task) -> None:
    """Retry raised in a TaskGroup reached the executor as an ExceptionGroup, recorded as a
    failure: a group of nothing but Retry gives its attempt back, to run after the longest
    delay any of them asked for."""
    state, attempts, last_error, errors, later = await run_one(
        dsn, conn, task, "retry0", "retry3600", "retry1"
    )
    assert (state, attempts, last_error, errors, later) == ("queued", 0, None, [], True)


@pytest.mark.parametrize("task", [in_task_group, in_group])
async def test_a_cancel_in_a_group_cancels_the_job_keeping_the_other_errors(
    dsn: str, conn, task
) -> None:
    """Cancel in a group ends the job cancelled, with no retry, whatever else was raised with
    it (a Cancel says not to run it again); the other errors stay in its traceback."""
    state, _, last_error, errors, _ = await run_one(dsn, conn, task, "cancel", "boom", "retry5")
    assert (state, last_error) == ("cancelled", "cancelled: gave up (and 2 other exceptions)")
    assert "RuntimeError: boom" in errors[-1]["traceback"]
    state, _, last_error, errors, _ = await run_one(dsn, conn, task, "cancel", "cancel")
    assert (state, last_error) == ("cancelled", "cancelled: gave up; gave up")
    assert errors[-1]["traceback"] is None


@pytest.mark.parametrize("task", [in_task_group, in_group])
async def test_a_retry_in_a_group_with_an_error_is_a_failure(dsn: str, conn, task) -> None:
    """Retry beside a real error: the error matters, so it is a failure, as any is."""
    state, attempts, last_error, errors, _ = await run_one(dsn, conn, task, "retry0", "boom")
    assert (state, attempts) == ("failed", 1)
    assert last_error.startswith("ExceptionGroup: ")
    assert "RuntimeError: boom" in errors[-1]["traceback"]


@pytest.mark.parametrize("task", [long_message, long_message_in_child])
async def test_a_long_error_is_stored_and_logged_cut_to_its_ends(
    dsn: str, conn, task, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5 MB message went whole into last_error, errors and the job_failed log line: each is
    bounded, keeping the message's beginning and end."""
    caplog.set_level(logging.ERROR, "pgqueue")
    state, _, last_error, errors, _ = await run_one(dsn, conn, task, 5_000_000)
    assert state == "failed"
    traceback = errors[-1]["traceback"]
    for text in (last_error, traceback):
        assert len(text) <= TEXT_LIMIT and "characters cut ...]" in text
        assert text.rstrip().endswith("xxZ")
    assert last_error.startswith("RuntimeError: Axx")
    [line] = [r.getMessage() for r in caplog.records if r.__dict__.get("action") == "job_failed"]
    assert len(line) <= LOG_LIMIT + 200 and line.endswith("xxZ")
