"""Crashed workers on the same host are rescued at once; a job that crashed runs isolated."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import ConfigurationError, PgQueue, _store
from pgqueue._worker._liveness import host_key, process_started
from tests.helpers import query, run_worker_until, states, wait_blocked
from tests.integration import tasks_app as t


def _register(
    dsn: str, name: str, pid: int, started: int | None, key: str | None, heartbeat: float = 10.0
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        _store.run(cur, _store.workers_register(name, "h", pid, "{}", "0", heartbeat, key, started))


def _claim_for(dsn: str, worker: str, lease: float = 600) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        _store.run(cur, _store.jobs_claim(worker, {"io": 10}, lease))


def _dead_process() -> tuple[int, int]:
    """The pid and start time of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = process_started(child.pid)
    assert started is not None
    child.kill()
    child.wait()
    return child.pid, started


async def test_jobs_of_a_dead_worker_on_this_host_are_rescued_before_their_lease(
    dsn: str, conn
) -> None:
    """A worker whose process is gone gives its jobs back on the next sweep, lease or not."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    pid, started = _dead_process()
    _register(dsn, "crashed", pid, started, host_key())
    _claim_for(dsn, "crashed", lease=600)
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, rescue_interval=0.1)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT attempts, errors->0->>'error' FROM pgqueue.jobs WHERE id = %s",
                 [job_id]) == [(2, "worker lost")]  # fmt: skip
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes WHERE id = 'crashed'") == []


async def test_live_or_foreign_workers_keep_their_jobs_until_the_lease(dsn: str, conn) -> None:
    """Alive (this process), another namespace, or an unreadable start time: the lease decides."""
    t.add.enqueue_many(conn, [((i, i), {}) for i in range(3)])
    conn.commit()
    dead_pid, dead_started = _dead_process()
    me = process_started(os.getpid())
    for name, pid, started, key in [
        ("alive", os.getpid(), me, host_key()),
        ("elsewhere", dead_pid, dead_started, "another-boot:1"),
        ("unknown", dead_pid, None, host_key()),
    ]:
        _register(dsn, name, pid, started, key)
        with psycopg.connect(dsn, autocommit=True) as c, c.cursor() as cur:
            _store.run(cur, _store.jobs_claim(name, {"io": 1}, 600))
    worker = t.app.worker(dsn=dsn, queues={"io": 1})
    try:
        await worker.maintain()
    finally:
        await worker._close_connections()
    running = "SELECT worker_id FROM pgqueue.jobs WHERE state = 'running' ORDER BY 1"
    assert query(dsn, running) == [("alive",), ("elsewhere",), ("unknown",)]


def test_a_reused_pid_counts_as_dead(dsn: str) -> None:
    """The same pid with another start time is another process: the registered one is gone."""
    from pgqueue._worker._liveness import is_dead

    me = process_started(os.getpid())
    assert me is not None
    assert not is_dead(os.getpid(), me)
    assert is_dead(os.getpid(), me - 1)
    assert is_dead(_dead_process()[0], 1)


async def test_a_restarted_worker_takes_back_its_dead_namesakes_jobs_at_start(
    dsn: str, conn
) -> None:
    """A worker started under the name of a dead one rescues that one's jobs before claiming."""
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    pid, started = _dead_process()
    _register(dsn, "web-1", pid, started, host_key())
    _claim_for(dsn, "web-1", lease=600)
    worker = t.app.worker(dsn=dsn, name="web-1", queues=["io"], rescue_interval=600)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT attempts, worker_id FROM pgqueue.jobs") == [(2, "web-1")]


async def test_a_name_a_live_worker_on_this_host_holds_is_refused(dsn: str, conn) -> None:
    """Two live workers under one name shared one registration row: when either died, the
    rescue of dead workers gave back the jobs the other was still running. A second worker
    now refuses the name, and takes nothing; the holder keeps its jobs."""
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_started(holder.pid)
        _register(dsn, "twin", holder.pid, started, host_key())
        _claim_for(dsn, "twin", lease=600)
        worker = t.app.worker(dsn=dsn, name="twin", queues=["io"])
        with pytest.raises(ConfigurationError) as refused:
            await asyncio.wait_for(worker.run(), 30)  # before: it ran, and would never end
        assert str(refused.value) == (
            f"worker name 'twin' is taken by a live worker on this host (pid {holder.pid}): give"
            " each worker its own --name, or leave it out for a unique one"
        )
        assert query(dsn, "SELECT state, worker_id FROM pgqueue.jobs") == [("running", "twin")]
    finally:
        holder.kill()
        holder.wait()


async def test_a_name_seen_lately_on_another_host_is_taken_with_a_warning(
    dsn: str, conn, caplog: pytest.LogCaptureFixture
) -> None:
    """On another host the holder may be this worker's own earlier life, moved (a pod
    rescheduled): the name is taken, with a warning, once the holder has not beaten for one
    and a half of its heartbeats; a name unseen for three heartbeats is taken silently."""
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    _register(dsn, "moved", 4242, 1, "another-boot:1", heartbeat=2.0)
    _register(dsn, "long-gone", 4243, 1, "another-boot:1")
    query(dsn, "UPDATE pgqueue.worker_processes SET last_seen_at = now() - interval '1 h'"
               " WHERE id = 'long-gone'")  # fmt: skip
    for name in ("moved", "long-gone"):
        worker = t.app.worker(dsn=dsn, name=name, queues=["io"], burst=True, poll_interval=0.05)
        with caplog.at_level(logging.WARNING, logger="pgqueue.worker"):
            await worker.run()
    warned = [r.worker for r in caplog.records if getattr(r, "action", "") == "worker_name_in_use"]
    assert warned == ["moved"]
    assert states(dsn) == {"succeeded": 1}


async def test_a_name_a_live_worker_on_another_host_holds_is_refused(dsn: str, conn) -> None:
    """A holder on another host that beats while the new worker watches its name is alive:
    before, the name was taken with a warning, and the two rescued each other's running jobs
    (the holder's were given back as soon as the newcomer's namesake row looked dead)."""
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    _register(dsn, "twin", 4242, 1, "another-boot:1", heartbeat=1.0)
    _claim_for(dsn, "twin", lease=600)
    stop = threading.Event()

    def beat() -> None:  # the holder's heartbeats, every 0.2 s
        with psycopg.connect(dsn, autocommit=True) as beating:
            while not stop.wait(0.2):
                beating.execute(
                    "UPDATE pgqueue.worker_processes SET last_seen_at = now() WHERE id = 'twin'"
                )

    beater = threading.Thread(target=beat)
    beater.start()
    try:
        worker = t.app.worker(dsn=dsn, name="twin", queues=["io"])
        with pytest.raises(ConfigurationError) as refused:
            await asyncio.wait_for(worker.run(), 30)
    finally:
        stop.set()
        beater.join()
    assert str(refused.value).startswith(
        "worker name 'twin' is taken by a live worker on h (pid 4242), seen "
    )
    assert str(refused.value).endswith(
        " s ago: give each worker its own --name, or leave it out for a unique one"
    )
    assert query(dsn, "SELECT state, worker_id FROM pgqueue.jobs") == [("running", "twin")]
    assert query(dsn, "SELECT pid FROM pgqueue.worker_processes WHERE id = 'twin'") == [(4242,)]


async def test_a_job_whose_worker_died_runs_its_next_attempt_in_a_child(dsn: str, conn) -> None:
    """After 'worker lost', sync and async tasks alike run in a child process, with context."""
    sync_id = t.sync_pid.enqueue(conn)
    async_id = t.async_pid.enqueue(conn)
    plain_id = t.async_pid.enqueue(conn)
    conn.commit()
    query(dsn, "UPDATE pgqueue.active_jobs SET attempts = 1, last_error = 'worker lost' "
               "WHERE id <> %s", [plain_id])  # fmt: skip
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 3)
    results = dict(query(dsn, "SELECT id, result FROM pgqueue.jobs"))
    assert results[sync_id] != os.getpid()
    assert results[async_id][0] != os.getpid() and results[async_id][1] == 2
    assert results[plain_id] == [os.getpid(), 1]


async def test_an_isolated_job_whose_child_start_times_out_stays_isolated(
    dsn: str, conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job isolated after a crash whose child was not ready within child_start_timeout
    (the app's process set-up hung) ended as ChildStartTimeout: no longer 'worker lost', its
    next attempt ran in the worker it may take down, though it had not yet run apart from it.
    It ends as 'worker lost' again, the start timeout (the worker's option) in its traceback."""
    (tmp_path / "h90_hung_setup.py").write_text("import time\ndef setup():\n    time.sleep(3600)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(t.app, "_process_setup", ("h90_hung_setup", "setup"))
    job_id = t.sync_pid.enqueue(conn)
    conn.commit()
    query(dsn, "UPDATE pgqueue.active_jobs SET attempts = 1, last_error = 'worker lost'")
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, child_start_timeout=0.5)

    def errors() -> list[Any]:
        [(found,)] = query(dsn, "SELECT errors FROM pgqueue.jobs WHERE id = %s", [job_id])
        return list(found)

    await run_worker_until(worker, lambda: len(errors()) >= 1)
    first = errors()[0]
    assert (first["attempt"], first["error"]) == (2, "worker lost")
    assert "ChildStartTimeout: its child process was not ready within 0.5 s" in first["traceback"]


async def test_isolation_can_be_switched_off(dsn: str, conn) -> None:
    """isolate_crashed=False runs the retry in the worker process as usual."""
    job_id = t.async_pid.enqueue(conn)
    conn.commit()
    query(dsn, "UPDATE pgqueue.active_jobs SET attempts = 1, last_error = 'worker lost'")
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, isolate_crashed=False)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT result FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        ([os.getpid(), 2],)
    ]


def test_a_task_a_child_cannot_import_is_not_isolated() -> None:
    """Tasks defined in a function (or in __main__) run in the worker even after a crash."""
    from pgqueue._worker._executor import _importable

    # On an app of its own: registered on the shared test app, it stayed there, a task of
    # queue default that later tests of that app's queues saw.
    @PgQueue().task(name="tests.local_only")
    def local_only() -> None:
        """Defined in a function: no module attribute leads to it."""

    assert _importable(t.sync_pid) and _importable(t.async_pid)
    assert not _importable(local_only)
    # A user's functools.wraps decorator under @app.task: the child finds that wrapper.
    assert _importable(t.decorated_pid)


def test_embedded_installs_step_through_every_revision(empty_dsn: str) -> None:
    """Installing the newest revision from nothing, or from 0001, runs each revision once."""
    from pgqueue._embed import install_revision, installed_revision
    from pgqueue._schema import SCHEMA_REVISION

    ran: list[str] = []
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:

        def run_file(text: str) -> None:
            ran.append(text)
            cur.execute(text.encode())

        assert install_revision(cur, "0001", run_file)
        first = len(ran)
        assert install_revision(cur, SCHEMA_REVISION, run_file)
        assert not install_revision(cur, "0001", run_file)
        assert installed_revision(cur) == SCHEMA_REVISION
        conn.commit()
    assert len(ran) > first and any("host_key" in text for text in ran[first:])
    column = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'host_key'"
    assert query(empty_dsn, column) == [(1,)]


async def test_a_running_worker_whose_row_was_pruned_registers_again(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Other workers prune a row unseen for ten heartbeats (a long network partition), and
    heartbeats only update it: the worker ran on without one, missing from `pgqueue workers`
    and from its neighbours' liveness checks. Its maintenance pass now puts it back."""
    worker = t.app.worker(dsn=dsn, name="w-again", queues=["io"], rescue_interval=0.1)
    row = "SELECT id, pid, hostname, queues FROM pgqueue.worker_processes"
    registered: list[tuple[object, ...]] = []

    def pruned_then_back() -> bool:
        rows = query(dsn, row)
        if not registered and rows:
            registered.extend(rows)
            query(dsn, "DELETE FROM pgqueue.worker_processes WHERE id = 'w-again'")
            return False
        return bool(registered) and rows == registered

    with caplog.at_level(logging.WARNING, logger="pgqueue.worker"):
        await run_worker_until(worker, pruned_then_back)
    assert registered == [("w-again", os.getpid(), socket.gethostname(), {"io": 10})]
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert "worker_reregistered" in actions


LOCK_WORKER = "SELECT 1 FROM pgqueue.worker_processes WHERE id = %s FOR UPDATE"


def _sweeps_racing(dsn: str, first: _store.Query[Any], second: _store.Query[Any]) -> None:
    """Run ``first`` and ``second`` at once, each on a connection of its own, while two other
    sessions hold the rows of 'dead-a' and 'dead-b' locked: 'dead-a' is let go once both
    sweeps wait, 'dead-b' once ``first`` waits again. Whichever order the two sweeps lock
    the rows in, each has then taken its first row before it asks for its second."""
    errors: list[BaseException] = []

    def sweep(conn: psycopg.Connection[Any], q: _store.Query[Any]) -> None:
        try:
            with conn.cursor() as cur:
                _store.run(cur, q)
        except BaseException as exc:
            errors.append(exc)

    conns = [psycopg.connect(dsn, autocommit=autocommit) for autocommit in (0, 0, 1, 1)]
    holder_a, holder_b, one, two = conns
    try:
        holder_a.execute(LOCK_WORKER, ["dead-a"])
        holder_b.execute(LOCK_WORKER, ["dead-b"])
        threads = []
        for conn, q in ((one, first), (two, second)):
            threads.append(threading.Thread(target=sweep, args=(conn, q)))
            threads[-1].start()
            wait_blocked(dsn, conn.info.backend_pid)
        holder_a.commit()
        wait_blocked(dsn, one.info.backend_pid, besides=holder_a.info.backend_pid)
        holder_b.commit()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        for conn in conns:
            conn.close()
    assert errors == []
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []


def test_two_sweeps_rescuing_the_same_dead_workers_do_not_deadlock(dsn: str) -> None:
    """Two workers on one host rescue the same two dead neighbours at once, each naming them
    in the order it read them (no ORDER BY: a row moves at each heartbeat). The rows were
    locked in the order given: each sweep took one and waited for the other, and PostgreSQL
    failed one with 'deadlock detected' (a maintenance_error with its traceback). Both now
    lock them in one order, and both end without error."""
    dead = [("dead-a", 1, 1), ("dead-b", 2, 2)]
    for name, pid, started in dead:
        _register(dsn, name, pid, started, "a-host")
    _sweeps_racing(dsn, _store.leases_rescue(dead), _store.leases_rescue(dead[::-1]))


def test_a_sweep_and_a_prune_of_the_same_dead_workers_do_not_deadlock(dsn: str) -> None:
    """A worker rescues two dead neighbours while another prunes their rows (unseen for ten
    heartbeats). The prune deleted rows in the order the table held them, the rescue in
    another: each waited for the other's row, and one failed with 'deadlock detected'. Both
    now lock dead workers' rows in the order of their names."""
    dead = [("dead-a", 1, 1), ("dead-b", 2, 2)]
    for name, pid, started in dead[::-1]:  # the table holds dead-b first
        _register(dsn, name, pid, started, "a-host")
    query(dsn, "UPDATE pgqueue.worker_processes SET last_seen_at = now() - interval '1 hour'")
    _sweeps_racing(dsn, _store.leases_rescue(dead), _store.workers_prune())


async def test_a_dead_workers_job_locked_during_a_sweep_is_rescued_by_the_next_one(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A sweep skips a job of a dead neighbour that a session holds locked (a cancel being
    written, say). It deleted the dead worker's row all the same, and the next sweep no longer
    knew of it: the job waited for its lease (600 s here), not the rescue interval the same-host
    check promises. The row now stays until every job of the dead worker is rescued."""
    ids = t.add.enqueue_many(conn, [((1, 2), {}), ((3, 4), {})])
    conn.commit()
    pid, started = _dead_process()
    _register(dsn, "crashed", pid, started, host_key())
    _claim_for(dsn, "crashed", lease=600)
    worker = t.app.worker(dsn=dsn, queues=["io"])
    job_state = "SELECT id, state FROM pgqueue.jobs ORDER BY id"
    try:
        with psycopg.connect(dsn) as stuck:
            stuck.execute("SELECT 1 FROM pgqueue.active_jobs WHERE id = %s FOR UPDATE", [ids[1]])
            await worker.rescue()
            stuck.rollback()
        assert query(dsn, job_state) == [(ids[0], "queued"), (ids[1], "running")]
        await worker.rescue()
    finally:
        await worker._close_connections()
    assert query(dsn, job_state) == [(ids[0], "queued"), (ids[1], "queued")]
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes WHERE id = 'crashed'") == []


async def test_a_raising_rescue_listener_is_logged_and_the_pass_goes_on(
    dsn: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A rescue listener (the metrics count rescues with one) that raises is logged like the
    other listeners; the listeners after it are still told, and the maintenance pass goes on
    to forget dead workers (the exception used to end the pass there, every pass)."""
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    pid, started = _dead_process()
    _register(dsn, "crashed", pid, started, host_key())
    _claim_for(dsn, "crashed", lease=600)
    _register(dsn, "long-gone", 4243, 1, "another-boot:1")
    query(dsn, "UPDATE pgqueue.worker_processes SET last_seen_at = now() - interval '1 day'"
               " WHERE id = 'long-gone'")  # fmt: skip
    worker = t.app.worker(dsn=dsn, queues=["io"])
    told: list[tuple[int, int]] = []
    worker.events.rescue_listeners += [
        lambda requeued, failed: 1 / 0,
        lambda requeued, failed: told.append((requeued, failed)),
    ]
    try:
        with caplog.at_level(logging.ERROR, logger="pgqueue.worker"):
            await worker.maintain()
    finally:
        await worker._close_connections()
    assert told == [(1, 0)]
    errors = [r for r in caplog.records if getattr(r, "action", "") == "listener_error"]
    assert len(errors) == 1
    assert query(dsn, "SELECT state FROM pgqueue.jobs") == [("queued",)]
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes WHERE id = 'long-gone'") == []


async def test_a_worker_whose_name_a_namesake_takes_says_so_and_stops(
    dsn: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers starting at about the same moment under one name both pass the check at
    start, and heartbeat one row. The one whose row the other took notices at its next
    heartbeat: it logs worker_name_taken once, stops claiming, finishes its running job, gives
    back none of the namesake's jobs (after a claim whose reply was lost, it could not tell
    them from its own), leaves the namesake's row, and run() raises ConfigurationError (it ran
    on, the two rescuing and giving back each other's running jobs)."""
    mine = t.sleepy.enqueue(conn, 1.0)
    conn.commit()
    worker = t.app.worker(dsn=dsn, name="twin", queues=["io"], poll_interval=0.05, heartbeat=0.2)
    runner = asyncio.ensure_future(worker.run())
    async with asyncio.timeout(30):
        while worker.running == 0:
            await asyncio.sleep(0.01)
    theirs = t.add.using(queue="cpu").enqueue(conn, 1, 2)
    conn.commit()
    _register(dsn, "twin", 4242, 1, "another-boot:1")  # the namesake takes the row
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor() as cur:
        _store.run(cur, _store.jobs_claim("twin", {"cpu": 1}, 600))
    worker._claim_lost = True  # its next claim, or its stop, gives back what it does not know
    with (
        caplog.at_level(logging.INFO, logger="pgqueue.worker"),
        pytest.raises(ConfigurationError) as refused,
    ):
        await asyncio.wait_for(runner, 60)
    assert str(refused.value) == (
        "worker name 'twin' was taken, while this worker ran, by a worker on h (pid 4242): "
        "give each worker its own --name, or leave it out for a unique one"
    )
    taken = [r for r in caplog.records if getattr(r, "action", "") == "worker_name_taken"]
    assert [(r.levelno, r.pid) for r in taken] == [(logging.ERROR, 4242)]
    assert query(dsn, "SELECT id, state, worker_id FROM pgqueue.jobs ORDER BY id") == [
        (mine, "succeeded", "twin"), (theirs, "running", "twin"),
    ]  # fmt: skip
    assert query(dsn, "SELECT pid FROM pgqueue.worker_processes WHERE id = 'twin'") == [(4242,)]


async def test_a_worker_stopped_while_it_watches_a_name_leaves_the_name_alone(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() while the worker watches a name seen lately on another host ends the watch:
    the worker must not then take the name it has not finished watching. It registered
    over the holder's row and deleted it as it stopped, and a live holder, finding its row
    naming another process, would stop too (worker_name_taken)."""
    _register(dsn, "watched", 4242, 1, "another-boot:1", heartbeat=20.0)
    worker = t.app.worker(dsn=dsn, name="watched", queues=["io"], poll_interval=0.05)
    runner = asyncio.ensure_future(worker.run())
    with caplog.at_level(logging.INFO, logger="pgqueue.worker"):
        async with asyncio.timeout(30):
            while not any(getattr(r, "action", "") == "worker_name_in_use" for r in caplog.records):
                await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(runner, 30)
    assert query(dsn, "SELECT pid FROM pgqueue.worker_processes WHERE id = 'watched'") == [(4242,)]
