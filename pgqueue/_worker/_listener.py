"""The LISTEN connection: turns notifications into wake-ups. A hint, never a command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container

import psycopg

from pgqueue import _store
from pgqueue._errors import error_line
from pgqueue._worker._db import Db, backoff
from pgqueue._worker._outage import Outage

log = logging.getLogger("pgqueue.worker")


async def listen(
    dsn: str,
    queues: Container[str],
    wake: Callable[[], None],
    stopping: asyncio.Event,
    ping_interval: float = 15.0,
    on_cancel: Callable[[str | None], None] | None = None,
) -> None:
    """Wake the claimer on notifications for ``queues`` until ``stopping`` is set.

    After every (re)connect the claimer is woken once, and ``on_cancel(None)`` is called, to
    catch up on anything sent while the connection was down or not yet listening (a job
    claimed before the first LISTEN may have been asked to cancel in between). A
    notification's payload only says which queue to look at: the claimer re-reads the rows,
    so a forged or stale notification costs one empty claim.
    """
    db = Db(dsn, "listener", prepare_threshold=None)
    hint = _Hints(queues, wake, on_cancel)
    try:
        await _listen(db, hint, stopping, ping_interval)
    finally:
        await db.close()


class _Hints:
    """Turns a notification into a wake-up or an early heartbeat; never into an action."""

    def __init__(
        self, queues: Container[str], wake: Callable[[], None],
        on_cancel: Callable[[str | None], None] | None,
    ) -> None:  # fmt: skip
        self.queues = queues
        self.wake = wake
        self.on_cancel = on_cancel

    def __call__(self, note: psycopg.Notify) -> None:
        if note.channel == "pgqueue_cancel":
            if self.on_cancel is not None:
                self.on_cancel(note.payload)
        elif note.payload in self.queues:
            self.wake()

    def catch_up(self) -> None:
        """Listening (again): any hint sent before now may have been missed, so act as if
        each kind had just arrived."""
        self.wake()
        if self.on_cancel is not None:
            self.on_cancel(None)


async def _listen(db: Db, hint: _Hints, stopping: asyncio.Event, ping_interval: float) -> None:
    lost = Outage()
    while not stopping.is_set():
        try:
            conn = await db.connection()
            await db.run(_store.listen_jobs())
            if hint.on_cancel is not None:
                await db.run(_store.listen_cancel())
            if failures := lost.ended():
                log.info("LISTEN re-established after %d failures", failures,
                         extra={"action": "listen_restored", "failures": failures})  # fmt: skip
            hint.catch_up()
            await _relay(db, conn, hint, stopping, ping_interval)
        except Exception as exc:  # a bug too: claims fall back on polling until it is back
            n = lost.failed()
            await db.close()
            log.log(
                logging.WARNING if isinstance(exc, psycopg.Error | OSError) else logging.ERROR,
                "LISTEN connection lost (%s), %d in a row; reconnecting", error_line(exc), n,
                exc_info=n == 1, extra={"action": "listen_lost", "failures": n},
            )  # fmt: skip
            await _sleep_unless(stopping, backoff(n))


async def _relay(
    db: Db,
    conn: psycopg.AsyncConnection[object],
    hint: _Hints,
    stopping: asyncio.Event,
    ping_interval: float,
) -> None:
    loop = asyncio.get_running_loop()
    last_ping = loop.time()
    while not stopping.is_set():
        async for note in conn.notifies(timeout=1.0):
            hint(note)
            # Let a woken claimer send its claim now, before this task re-arms its wait.
            await asyncio.sleep(0)
        if loop.time() - last_ping >= ping_interval:
            # A quiet connection may be a dead one: a round trip proves it is alive.
            await db.run(_store.ping())
            last_ping = loop.time()


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
