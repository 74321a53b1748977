"""The LISTEN connection: turns notifications into wake-ups. A hint, never a command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container

import psycopg

from pgqueue import _store
from pgqueue._worker._db import Db, backoff

log = logging.getLogger("pgqueue.worker")


async def listen(
    dsn: str,
    queues: Container[str],
    wake: Callable[[], None],
    stopping: asyncio.Event,
    ping_interval: float = 15.0,
) -> None:
    """Wake the claimer on notifications for ``queues`` until ``stopping`` is set.

    After every (re)connect the claimer is woken once, to catch up on anything sent while the
    connection was down. A notification's payload only says which queue to look at: the
    claimer re-reads the rows, so a forged or stale notification costs one empty claim.
    """
    db = Db(dsn, "listener", prepare_threshold=None)
    try:
        await _listen(db, queues, wake, stopping, ping_interval)
    finally:
        await db.close()


async def _listen(
    db: Db,
    queues: Container[str],
    wake: Callable[[], None],
    stopping: asyncio.Event,
    ping_interval: float,
) -> None:
    failures = 0
    while not stopping.is_set():
        try:
            conn = await db.connection()
            await db.run(_store.listen_jobs())
            if failures:
                log.info("LISTEN re-established", extra={"action": "listen_restored"})
            failures = 0
            wake()
            await _relay(db, conn, queues, wake, stopping, ping_interval)
        except (psycopg.Error, OSError):
            failures += 1
            await db.close()
            log.warning("LISTEN connection lost; reconnecting", extra={"action": "listen_lost"})
            await _sleep_unless(stopping, backoff(failures))


async def _relay(
    db: Db,
    conn: psycopg.AsyncConnection[object],
    queues: Container[str],
    wake: Callable[[], None],
    stopping: asyncio.Event,
    ping_interval: float,
) -> None:
    loop = asyncio.get_running_loop()
    last_ping = loop.time()
    while not stopping.is_set():
        async for note in conn.notifies(timeout=1.0):
            if note.payload in queues:
                wake()
        if loop.time() - last_ping >= ping_interval:
            # A quiet connection may be a dead one: a round trip proves it is alive.
            await db.run(_store.ping())
            last_ping = loop.time()


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
