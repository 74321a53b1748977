"""What the executor records of a task's error texts: each through the app's redact before any
cut, which never leaves part of a secret."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import pgqueue
from pgqueue._errors import TEXT_LIMIT, clipped_through
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


async def test_redact_of_a_huge_message_sees_only_what_is_kept_and_a_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 50 MB message went through redact whole, twice (message, traceback): seconds of a
    plain regex for one failure. Now redact sees pieces of at most about 100,000 characters,
    and the message's two ends are kept as before."""
    seen: list[int] = []

    def measured(text: str) -> str:
        seen.append(len(text))
        return _redact(text)

    monkeypatch.setattr(app, "redact", measured)
    outcome = await _run(app, raises_long, "A" + "x" * 50_000_000 + "Z")
    assert seen and max(seen) <= TEXT_LIMIT + 64 * 1024
    assert outcome.error.startswith("RuntimeError: Axxx") and outcome.error.endswith("xxZ")
    assert outcome.traceback.endswith("xxZ\n") and len(outcome.traceback) <= TEXT_LIMIT


def _shrinking(text: str) -> str:
    """_redact, and long runs of filler dropped: the pieces come out much shorter."""
    return re.sub(r"a{1000}|b{1000}", "", _redact(text))


@pytest.mark.parametrize("redact", [_redact, _shrinking])
@pytest.mark.parametrize("where", ["cut", "head piece", "tail piece"])
def test_a_secret_across_any_cut_of_a_huge_text_is_never_half_kept(
    redact: Callable[[str], str], where: str
) -> None:
    """redact sees a huge text's two ends with a margin: a secret across the end of a piece
    is seen only in part, and is dropped with the margin, even when redact shortened the
    piece; one across the final cut is seen whole, and redacted."""
    head = (TEXT_LIMIT - 64) - (TEXT_LIMIT - 64) // 2  # characters of the beginning kept
    size = 5_000_000
    at = {"cut": head - 6, "head piece": head + 64 * 1024 - 6,
          "tail piece": size - (TEXT_LIMIT - 64) // 2 - 64 * 1024 - 6}[where]  # fmt: skip
    text = clipped_through("a" * at + _SECRET + "b" * (size - at - len(_SECRET)), redact)
    assert "characters cut" in text and len(text) <= TEXT_LIMIT
    assert "TOKEN" not in text and "456789" not in text
