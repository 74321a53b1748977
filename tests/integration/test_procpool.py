"""The worker's own process pool: one child per slot, reused, and killed when abandoned."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import traceback
from pathlib import Path

import pytest

import pgqueue
from pgqueue._errors import ResultUnsent
from pgqueue._worker._procchild import RemoteError
from pgqueue._worker._procpool import ChildLost, ProcessPool
from tests.integration.procpool_tasks import exists

FIELDS = (1, "t", "cpu", 1, 3, {})


def _where(name: str) -> tuple[str, str]:
    return ("tests.integration.tasks_app", name)


async def test_children_are_reused_and_exceptions_come_back_as_themselves() -> None:
    """Two calls run in the same child; a task's Retry is raised in the parent unchanged."""
    pool = ProcessPool(1)
    try:
        first = await pool.run(_where("process_pid"), [], {}, FIELDS)
        assert await pool.run(_where("process_pid"), [], {}, FIELDS) == first != os.getpid()
        with pytest.raises(pgqueue.Retry) as raised:
            await pool.run(_where("raises_retry"), [], {}, FIELDS)
        assert raised.value.delay == 1.5
    finally:
        pool.shutdown()


async def test_a_dying_child_is_reported_and_replaced() -> None:
    """A child that exits mid-call raises ChildLost; the next call gets a new child."""
    pool = ProcessPool(1)
    try:
        with pytest.raises(ChildLost):
            await pool.run(_where("dies"), [], {}, FIELDS)
        assert isinstance(await pool.run(_where("process_pid"), [], {}, FIELDS), int)
        assert pool.recycled == 1
    finally:
        pool.shutdown()


async def test_cancelling_the_caller_kills_the_child() -> None:
    """A timeout around a call kills the child that runs it, so its slot is free at once."""
    pool = ProcessPool(1)
    try:
        child = await pool.run(_where("process_pid"), [], {}, FIELDS)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await pool.run(_where("spin"), [60], {}, FIELDS)
        assert pool.recycled == 1
        async with asyncio.timeout(30):  # reaped off the event loop
            while exists(child):
                await asyncio.sleep(0.01)
        assert await pool.run(_where("process_pid"), [], {}, FIELDS) != child
    finally:
        pool.shutdown()


async def test_a_child_that_died_while_idle_is_replaced_before_a_call() -> None:
    """An idle child killed from outside (the OOM killer, an operator) is not handed a job: the
    call would fail as a lost worker, and spend an attempt of a job that never ran."""
    pool = ProcessPool(1)
    try:
        child = await pool.run(_where("process_pid"), [], {}, FIELDS)
        os.kill(child, signal.SIGKILL)
        while pool._idle[0].process.is_alive():
            await asyncio.sleep(0.01)
        assert await pool.run(_where("process_pid"), [], {}, FIELDS) != child
    finally:
        pool.shutdown()


async def test_children_outlive_their_watch_when_the_start_time_is_unknown(monkeypatch) -> None:
    """Where /proc cannot tell when the worker started, a child still runs its call to the end:
    its watch must not take the forkserver, its parent, for a worker that died."""
    import pgqueue._worker._procpool as procpool

    monkeypatch.setattr(procpool, "this_process", lambda: (None, None))
    pool = ProcessPool(1)
    try:
        assert isinstance(await pool.run(_where("spin"), [1.0], {}, FIELDS), int)
    finally:
        pool.shutdown()


def test_a_call_that_reaches_a_child_after_its_worker_died_is_not_run() -> None:
    """A child still starting when its worker was SIGKILLed finds the call sent before: it must
    not run it (the job is rescued and runs again elsewhere), but end without an answer. It
    used to run it, up to its watch's first look a quarter of a second later: in the fault
    suite a job's attempt 2 ran there after its attempt 3 had run on another worker."""
    import multiprocessing
    import subprocess

    from pgqueue._worker._liveness import process_started
    from pgqueue._worker._procchild import _child_main

    worker = subprocess.Popen(["sleep", "60"])
    started = process_started(worker.pid)
    worker.kill()
    worker.wait()
    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe()
    process = context.Process(target=_child_main, args=(child, worker.pid, started, ()))
    process.start()
    child.close()
    try:
        assert parent.recv_bytes() == b"ready"
        parent.send((_where("process_pid"), [], {}, FIELDS))
        with pytest.raises(EOFError):
            parent.recv()
    finally:
        process.kill()
        process.join()
        parent.close()


async def test_a_child_that_dies_is_seen_while_a_process_it_started_holds_its_pipe(
    tmp_path: Path,
) -> None:
    """A task that starts processes of its own by forking (``multiprocessing``'s default on
    Linux) hands them the child's end of the worker's pipe. The child's death went unseen
    until the last of them exited: the job stayed running, its lease kept alive, for as
    long as they lived (for ever, for a pool waiting on its work). Its exit is seen now."""
    pid_file = tmp_path / "grandchild"
    pool = ProcessPool(1)
    try:
        with pytest.raises(ChildLost):
            async with asyncio.timeout(60):  # the grandchild sleeps 120 s
                await pool.run(_where("dies_leaving_a_grandchild"), [str(pid_file)], {}, FIELDS)
        assert pool.recycled == 1
    finally:
        pool.shutdown()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


async def test_a_failed_setup_fails_each_call_with_the_same_traceback() -> None:
    """A child whose set-up raised fails every call with that error. Raising the one exception
    again and again grew its traceback by a frame per call (each job's longer to make and
    store, without end): each call reports the set-up's traceback as it was."""
    pool = ProcessPool(1, setups=(_where("setup_that_fails"),))
    traces = []
    try:
        for _ in range(4):
            with pytest.raises(RuntimeError, match="no settings") as raised:
                await pool.run(_where("process_pid"), [], {}, FIELDS)
            traces.append(str(raised.value.__cause__))
    finally:
        pool.shutdown()
    assert "in setup_that_fails" in traces[0]
    assert traces == traces[:1] * 4


async def test_how_a_lost_child_ended_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A child's death fails its job as "worker lost", which said nothing of the child, nor of
    how it ended: a segfault, the OOM killer's SIGKILL and an exit look alike. A WARNING
    (child_lost) names the job, the child and its exit status or signal."""
    pool = ProcessPool(1)
    try:
        with pytest.raises(ChildLost):
            await pool.run(_where("dies"), [], {}, FIELDS)
        child = await pool.run(_where("process_pid"), [], {}, FIELDS)
        killer = asyncio.get_running_loop().call_later(0.5, os.kill, child, signal.SIGKILL)
        with pytest.raises(ChildLost):
            await pool.run(_where("spin"), [60], {}, FIELDS)
        killer.cancel()
    finally:
        pool.shutdown()
    lost = [r for r in caplog.records if getattr(r, "action", None) == "child_lost"]
    assert [(r.levelname, r.job_id, r.exit_code) for r in lost] == [  # type: ignore[attr-defined]
        ("WARNING", 1, 3), ("WARNING", 1, -9)
    ]  # fmt: skip
    assert "exited with status 3" in lost[0].getMessage()
    assert f"child process {child} was killed by SIGKILL" in lost[1].getMessage()


async def test_a_task_exiting_78_is_lost_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Status 78 is a refused start's only while the child starts: a task of a started child
    that exits with it is a lost worker, and its child_lost record said the child refused to
    run a worker and that the attempt ended as ChildRefused."""
    pool = ProcessPool(1)
    try:
        with pytest.raises(ChildLost):
            await pool.run(_where("dies_configured"), [], {}, FIELDS)
    finally:
        pool.shutdown()
    [lost] = [r for r in caplog.records if getattr(r, "action", None) == "child_lost"]
    assert lost.exit_code == 78  # type: ignore[attr-defined]
    assert lost.getMessage().endswith("exited with status 78 before it answered; the attempt"
                                      " ends as worker lost")  # fmt: skip


async def test_an_exception_comes_back_with_the_child_traceback() -> None:
    """The frames of the task's code, lost when the exception was pickled, come back as its
    cause: the traceback stored for the attempt shows where the task failed."""
    pool = ProcessPool(1)
    try:
        with pytest.raises(ValueError, match="deep in the child") as raised:
            await pool.run(_where("process_fails_deep"), [], {}, FIELDS)
    finally:
        pool.shutdown()
    text = "".join(traceback.format_exception(raised.value))
    assert "in _fails_deep_in_the_child" in text
    assert text.rstrip().endswith("ValueError: deep in the child")


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("lock", "HoldsALock: the real failure"),
        ("args", "TakesTwo: cannot reach db.internal:5432"),
        ("reduce", "RefusesPickle: the real failure"),  # pickle's error has no text: it ended
    ],  # the child, the job "worker lost"
)
async def test_an_exception_that_cannot_cross_the_pipe_is_named_with_its_traceback(
    kind: str, error: str
) -> None:
    """An exception pickle cannot send (or the parent cannot rebuild) arrives as a RemoteError
    that names it, with its message and traceback; it said only what pickle refused."""
    pool = ProcessPool(1)
    try:
        with pytest.raises(RemoteError) as raised:
            await pool.run(_where("process_raises"), [kind], {}, FIELDS)
        assert pool.recycled == 0  # the child serves on
        assert isinstance(await pool.run(_where("process_pid"), [], {}, FIELDS), int)
    finally:
        pool.shutdown()
    assert str(raised.value).startswith(f"{error} (not sent back as itself: ")
    assert "in process_raises" in "".join(traceback.format_exception(raised.value))


async def test_a_value_whose_pickling_error_has_no_text_is_reported_as_unsent() -> None:
    """A return value pickle refuses with an error whose str() raises is reported as a value
    that could not be sent back; it ended the child, and the job failed as "worker lost"."""
    pool = ProcessPool(1)
    try:
        with pytest.raises(ResultUnsent, match="_Unprintable: <str"):
            await pool.run(_where("process_raises"), ["returned"], {}, FIELDS)
        assert pool.recycled == 0
    finally:
        pool.shutdown()


async def test_a_timeout_stopped_while_waiting_for_a_child_runs_again_after_the_wait() -> None:
    """The wait for a busy pool's child does not count towards the caller's timeout; the time
    it had left counts once the call has a child, and a call that overruns it is stopped. So
    after a wait that something else cancelled (a middleware's own, shorter timeout around the
    call, which then calls again): the timer had stayed stopped for good."""
    pool = ProcessPool(1)
    try:
        busy = asyncio.ensure_future(pool.run(_where("spin"), [1], {}, FIELDS))
        await asyncio.sleep(0)  # the first call takes the only child's turn
        async with asyncio.timeout(30):  # a bound for a timer that never ran again
            with pytest.raises(TimeoutError):
                async with (timer := asyncio.timeout(3)):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):  # expires while the call waits
                            await pool.run(_where("spin"), [60], {}, FIELDS, timer)
                    await pool.run(_where("spin"), [60], {}, FIELDS, timer)
        assert timer.expired()
        assert isinstance(await busy, int)
    finally:
        pool.shutdown()
