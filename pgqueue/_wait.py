"""Waiting for a job to finish: LISTEN for completion notifications, re-read the row.

The statement that moves jobs to finished_jobs notifies ``pgqueue_finished`` with their ids
(one notification per statement, see 0001_zz_functions.sql). A notification only says "look
again": the waiter re-reads the row, and polls every ``poll_interval`` seconds in case a
notification was lost. LISTEN starts before the first read, so no completion slips between.

The async waiters that listen share one connection per event loop (pgqueue/_wait_hub.py);
``wait_sync`` and the polling waiters keep one each.

Without ``listen`` (behind a transaction-mode pooler) the waiter only polls and keeps nothing
in its session: its registration (session advisory locks) and its LISTEN would stay with the
server connection the pooler lent it, and every statement that finishes jobs would notify.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._connections import tcp_defaults
from pgqueue._errors import JobStateError, unreachable
from pgqueue._job import Job
from pgqueue._ops import _decodable, aread_job, read_job
from pgqueue._options import check_job_id
from pgqueue._retry import is_finite, is_number, shown


def _mentions(payload: str, job_id: int) -> bool:
    return str(job_id) in payload.split(",")


def _check(job: Job | None, job_id: int) -> Job | None:
    if job is None:  # most often: waited on in the transaction that enqueued it
        raise unknown(job_id)
    return job if job.is_finished else None


# A read is given at least this long, whatever is left of the timeout, so that a timeout of 0
# (or one spent connecting) still reads the row once: the first read of a session loads the
# catalogs, past a millisecond, and a bound of 0 ms would be no bound at all.
READ_AT_LEAST = 1.0
CONNECT_AT_LEAST = 2  # libpq waits 2 s at the least


def unknown(job_id: int) -> JobStateError:
    """The error of a wait for a job there is no row of."""
    return JobStateError(
        f"there is no job {job_id}: never enqueued, pruned, or enqueued by a transaction"
        " that has not committed (wait after the commit)"
    )


class _Reconnect:
    """A waiter's deadline, and whether to connect again once its connection is lost.

    A connection lost after it was made (a restart, a failover, a proxy's idle timeout) is
    made again until the deadline: LISTEN comes before the read again, so no completion is
    missed meanwhile. Once at once, then every ``poll_interval`` seconds while the database
    cannot be reached. A first connection that fails raises: the DSN may be wrong."""

    def __init__(
        self, job_id: int, deadline: float | None, timeout: float | None, poll_interval: float
    ) -> None:
        self.job_id, self.deadline, self.timeout = job_id, deadline, timeout
        self.poll_interval = poll_interval
        self.ever_connected = False
        self.failures = 0  # connections lost or refused since the last one made

    def connected(self) -> None:
        """A connection was made."""
        self.ever_connected, self.failures = True, 0

    def connection_options(self, dsn: str) -> dict[str, Any]:
        """How to connect: autocommit, nothing prepared (behind a transaction-mode pooler the
        read psycopg prepares on its sixth poll would be run by name on another server
        connection), the worker's TCP settings, so that a server gone silent is noticed,
        and a connect given up by the deadline (libpq waits 2 s at the least)."""
        return connection_options(dsn, self.left())

    def read_bound(self) -> float | None:
        """How long a read may wait for a lock and run: what is left of the timeout (a
        VACUUM FULL of the history held it for as long as it ran), but
        :data:`READ_AT_LEAST`; ``None`` without one. Set for each read: sent with it when
        the waiter LISTENs (no pooler: one round trip), in a transaction of its own when it
        only polls. (Set once for the session, it let a read late in a long wait run on for
        as long again.)"""
        return read_bound(self.left())

    @contextmanager
    def bounded(self) -> Iterator[None]:
        """Turn a read stopped by :meth:`read_bound` into the waiter's ``TimeoutError``."""
        try:
            yield
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            raise self.timed_out() from exc

    def next_read(self) -> float:
        """Seconds to listen before the next read; ``TimeoutError`` past the deadline."""
        left = self.left()
        if left <= 0:
            raise self.timed_out()
        return min(left, self.poll_interval)

    def timed_out(self) -> TimeoutError:
        return TimeoutError(f"job {self.job_id} did not finish within {self.timeout} s")

    def pause_after(self, exc: psycopg.OperationalError) -> float:
        """Seconds to pause before connecting again after ``exc``; else raises it (or a
        ``TimeoutError`` from it past the deadline)."""
        if not (self.ever_connected and unreachable(exc)):
            raise exc
        try:
            pause = self.next_read() if self.failures else 0.0
        except TimeoutError as timed_out:
            raise timed_out from exc
        self.failures += 1
        return pause

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


def read_bound(left: float) -> float | None:
    """The bound of a read with ``left`` seconds to go: ``None`` for ever."""
    return None if left == math.inf else max(left, READ_AT_LEAST)


def connection_options(dsn: str, left: float) -> dict[str, Any]:
    """The options of :meth:`_Reconnect.connection_options`, for ``left`` seconds to go."""
    options = {**tcp_defaults(dsn), "autocommit": True, "prepare_threshold": None}
    if "connect_timeout" in options:  # not set by the DSN
        options["connect_timeout"] = max(CONNECT_AT_LEAST, math.ceil(min(left, 10)))
    return options


def _check_arguments(job_id: int, timeout: float | None, poll_interval: float) -> None:
    # A NaN timeout never expired and a poll_interval of 0 or less re-read the row in a loop.
    check_job_id(job_id)
    if timeout is not None and not (is_number(timeout) and timeout >= 0):
        raise ValueError(
            "timeout must be a number of seconds >= 0 (None or math.inf to wait for ever),"
            f" got {shown(timeout)}"
        )
    if not (is_number(poll_interval) and poll_interval > 0 and is_finite(poll_interval)):
        raise ValueError(
            f"poll_interval must be a finite number of seconds > 0, got {shown(poll_interval)}"
        )


def _deadline(timeout: float | None) -> float | None:
    """When to give up, on the monotonic clock; ``None`` for ever (no timeout, ``math.inf``,
    or an int past every float, which the clock's float arithmetic cannot take)."""
    return None if timeout is None or not is_finite(timeout) else time.monotonic() + timeout


def wait_sync(
    dsn: str, job_id: int, timeout: float | None, poll_interval: float, listen: bool = True
) -> Job:
    """Block until job ``job_id`` is finished; returns it. Raises ``TimeoutError``."""
    _check_arguments(job_id, timeout, poll_interval)
    again = _Reconnect(job_id, _deadline(timeout), timeout, poll_interval)
    while True:
        try:
            return _wait_connected(dsn, job_id, again, listen)
        except psycopg.OperationalError as exc:
            time.sleep(again.pause_after(exc))


def _wait_connected(dsn: str, job_id: int, again: _Reconnect, listen: bool) -> Job:
    with psycopg.connect(dsn, **again.connection_options(dsn)) as conn:
        again.connected()
        _store.iso_dates(conn)
        if listen:
            with conn.cursor() as cur:
                _store.run(cur, _store.listen_finished())
        while (job := _check(_read(conn, job_id, again, listen), job_id)) is None:
            _next_note(conn, job_id, again.next_read())
        return job


def _read(
    conn: psycopg.Connection[Any], job_id: int, again: _Reconnect, listen: bool
) -> Job | None:
    with again.bounded():
        if (bound := again.read_bound()) is None:
            return read_job(conn, job_id)
        if listen:  # the bound and the read in one round trip
            timeouts = _store.timeouts_set_local(bound, bound)
            with _decodable(f"job {job_id}"):
                row = _store.run_together(conn, _store.Together(timeouts, _store.jobs_read(job_id)))
            return Job(*row) if row else None
        with conn.transaction(), conn.cursor() as cur:
            _store.run(cur, _store.timeouts_set_local(bound, bound))
            return read_job(conn, job_id)


def _next_note(conn: psycopg.Connection[Any], job_id: int, seconds: float) -> None:
    for note in conn.notifies(timeout=seconds):
        if _mentions(note.payload, job_id):
            return


async def wait(
    dsn: str, job_id: int, timeout: float | None, poll_interval: float, listen: bool = True
) -> Job:
    """Async twin of :func:`wait_sync`; with ``listen``, the waiters of ``dsn`` on this event
    loop share one connection (:mod:`pgqueue._wait_hub`)."""
    _check_arguments(job_id, timeout, poll_interval)
    again = _Reconnect(job_id, _deadline(timeout), timeout, poll_interval)
    if listen:
        from pgqueue._wait_hub import hub_wait

        return await hub_wait(dsn, job_id, again)
    while True:
        try:
            return await _await_polling(dsn, job_id, again)
        except psycopg.OperationalError as exc:
            await asyncio.sleep(again.pause_after(exc))


async def _await_polling(dsn: str, job_id: int, again: _Reconnect) -> Job:
    options = again.connection_options(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, **options) as conn:
        again.connected()
        await _store.aiso_dates(conn)
        while (job := _check(await _aread(conn, job_id, again), job_id)) is None:
            await asyncio.sleep(again.next_read())
        return job


async def _aread(conn: psycopg.AsyncConnection[Any], job_id: int, again: _Reconnect) -> Job | None:
    with again.bounded():
        if (bound := again.read_bound()) is None:
            return await aread_job(conn, job_id)
        async with conn.transaction(), conn.cursor() as cur:
            await _store.arun(cur, _store.timeouts_set_local(bound, bound))
            return await aread_job(conn, job_id)
