"""One connection for every async waiter of a DSN on an event loop: the waiters' hub.

A connection per waiter made 1,000 requests waiting at once 1,000 server connections, past
PostgreSQL's default ``max_connections``. The hub is made by the first waiter: its runner
connects, registers as a waiter and LISTENs once, then reads the jobs waited for, several in
one statement, whenever a notification names them, a waiter joins, or the poll is due (every
``poll_interval`` of the waiter that asks for the shortest). Reads and the LISTEN share the
connection, one after the other: a read is a few milliseconds (one round trip), and a
notification that comes meanwhile waits in psycopg for the next wait (psycopg 3.2.4 and
later, hence the floor in pyproject.toml: 3.2.0-3.2.3 dropped it, and its waiters learnt of
their jobs only from the poll). When the last waiter leaves, the connection is closed
(before that waiter's ``wait`` returns, and before a waiter that comes meanwhile opens
another): a process that waits now and then holds no connection in between, and a test's
loop leaks none.

A hub belongs to the event loop it was made on (a loop per thread, or per test, has its own)
and to the process: a forked child forgets its parent's hubs without closing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg

from pgqueue import _store
from pgqueue._errors import PgQueueError, unreachable
from pgqueue._job import Job
from pgqueue._ops import _decodable
from pgqueue._wait import (
    CONNECT_AT_LEAST,
    READ_AT_LEAST,
    _Reconnect,
    connection_options,
    read_bound,
    unknown,
)

_Key = tuple[asyncio.AbstractEventLoop, str]
_E = TypeVar("_E", bound=BaseException | None)
Row = tuple[Any, ...]
# Held by their tasks, not here: the hub of a loop closed with its waiters pending (its
# tasks not cancelled) goes, and its session ends, at the next garbage collection.
_hubs: weakref.WeakValueDictionary[_Key, _Hub] = weakref.WeakValueDictionary()
_hubs_lock = threading.Lock()  # a loop per thread: each thread's waiters look hubs up here


def _forget_hubs() -> None:
    global _hubs_lock
    _hubs.clear()  # the parent's connections: closing them here would end its sessions
    _hubs_lock = threading.Lock()  # held, at the fork, by a thread the child does not have


os.register_at_fork(after_in_child=_forget_hubs)


async def hub_wait(dsn: str, job_id: int, again: _Reconnect) -> Job:
    """Wait for job ``job_id`` through the hub of ``dsn`` on the running loop."""
    # Made first: its first look counts from its call, a close waited for included.
    waiter = _Waiter(job_id, again, asyncio.get_running_loop().create_future())
    hub = await _open_hub(dsn)
    hub.join(waiter)
    try:
        while not waiter.outcome.done():
            done, _ = await asyncio.wait(
                waiter.watched(hub.running()),
                timeout=waiter.left(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                raise again.timed_out() from _own(hub.trouble)
        return waiter.outcome.result()
    finally:
        await hub.leave(waiter)


async def _open_hub(dsn: str) -> _Hub:
    """The hub of ``dsn`` on the running loop, once the one its last waiter closes is closed
    (a second at the most: a hung server is not waited for): a waiter that came meanwhile
    opened a second connection while the first was being closed."""
    while (closing := (hub := _hub(dsn)).closing) is not None:
        await asyncio.wait((closing,), timeout=CLOSE_AT_MOST)
        hub.retire()
    return hub


def _hub(dsn: str) -> _Hub:
    key = (asyncio.get_running_loop(), dsn)
    with _hubs_lock:
        if (hub := _hubs.get(key)) is None:
            hub = _hubs[key] = _Hub(key)
        return hub


# How long the last waiter waits for the connection to be closed (and a waiter that comes
# meanwhile, before it connects again): a read cancelled waits for the server to stop it.
CLOSE_AT_MOST = 1.0

# How long after its call a waiter waits for its first read, past its deadline if need be:
# as long as wait_sync may take to connect and read with no time left.
FIRST_LOOK = CONNECT_AT_LEAST + READ_AT_LEAST


class _Waiter:
    """One ``wait`` call: its job, its deadline and poll interval, and its outcome."""

    __slots__ = ("again", "job_id", "look_by", "moved", "outcome", "read")

    def __init__(self, job_id: int, again: _Reconnect, outcome: asyncio.Future[Job]) -> None:
        self.job_id, self.again, self.outcome = job_id, again, outcome
        self.look_by = time.monotonic() + FIRST_LOOK
        self.read: asyncio.Future[None] = outcome.get_loop().create_future()  # first read done
        self.moved: asyncio.Future[None] = outcome.get_loop().create_future()  # look_by brought on

    def left(self) -> float | None:
        """Seconds to wait still: to the deadline, or (if later) until the job is first
        read, so that a timeout of 0 returns a job finished; ``None`` for ever."""
        if (deadline := self.again.deadline) is None:
            return None
        if not self.read.done():
            deadline = max(deadline, self.look_by)
        return max(deadline - time.monotonic(), 0)

    def connected(self) -> None:
        """It joined a hub that has a connection, or a read for a waiter without a timeout
        began for it: a read of its own would need no connect, so its first look is due
        within :data:`READ_AT_LEAST` (a read held for a waiter without a timeout held a
        timeout of 0.5 s to the first look's 3 s)."""
        self.again.connected()
        if (look_by := time.monotonic() + READ_AT_LEAST) < self.look_by:
            self.look_by = look_by
            if not self.moved.done():  # a waiter already waiting counts to the new look_by
                self.moved.set_result(None)

    def watched(self, runner: asyncio.Task[None]) -> list[asyncio.Future[Any]]:
        """What ends a wait for :meth:`left`: the outcome, the runner ending (it is made
        again), the first read, after which the deadline alone counts (a waiter that waited
        on to the first look's 3 s raised a timeout of 0.5 s at 3 s), or its first look
        brought on."""
        pending = [f for f in (self.read, self.moved) if not f.done()]
        return [self.outcome, runner, *pending]

    def looked(self, error: BaseException | None = None) -> None:
        """A read of its job ended (stopped by ``error``, its bound, if given): not settled
        by it and past its deadline, the waiter times out."""
        if not self.read.done():
            self.read.set_result(None)
        if not self.outcome.done() and self.again.left() <= 0:
            timed_out = self.again.timed_out()
            timed_out.__cause__ = _own(error)
            self.outcome.set_exception(timed_out)


class _Hub:
    """The waiters of one DSN on one loop, and the task that reads their jobs for them."""

    def __init__(self, key: _Key) -> None:
        self.key, self.dsn = key, key[1]
        self.waiters: dict[int, list[_Waiter]] = {}
        self.stale: set[int] = set()  # the jobs to read again
        self.wake = asyncio.Event()
        self.next_poll = 0.0
        self.ever_connected, self.failures = False, 0
        # The last error the connection met, for the TimeoutError of a waiter that waited
        # through it; cleared once the hub reads again.
        self.trouble: BaseException | None = None
        self.runner: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None  # the runner, cancelled by the last leave

    def join(self, waiter: _Waiter) -> None:
        """Wait for ``waiter``'s job too: it is read once the connection listens (made at
        once if the hub waits to make it again after a loss: the waiter's first one)."""
        if self.ever_connected and not self.failures:  # the hub has a connection
            waiter.connected()
        self.waiters.setdefault(waiter.job_id, []).append(waiter)
        self.stale.add(waiter.job_id)
        self.next_poll = min(self.next_poll, time.monotonic() + waiter.again.poll_interval)
        self.wake.set()
        self.running()

    def running(self) -> asyncio.Task[None]:
        """The task that reads for the waiters, made again if it ended while they wait: it
        is only cancelled by the last waiter's :meth:`leave`, or by code that cancels every
        task but its own (its waiters would otherwise wait on a hub that no longer reads)."""
        if self.runner is None or self.runner.done():
            self.runner = asyncio.get_running_loop().create_task(self._run())
        return self.runner

    async def leave(self, waiter: _Waiter) -> None:
        """``waiter`` waits no more (returned, timed out, failed or cancelled); the last one
        to leave closes the connection and waits until it is closed."""
        # A read of its job that ends later settles nothing: an error set for no one to
        # retrieve was logged by asyncio as an ERROR.
        waiter.outcome.cancel()
        if waiter in (same := self.waiters.get(waiter.job_id, [])):
            same.remove(waiter)
            if not same:
                del self.waiters[waiter.job_id]
        if self.waiters or self.runner is None:
            return
        self.closing = self.runner
        self.closing.cancel()
        try:  # past CLOSE_AT_MOST, the runner goes on closing the connection meanwhile
            await asyncio.wait((self.closing,), timeout=CLOSE_AT_MOST)
        finally:
            self.retire()

    def retire(self) -> None:
        """Take no new waiters: the next one makes a new hub."""
        with _hubs_lock:
            if _hubs.get(self.key) is self:
                del _hubs[self.key]

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._session()
                except psycopg.OperationalError as exc:
                    await self._pause(self._pause_after(exc))
        except Exception as exc:  # a wrong DSN, a missing schema: each waiter raises it
            self.retire()
            self._fail(exc, everyone=True)

    def _fail(self, exc: Exception, everyone: bool) -> None:
        """Raise ``exc`` in every waiter, or (not ``everyone``) in those never connected."""
        for waiter in self._each():
            if not waiter.outcome.done() and (everyone or not waiter.again.ever_connected):
                waiter.outcome.set_exception(_own(exc))

    def _pause_after(self, exc: psycopg.OperationalError) -> float:
        """As :meth:`_Reconnect.pause_after`, for every waiter: a lost connection is made
        again at once, then every poll interval while the database cannot be reached. A
        first connection that fails, or an error that is not a lost connection, raises; so
        does, in the waiters that joined since the loss, a connection that fails to be made
        again (their first: as a connection of their own, it may have a wrong DSN)."""
        if not (self.ever_connected and unreachable(exc)):
            raise exc
        self.trouble = exc
        self.failures += 1
        self._fail(exc, everyone=False)
        return self._poll_interval() if self.failures > 1 else 0.0

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before connecting again, or until a waiter joins: the database
        may be back, and its first connection is made at once, as its own was."""
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    async def _session(self) -> None:
        options = connection_options(self.dsn, self._longest_left())
        async with await psycopg.AsyncConnection.connect(self.dsn, **options) as conn:
            self.ever_connected, self.failures = True, 0
            for waiter in self._each():
                waiter.again.connected()
            await _store.aiso_dates(conn)
            async with conn.cursor() as cur:
                await _store.arun(cur, _store.listen_finished())
            self.stale.update(self.waiters)  # what finished while no one listened is read
            self.next_poll = time.monotonic() + self._poll_interval()
            while True:
                if self.stale:
                    await self._read(conn)
                else:
                    await self._listen(conn)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Read the stale jobs in one statement and settle the waiters of those finished."""
        ids = sorted(self.stale)
        self.stale.clear()
        # Those who come during the read are read again (it may be older than their call: a
        # retry between them would give them the job's outcome before the retry).
        asked = {w for i in ids for w in self.waiters.get(i, ())}
        query = _store.jobs_read_many(ids)
        if (bound := self._read_bound(ids)) is None:  # the others look by a read of their own
            for waiter in asked:
                waiter.connected()
        try:
            rows = await self._rows(conn, query, bound)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            self.trouble = exc  # those waiting time out (by now), from this error
            self.stale.update(job_id for job_id in ids if job_id in self.waiters)
            for waiter in asked:
                waiter.looked(exc)
            return
        self.trouble = None
        found = {row[0]: row for row in rows}
        for job_id in ids:
            self._settle(job_id, found.get(job_id), asked)
        for waiter in asked:
            waiter.looked()

    async def _rows(
        self,
        conn: psycopg.AsyncConnection[Any],
        query: _store.Query[list[Row]],
        bound: float | None,
    ) -> list[Row]:
        if bound is None:
            async with conn.cursor() as cur:
                return await _store.arun(cur, query)
        # One round trip: the timeouts and the read, in one transaction.
        timeouts = _store.timeouts_set_local(bound, bound)
        return await _store.arun_together(conn, _store.Together(timeouts, query))

    def _settle(self, job_id: int, row: Row | None, asked: set[_Waiter]) -> None:
        for waiter in self.waiters.get(job_id, ()):
            if waiter in asked and not waiter.outcome.done():
                # Decoded for each waiter: a Job's result, meta and errors are the caller's to
                # change, as a wait of its own gave them.
                if isinstance(outcome := _outcome(job_id, row), Exception):
                    waiter.outcome.set_exception(outcome)
                elif outcome.is_finished:  # else queued or running (again, if retried): wait on
                    waiter.outcome.set_result(outcome)
                else:
                    return  # so are the other waiters of this job

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Wait for a notification naming a waited job, a new waiter, or the next poll."""
        if (left := self.next_poll - time.monotonic()) <= 0:
            self.stale.update(self.waiters)
            self.next_poll = time.monotonic() + self._poll_interval()
            return
        self.wake.clear()
        notes = asyncio.ensure_future(self._notes(conn, left))
        woken = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait((notes, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not notes.done():  # cancelled while it waits for the socket: nothing is lost
                notes.cancel()
                await asyncio.wait((notes,))
        if not notes.cancelled() and (exc := notes.exception()) is not None:
            raise exc

    async def _notes(self, conn: psycopg.AsyncConnection[Any], seconds: float) -> None:
        # stop_after=1 still yields every notification of the packet that brought the first.
        async for note in conn.notifies(timeout=seconds, stop_after=1):
            self.stale.update(_waited(note.payload.split(","), self.waiters))

    def _each(self) -> Iterator[_Waiter]:
        return (waiter for waiters in self.waiters.values() for waiter in waiters)

    def _poll_interval(self) -> float:
        return min(w.again.poll_interval for w in self._each())

    def _longest_left(self) -> float:
        """The time left to the waiter that waits longest (infinite if one waits for ever)."""
        return max(w.again.left() for w in self._each())

    def _read_bound(self, ids: list[int]) -> float | None:
        """How long a read of ``ids`` may wait for a lock and run: until the last of their
        waiters gives up (``None`` if one waits for ever), but :data:`READ_AT_LEAST`."""
        return read_bound(
            max((w.again.left() for i in ids for w in self.waiters.get(i, ())), default=0)
        )


def _own(exc: _E) -> _E:
    """A copy of the hub's ``exc`` for one waiter, whose notes and traceback are its caller's
    to change: the same type, arguments and attributes (a psycopg error's ``sqlstate``,
    ``diag`` and ``pgconn``), traceback and cause. ``exc`` itself if it cannot be made again
    from its arguments (an ``__init__`` that wants others)."""
    if exc is None:
        return exc
    try:
        own = copy.copy(exc)
    except Exception:
        return exc
    own.__dict__.update(vars(exc))  # what the copy's pickling leaves out: psycopg's pgconn
    own.args = exc.args  # an __init__ that makes its message from its arguments made it again
    if (notes := getattr(exc, "__notes__", None)) is not None:
        own.__notes__ = list(notes)
    own.__cause__, own.__context__ = exc.__cause__, exc.__context__
    own.__suppress_context__ = exc.__suppress_context__
    return own.with_traceback(exc.__traceback__)


def _outcome(job_id: int, row: Row | None) -> Job | PgQueueError:
    """The job of ``row``, or the error its waiters raise: none, or one Python cannot decode."""
    try:
        if row is None:
            raise unknown(job_id)
        with _decodable(f"job {job_id}"):
            return Job(*_store.job_row_decoded(row))
    except PgQueueError as exc:
        return exc


def _waited(ids: list[str], waiters: dict[int, list[_Waiter]]) -> Iterator[int]:
    """The ids of a notification's payload that are waited for; a payload not pgqueue's (a
    NOTIFY of someone else's on the channel) names none."""
    for text in ids:
        if text.isascii() and text.isdigit() and (job_id := int(text)) in waiters:
            yield job_id
