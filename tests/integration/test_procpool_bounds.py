"""The process pool's bounds: a child's start, a call the child cannot read, the size of an
error's text, an answer read as it arrives."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pgqueue._errors import TEXT_LIMIT
from pgqueue._worker._procchild import RemoteError, _answer, _sendable
from pgqueue._worker._procpool import ChildLost, ChildStartTimeout, ProcessPool, _read, _Slot
from tests.integration.procpool_tasks import ReadInChildOnly, exists

FIELDS = (1, "t", "cpu", 1, 3, {})


def _where(name: str) -> tuple[str, str]:
    return ("tests.integration.procpool_tasks", name)


async def test_a_child_whose_set_up_hangs_fails_the_call_once_its_start_limit_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller's timeout stops while a child starts: a set-up that never returns (a
    database connect in Django's ready()) hung the call, and its job, forever. The start has
    a limit of its own; past it the child is killed and the call fails with an error that
    says so (not ChildLost: the job's "worker lost" would isolate its next attempt), and a
    record of its own says so too (child_start_timeout): only the job's error did."""
    (tmp_path / "h84_hung_setup.py").write_text("import time\ndef setup():\n    time.sleep(3600)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    started: list[int] = []
    start = _Slot.__init__

    def recorded(slot: _Slot, *args: Any) -> None:
        start(slot, *args)
        started.append(slot.process.pid)  # type: ignore[arg-type]

    monkeypatch.setattr(_Slot, "__init__", recorded)
    pool = ProcessPool(1, setups=(("h84_hung_setup", "setup"),), start_timeout=0.5)
    try:
        async with asyncio.timeout(120):  # the guard: the call used to hang here
            async with (timer := asyncio.timeout(600)):
                with pytest.raises(ChildStartTimeout, match=r"not ready within 0\.5 s"):
                    await pool.run(_where("size"), ["abc"], {}, FIELDS, timer)
            assert timer.when() is not None  # the caller's clock runs again
            [pid] = started
            while exists(pid):  # killed, and reaped off the loop
                await asyncio.sleep(0.01)
            with pytest.raises(ChildStartTimeout):  # the next call starts a new child
                await pool.run(_where("size"), ["abc"], {}, FIELDS)
        assert len(started) == 2
        assert not isinstance(ChildStartTimeout("x"), ChildLost)
        timeouts = [r for r in caplog.records if getattr(r, "action", "") == "child_start_timeout"]
        seen = [(r.levelname, r.__dict__["pid"], r.__dict__["timeout"]) for r in timeouts]
        assert seen == [("WARNING", pid, 0.5), ("WARNING", started[1], 0.5)]
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


async def test_a_big_answer_is_read_as_it_arrives_without_holding_the_loop() -> None:
    """Once the pipe was readable, the whole answer was read in one blocking call: the loop
    (every other job, the heartbeats) stood still until its last byte came (0.05 to 0.2 s
    for 20 MB; for ever, were the child stopped mid-answer). It is read as it arrives."""
    parent, child = multiprocessing.Pipe()
    slot = object.__new__(_Slot)  # a slot whose "child" is this test, in a thread
    slot.conn, slot.orphaned, slot.calls = parent, True, 0
    os.set_blocking(parent.fileno(), False)
    answer = bytes(_answer(True, "x" * 2_000_000))
    half_sent, loop_ran = threading.Event(), threading.Event()
    seen: list[bool] = []

    def play_the_child() -> None:
        child.recv_bytes()  # the call
        half = len(answer) // 2
        child._send(struct.pack("!i", len(answer)) + answer[:half])  # type: ignore[attr-defined]
        half_sent.set()
        seen.append(loop_ran.wait(60))  # the loop goes on meanwhile, or did not
        child._send(answer[half:])  # type: ignore[attr-defined]

    thread = threading.Thread(target=play_the_child)
    thread.start()
    try:
        calling = asyncio.ensure_future(slot.call((("m", "f"), [], {}, FIELDS)))
        while not half_sent.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the loop's next look at the pipe sees the half: it reads
        loop_ran.set()
        assert await calling == "x" * 2_000_000
    finally:
        thread.join(120)
        parent.close()
        child.close()
    assert seen == [True]


async def test_a_retired_child_slow_to_exit_does_not_hold_up_the_next_childs_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retired children were joined in the event loop's default executor (6 threads on 2
    CPUs), for up to their grace each when they did not exit (a thread a task left behind):
    with max_tasks_per_child=1, enough of them took every thread, and the next child's start
    (made in that executor too, as are psycopg's DNS look-ups) waited behind them."""
    monkeypatch.setattr("pgqueue._worker._procpool._RETIRE_GRACE", 600.0)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    pool = ProcessPool(1, max_tasks_per_child=1)
    held = None
    try:
        held = await pool.run(_where("leaves_a_thread"), [], {}, FIELDS)  # retired; lingers
        async with asyncio.timeout(60):
            assert await pool.run(_where("size"), ["abc"], {}, FIELDS) == 3
        assert exists(held)
    finally:
        if held is not None:
            os.kill(held, signal.SIGKILL)
        pool.shutdown()
