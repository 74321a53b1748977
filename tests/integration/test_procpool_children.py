"""The process pool: answers the worker cannot read, big calls, reaping, recycling, and how
children report their end."""

from __future__ import annotations

import asyncio
import json
import multiprocessing.process
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import pgqueue
from pgqueue._worker._procpool import ChildLost, ProcessPool, ResultUnread, _Slot
from tests.helpers import query, run_worker_until, states
from tests.integration import procpool_tasks as t
from tests.integration.procpool_tasks import exists

FIELDS = (1, "t", "cpu", 1, 3, {})
ROOT = Path(__file__).resolve().parents[2]


def _where(name: str) -> tuple[str, str]:
    return ("tests.integration.procpool_tasks", name)


async def test_a_value_the_worker_cannot_unpickle_is_not_an_error_of_the_task() -> None:
    """A return value the child pickled but the worker cannot unpickle arrives as
    ResultUnread, not as a RemoteError (an error, retried: the task ran again); the child
    serves on."""
    pool = ProcessPool(1)
    try:
        with pytest.raises(ResultUnread, match="RuntimeError: no reading this back"):
            await pool.run(_where("returns_unreadable"), [], {}, FIELDS)
        assert pool.recycled == 0
        assert await pool.run(_where("size"), ["abc"], {}, FIELDS) == 3
    finally:
        pool.shutdown()


@pytest.mark.parametrize("store_result", [True, False])
async def test_a_job_whose_value_cannot_be_read_back_is_not_retried(
    dsn: str, conn, store_result: bool
) -> None:
    """Its work is done: the job ends at attempt 1, failed with a clear error (or succeeded
    when its result is not stored), where it was retried, its side effects repeated."""
    task = t.returns_unreadable if store_result else t.returns_unreadable_unstored
    task.enqueue(conn)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["cpu"], poll_interval=0.05)
    ended = "failed" if store_result else "succeeded"
    await run_worker_until(worker, lambda: states(dsn).get(ended) == 1, timeout=60)
    [(attempts, last_error)] = query(dsn, "SELECT attempts, last_error FROM pgqueue.jobs")
    assert attempts == 1
    if store_result:
        assert last_error == (
            "the return value could not be read back from its child process:"
            " RuntimeError: no reading this back"
        )


async def test_a_big_call_to_a_child_that_does_not_read_leaves_the_loop_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 MB of arguments written to a child that reads nothing yet (one still starting, as
    it could be then; here one stopped by SIGSTOP) were written on the event loop, which
    froze until the child read them all. The child is let go on only by this test's
    coroutine, once the send has begun (or by a thread, after 30 s, to end a test that
    fails): it goes on only if the loop runs while the send is in progress."""
    sending = asyncio.Event()
    real_call = _Slot.call

    async def call(self: _Slot, message: tuple[object, ...]) -> object:
        sending.set()  # no await between this and the send's start
        return await real_call(self, message)

    pool = ProcessPool(1)
    woken: list[str] = []

    def wake(by: str) -> None:
        if not woken:
            woken.append(by)
            os.kill(child, signal.SIGCONT)

    try:
        child, _ = await pool.run(_where("pids"), [], {}, FIELDS)
        monkeypatch.setattr(_Slot, "call", call)
        os.kill(child, signal.SIGSTOP)
        rescue = threading.Timer(30, wake, ["a thread"])
        rescue.start()
        running = asyncio.ensure_future(pool.run(_where("size"), ["x" * 20_000_000], {}, FIELDS))
        await sending.wait()  # wakes only once the loop runs again
        wake("the event loop")
        assert await running == 20_000_000
        rescue.cancel()
    finally:
        pool.shutdown()
    assert woken == ["the event loop"]


async def test_killing_a_child_does_not_join_it_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child killed when its call is given up on was joined on the event loop (up to 5 s:
    a process in a disk write or a core dump takes a while to die). It is reaped in a
    thread."""
    joined_on: list[bool] = []
    real_join = multiprocessing.process.BaseProcess.join

    def join(self: multiprocessing.process.BaseProcess, timeout: float | None = None) -> None:
        joined_on.append(threading.current_thread() is threading.main_thread())
        real_join(self, timeout)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "join", join)
    pool = ProcessPool(1)
    try:
        await pool.run(_where("pids"), [], {}, FIELDS)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await pool.run(("tests.integration.tasks_app", "spin"), [60], {}, FIELDS)
        async with asyncio.timeout(30):
            while not joined_on:
                await asyncio.sleep(0.01)
    finally:
        pool.shutdown()
    assert joined_on[0] is False


async def test_children_are_replaced_after_max_tasks_per_child_calls() -> None:
    """max_tasks_per_child=2: every child answers two calls, then the next call has a new one;
    the old child exits by itself (its pipe closed), and no call fails for it."""
    pool = ProcessPool(1, max_tasks_per_child=2)
    try:
        seen = [(await pool.run(_where("pids"), [], {}, FIELDS))[0] for _ in range(5)]
        assert seen[0] == seen[1] != seen[2] == seen[3] != seen[4]
        assert (pool.retired, pool.recycled) == (2, 0)
        async with asyncio.timeout(30):
            while any(exists(pid) for pid in seen[:4]):
                await asyncio.sleep(0.01)
    finally:
        pool.shutdown()


async def test_a_child_blocks_no_signal_once_it_serves() -> None:
    """A child starts with SIGINT and SIGTERM blocked (held_signals), and unblocks them once
    it ignores them: left blocked, the programs its tasks run would inherit the mask, a
    SIGTERM to them held for good."""
    pool = ProcessPool(1)
    try:
        assert await pool.run(_where("blocked_signals"), [], {}, FIELDS) == ([], 0)
    finally:
        pool.shutdown()


async def test_a_retired_child_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A child replaced after max_tasks_per_child calls went unlogged: an operator saw pids
    change with no line saying why. Each retirement is an INFO child_retired record naming
    the child, the jobs it ran, and the job it ran last."""
    pool = ProcessPool(1, max_tasks_per_child=2)
    try:
        with caplog.at_level("INFO", logger="pgqueue.worker"):
            pids = [
                (await pool.run(_where("pids"), [], {}, (n, *FIELDS[1:])))[0] for n in (1, 2, 3)
            ]
    finally:
        pool.shutdown()
    retired = [r for r in caplog.records if getattr(r, "action", None) == "child_retired"]
    assert [(r.levelname, r.pid, r.jobs, r.job_id) for r in retired] == [  # type: ignore[attr-defined]
        ("INFO", pids[0], 2, 2)
    ]


async def test_a_failed_call_counts_towards_max_tasks_per_child() -> None:
    """A call whose task raised was answered: it counts, and the child is replaced after it."""
    pool = ProcessPool(1, max_tasks_per_child=1)
    try:
        with pytest.raises(ResultUnread):
            await pool.run(_where("returns_unreadable"), [], {}, FIELDS)
        with pytest.raises(pgqueue.Retry):
            await pool.run(("tests.integration.tasks_app", "raises_retry"), [], {}, FIELDS)
        assert pool.retired == 2
    finally:
        pool.shutdown()


@pytest.mark.parametrize("forkserver_ends", ["first", "a moment after"])
async def test_a_child_lost_with_its_forkserver_says_its_status_is_unknown(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, forkserver_ends: str
) -> None:
    """Once the forkserver is gone, multiprocessing reports any child's end as status 255:
    child_lost said "exited with status 255" of a child killed by a signal. It says the
    status is unknown, and carries no exit code. The end of the child's pipe can also be
    seen before the forkserver's (killed together, its death processed later): "a moment
    after" stops the forkserver, so that it cannot write the child's status, and kills it
    only once the pool, the child found lost, waits for that status; a single look at its
    sentinel then said 255. (It was killed 0.3 s after the child, by the clock: under load
    the pool found the child lost only after that, or saw the forkserver's end only after
    its 1 s wait, and the test failed or tested the other case.)"""
    stopped_when_found_lost: list[bool] = []
    pool = ProcessPool(1)
    try:
        child, forkserver = await pool.run(_where("pids"), [], {}, FIELDS)
        if forkserver_ends == "a moment after":
            monkeypatch.setattr(_Slot, "status_written", _killing_first(
                _Slot.status_written, forkserver, stopped_when_found_lost
            ))  # fmt: skip
        running = asyncio.ensure_future(
            pool.run(("tests.integration.tasks_app", "spin"), [60], {}, FIELDS)
        )
        await asyncio.sleep(0.2)
        os.kill(forkserver, signal.SIGKILL if forkserver_ends == "first" else signal.SIGSTOP)
        os.kill(child, signal.SIGKILL)
        with pytest.raises(ChildLost):
            async with asyncio.timeout(30):
                await running
    finally:
        pool.shutdown()
    assert stopped_when_found_lost == ([True] if forkserver_ends == "a moment after" else [])
    [lost] = [r for r in caplog.records if getattr(r, "action", None) == "child_lost"]
    assert lost.exit_code is None  # type: ignore[attr-defined]
    assert "exit status unknown (its forkserver is gone)" in lost.getMessage()
    # The next pool starts a new forkserver.
    pool = ProcessPool(1)
    try:
        assert (await pool.run(_where("pids"), [], {}, FIELDS))[1] != forkserver
    finally:
        pool.shutdown()


async def test_a_child_whose_forkserver_wrote_no_status_in_time_is_not_said_to_exit_255(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forkserver slow to die under load: the pool's wait for the lost child's status
    ended first, the forkserver then ended with the status unwritten, and multiprocessing's
    255 was reported as "exited with status 255". Here the forkserver is stopped when the
    child is killed, and killed only once that wait (0.2 s) is over. The record says the
    status is unknown, its forkserver having written none within the wait."""
    pool = ProcessPool(1)
    try:
        child, forkserver = await pool.run(_where("pids"), [], {}, FIELDS)
        monkeypatch.setattr(_Slot, "status_written", _killing_after(
            _Slot.status_written, forkserver
        ))  # fmt: skip
        running = asyncio.ensure_future(
            pool.run(("tests.integration.tasks_app", "spin"), [60], {}, FIELDS)
        )
        await asyncio.sleep(0.2)
        os.kill(forkserver, signal.SIGSTOP)
        os.kill(child, signal.SIGKILL)
        with pytest.raises(ChildLost):
            async with asyncio.timeout(30):
                await running
    finally:
        pool.shutdown()
    [lost] = [r for r in caplog.records if getattr(r, "action", None) == "child_lost"]
    assert lost.exit_code is None  # type: ignore[attr-defined]
    assert "its exit status unknown (its forkserver wrote none within" in lost.getMessage()


def _killing_after(
    status_written: Callable[[_Slot, float], Awaitable[bool]], forkserver: int
) -> Callable[[_Slot], Awaitable[bool]]:
    """``_Slot.status_written`` given 0.2 s, that kills the (stopped) ``forkserver`` once
    that wait is over, while the pool reaps the child."""

    async def killing(slot: _Slot) -> bool:
        written = await status_written(slot, 0.2)
        asyncio.get_running_loop().call_later(0.2, os.kill, forkserver, signal.SIGKILL)
        return written

    return killing


def _killing_first(
    status_written: Callable[[_Slot, float], Awaitable[bool]], forkserver: int, stopped: list[bool]
) -> Callable[[_Slot], Awaitable[bool]]:
    """``_Slot.status_written`` that notes whether ``forkserver`` is stopped (not yet killed)
    and kills it 0.3 s in: a wait that returned at once, before the forkserver ended, is
    seen whatever the load. Given 60 s, not 1, the wait does not end first on a machine
    slow to end the forkserver."""

    async def killing(slot: _Slot) -> bool:
        stopped.append(_state(forkserver) == "T")
        asyncio.get_running_loop().call_later(0.3, os.kill, forkserver, signal.SIGKILL)
        return await status_written(slot, 60.0)

    return killing


def _state(pid: int) -> str:
    """The state letter of process ``pid`` (T: stopped), from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


CHILD_FAILS = """
import multiprocessing, os, pickle
from pgqueue._logging import configure_logging, configured_logging
from pgqueue._worker._liveness import this_process
from pgqueue._worker._procchild import _child_main

if __name__ == "__main__":
    configure_logging("info", "json")
    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe()
    process = context.Process(
        target=_child_main,
        args=(child, os.getpid(), this_process()[1], (), configured_logging()),
    )
    process.start()
    child.close()
    parent.send_bytes(pickle.dumps("not a call"))
    process.join(60)
    print(process.exitcode)
"""


def test_an_error_that_ends_a_child_is_logged_as_the_worker_logs(tmp_path: Path) -> None:
    """An error escaping a child's loop (here, a message that is no call) was printed by
    multiprocessing as a text traceback, amid the worker's JSON lines. It is a JSON record
    (child_failed), and the child exits with status 1."""
    script = tmp_path / "child_fails.py"
    script.write_text(CHILD_FAILS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.stdout.strip() == "1", ran.stderr
    records = [json.loads(line) for line in ran.stderr.splitlines() if line.strip()]
    [failed] = [r for r in records if r.get("action") == "child_failed"]
    assert failed["level"] == "error"
    assert "ValueError" in failed["exception"]


WATCH_FAILS = """
import multiprocessing, sys
from pgqueue._logging import configure_logging, configured_logging
from pgqueue._worker._procchild import _child_main

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    configure_logging("info", "json")
    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe()
    process = context.Process(  # "no pid": the watch's first look raises
        target=_child_main,
        args=(child, "no pid", None, (("h90_slow_setup", "setup"),), configured_logging()),
    )
    process.start()
    child.close()
    print(parent.recv_bytes().decode(), flush=True)  # its set-up is done
    parent.close()  # the child's loop ends
    process.join(60)
"""


def test_an_error_in_the_watch_during_the_set_up_is_logged_as_the_worker_logs(
    tmp_path: Path,
) -> None:
    """The child set its logging up only after the app's set-up: an error before (here, in the
    thread that watches its worker, a quarter of a second in, while the set-up runs) was
    printed as a text traceback amid the worker's JSON lines. It is a JSON record too."""
    (tmp_path / "h90_slow_setup.py").write_text("import time\ndef setup():\n    time.sleep(1)\n")
    script = tmp_path / "watch_fails.py"
    script.write_text(WATCH_FAILS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.stdout.strip() == "ready", ran.stderr
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), ran.stderr
    [failed] = [json.loads(line) for line in lines]
    assert failed["action"] == "uncaught_exception"
    assert "thread pgqueue-worker-watch" in failed["message"], failed
    assert "TypeError" in failed["exception"]


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_max_tasks_per_child_must_be_a_whole_number_of_one_or_more(value: object) -> None:
    """Worker(max_tasks_per_child=...) takes None or an int >= 1; anything else is a
    ValueError naming it, when the worker is built."""
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        t.app.worker(dsn="postgresql://nowhere/x", max_tasks_per_child=value)


async def test_a_childs_start_does_not_count_towards_the_callers_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that needs a new child (the first, or the next after a child was replaced for
    max_tasks_per_child) waited for its start, and the app's set-up in it (Django's), on the
    job's timeout: a slow set-up timed jobs out, so that a replacement cost a job its
    attempt. The caller's timer stops until the child is ready."""
    gate, setting_up = tmp_path / "gate", tmp_path / "setting-up"
    (tmp_path / "h79_slow_setup.py").write_text(
        "import os, pathlib, time\n"
        "def setup():\n"
        f"    pathlib.Path({str(setting_up)!r}).touch()\n"
        "    deadline = time.monotonic() + 60\n"
        f"    while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = ProcessPool(1, setups=(("h79_slow_setup", "setup"),))
    try:
        async with (timer := asyncio.timeout(600)):
            running = asyncio.ensure_future(pool.run(_where("size"), ["abc"], {}, FIELDS, timer))
            async with asyncio.timeout(60):
                while not setting_up.exists():
                    await asyncio.sleep(0.01)
            stopped = timer.when() is None
            gate.touch()
            assert await running == 3
        assert stopped
        assert timer.when() is not None  # running again, with the time it had left
    finally:
        pool.shutdown()


async def test_a_child_whose_set_up_ends_it_is_lost_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child that dies in the app's set-up, before it is ready, fails the call that started
    it as lost (the job's "worker lost"), logged as child_lost with its exit status."""
    (tmp_path / "h79_fatal_setup.py").write_text("import os\ndef setup():\n    os._exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = ProcessPool(1, setups=(("h79_fatal_setup", "setup"),))
    try:
        with pytest.raises(ChildLost):
            await pool.run(_where("size"), ["abc"], {}, FIELDS)
    finally:
        pool.shutdown()
    [lost] = [r for r in caplog.records if getattr(r, "action", None) == "child_lost"]
    assert (lost.job_id, lost.exit_code) == (1, 3)  # type: ignore[attr-defined]
    assert pool.recycled == 1
