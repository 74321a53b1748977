"""What the executor records of a task's error texts: each through the app's redact whole,
before any cut."""

from __future__ import annotations

import re
from typing import Any

import pytest

import pgqueue
from pgqueue._worker._executor import ClaimedJob, JobExecutor
from tests.integration import procpool_tasks

app = pgqueue.PgQueue()
# A secret that straddles the point where a 65,536-character text is cut (32,736 characters
# of its beginning are kept): cut first, its first characters escape a redact that knows it.
_SECRET = "TOKEN123456789"
_AROUND_THE_CUT = "a" * 32_730 + _SECRET + "b" * 100_000


def _redact(text: str) -> str:
    return re.sub(r"TOKEN[0-9]{9}|no reading", "[redacted]", text)


@app.task(queue="io", max_attempts=2)
async def raises_long(message: str) -> None:
    """Raise ``message``."""
    raise RuntimeError(message)


@app.task(queue="io", max_attempts=2)
async def cancels_long(message: str) -> None:
    """Cancel with ``message``."""
    raise pgqueue.Cancel(message)


async def _run(on: pgqueue.PgQueue, task: pgqueue.Task[Any, Any], *args: Any) -> Any:
    job = ClaimedJob(1, "io", task.name, list(args), {}, 1, 2, None, {})
    executor = JobExecutor(on, threads=1, processes=1)
    try:
        return await executor.run(job, job.context())
    finally:
        executor.shutdown()


@pytest.mark.parametrize("task", [raises_long, cancels_long])
async def test_redact_sees_a_long_message_whole_before_it_is_cut(
    monkeypatch: pytest.MonkeyPatch, task: pgqueue.Task[Any, Any]
) -> None:
    """The message was cut to 65,536 characters before redact saw it: a secret across the
    cut lost its end, and its beginning ("TOKEN1") escaped a redact that matches it whole."""
    monkeypatch.setattr(app, "redact", _redact)
    outcome = await _run(app, task, _AROUND_THE_CUT)
    assert "characters cut" in outcome.error
    assert "TOKEN" not in outcome.error and "TOKEN" not in (outcome.traceback or "")


async def test_a_value_that_cannot_be_read_back_is_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process task's return value the worker cannot unpickle ends its job failed with the
    unpickling error's text and traceback: stored without passing through redact."""
    monkeypatch.setattr(procpool_tasks.app, "redact", _redact)
    outcome = await _run(procpool_tasks.app, procpool_tasks.returns_unreadable)
    assert outcome.state == "failed"
    assert "[redacted]" in outcome.error
    assert "no reading" not in outcome.error + (outcome.traceback or "")
