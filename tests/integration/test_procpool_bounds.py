"""The process pool's bounds: a child's start, a call the child cannot read, the size of an
error's text."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pgqueue._errors import TEXT_LIMIT
from pgqueue._worker._procpool import (
    ChildLost,
    ChildStartTimeout,
    ProcessPool,
    RemoteError,
    _answer,
    _read,
    _sendable,
)
from tests.integration.procpool_tasks import ReadInChildOnly, exists

FIELDS = (1, "t", "cpu", 1, 3, {})


def _where(name: str) -> tuple[str, str]:
    return ("tests.integration.procpool_tasks", name)


async def test_a_child_whose_set_up_hangs_fails_the_call_once_its_start_limit_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's timeout stops while a child starts: a set-up that never returns (a
    database connect in Django's ready()) hung the call, and its job, forever. The start has
    a limit of its own; past it the child is killed and the call fails with an error that
    says so (not ChildLost: the job's "worker lost" would isolate its next attempt)."""
    pids = tmp_path / "pids"
    (tmp_path / "h84_hung_setup.py").write_text(
        "import os, time\n"
        "def setup():\n"
        f"    with open({str(pids)!r}, 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
        "    time.sleep(3600)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = ProcessPool(1, setup=("h84_hung_setup", "setup"), start_timeout=0.5)
    try:
        async with asyncio.timeout(120):  # the guard: the call used to hang here
            async with (timer := asyncio.timeout(600)):
                with pytest.raises(ChildStartTimeout, match=r"not ready within 0\.5 s"):
                    await pool.run(_where("size"), ["abc"], {}, FIELDS, timer)
            assert timer.when() is not None  # the caller's clock runs again
            [pid] = map(int, pids.read_text().split())
            while exists(pid):  # killed, and reaped off the loop
                await asyncio.sleep(0.01)
            with pytest.raises(ChildStartTimeout):  # the next call starts a new child
                await pool.run(_where("size"), ["abc"], {}, FIELDS)
        assert len(pids.read_text().split()) == 2
        assert not isinstance(ChildStartTimeout("x"), ChildLost)
    finally:
        pool.shutdown()


async def test_arguments_the_child_cannot_unpickle_are_the_calls_error() -> None:
    """A call whose arguments the child cannot unpickle (a class only the worker imports, a
    ``__setstate__`` that raises there) ended the child (child_failed), so the call failed
    as ChildLost, a "worker lost" retried in isolation. It is the call's own error, naming
    the unpickling problem, and the child serves on."""
    pool = ProcessPool(1)
    try:
        before = await pool.run(_where("pids"), [], {}, FIELDS)
        with pytest.raises(RemoteError, match="could not be read in its child process: Runtim"):
            await pool.run(_where("size"), [ReadInChildOnly()], {}, FIELDS)
        assert await pool.run(_where("pids"), [], {}, FIELDS) == before
        assert pool.recycled == 0
    finally:
        pool.shutdown()


def test_a_long_errors_traceback_is_sent_back_bounded() -> None:
    """A child sent a 5 MB message's traceback whole beside the exception (10 MB through the
    pipe); the worker keeps 64 KiB of it. The text is cut in the child, leaving the worker's
    redact-then-cut room enough that the child's cut never reaches what is stored."""
    message = "A" + "x" * 5_000_000 + "Z"
    answer = _answer(False, _sendable(RuntimeError(message)))
    assert len(answer) < len(message) + 5 * TEXT_LIMIT
    with pytest.raises(RuntimeError) as raised:
        _read(bytes(answer))
    assert str(raised.value) == message
    text = raised.value.__cause__.args[0]  # type: ignore[union-attr]
    assert "characters cut" in text and text.rstrip().endswith("xxZ")
