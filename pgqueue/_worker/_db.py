"""One worker-owned connection that reconnects on demand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeVar

import psycopg

from pgqueue import _store

T = TypeVar("T")
log = logging.getLogger("pgqueue.worker")


class Db:
    """An autocommit connection used by one worker part; reopened after it breaks."""

    def __init__(self, dsn: str, role: str, prepare_threshold: int | None = 5) -> None:
        self.dsn = dsn
        self.role = role
        self.prepare_threshold = prepare_threshold
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """The open connection, opening a new one if there is none."""
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                prepare_threshold=self.prepare_threshold,
                application_name=f"pgqueue {self.role}",
            )
        return self._conn

    async def run(self, query: _store.Query[T]) -> T:
        """Run one statement; a broken connection is dropped so the next call reconnects."""
        async with self._lock:
            conn = await self.connection()
            try:
                async with conn.cursor() as cur:
                    return await _store.arun(cur, query)
            except psycopg.OperationalError:
                await self.close()
                raise

    async def close(self) -> None:
        """Close the connection if it is open."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to release
                await conn.close()


def backoff(failures: int, cap: float = 10.0) -> float:
    """Seconds to wait before reconnecting after ``failures`` consecutive failures."""
    return float(min(cap, 0.1 * 2 ** min(failures, 10)))
