"""One worker-owned connection that reconnects on demand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import set_json_loads

from pgqueue import _store
from pgqueue._connections import tcp_defaults

T = TypeVar("T")
log = logging.getLogger("pgqueue.worker")


class Db:
    """An autocommit connection used by one worker part; reopened after it breaks.

    With ``backends``, it reads which server session each connection is (not through a
    pooler, whose server sessions pass from client to client), and remembers in ``broken``
    the session of the last connection that broke under a statement: the server may still
    run that statement, unaware that its client is gone."""

    def __init__(
        self,
        dsn: str,
        role: str,
        prepare_threshold: int | None = 5,
        async_commit: bool | None = None,
        backends: bool = False,
    ) -> None:
        self.dsn = dsn
        self.role = role
        self._tcp = tcp_defaults(dsn)
        self.prepare_threshold = prepare_threshold
        self.async_commit = async_commit
        self.backends = backends
        self._backend: _store.Backend | None = None
        self.broken: _store.Backend | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    @property
    def application(self) -> str:
        """The application name of its sessions."""
        return f"pgqueue {self.role}"

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """The open connection, opening a new one if there is none."""
        if self._conn is None or self._conn.closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    prepare_threshold=self.prepare_threshold,
                    application_name=self.application,
                    **self._tcp,
                )
            except asyncio.CancelledError as exc:
                # psycopg leaves a connection cut off half-way open to the frames of this
                # error, which the cancelled task keeps: a server session, open for as long.
                traceback.clear_frames(exc.__traceback__)
                raise
            set_json_loads(_loads_jsonb, conn)
            try:
                await _store.aiso_dates(conn)
                # True: commits skip the flush; False: they wait for it even where the
                # database's default is 'off'; None: the session is left as it comes.
                if self.async_commit is not None:
                    await conn.execute(
                        _store.session_async_commit().sql
                        if self.async_commit
                        else _store.session_durable_commit().sql
                    )
                if self.backends:
                    async with conn.cursor() as cur:
                        self._backend = await _store.arun(cur, _store.backend_self())
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def run(self, query: _store.Query[T] | _store.Together[T] | _store.RolledBack[T]) -> T:
        """Run one statement, or two in one transaction, or one rolled back; a broken
        connection is dropped so the next call reconnects. An OperationalError on a
        connection still open and idle (``LockNotAvailable``, ``QueryCanceled``) keeps it."""
        async with self._lock:
            conn = await self.connection()
            try:
                if isinstance(query, _store.Together):
                    return await _store.arun_together(conn, query)
                if isinstance(query, _store.RolledBack):
                    return await _store.arun_rolled_back(conn, query)
                async with conn.cursor() as cur:
                    return await _store.arun(cur, query)
            except psycopg.OperationalError:
                if _usable(conn):  # a lock or statement timeout, a cancel: the session is fine
                    raise
                self.broken = self._backend
                await self.close()
                raise

    @property
    def dropped(self) -> bool:
        """Whether it holds no open connection: none opened yet, or the last one broke (or
        was closed). A statement that failed on a connection it still holds was answered:
        it rolled back."""
        return self._conn is None or self._conn.closed

    async def close(self) -> None:
        """Close the connection if it is open."""
        conn, self._conn, self._backend = self._conn, None, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to release
                await conn.close()


def _usable(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn`` can run the next statement as it is: open, not broken, and out of any
    transaction (a failed rollback could leave it in one)."""
    idle = psycopg.pq.TransactionStatus.IDLE
    return not conn.closed and not conn.broken and conn.info.transaction_status == idle


def _loads_jsonb(data: str | bytes) -> Any:
    # Any jsonb a worker reads goes through the store's decoder (the one claims use).
    return _store.decode_json(data.decode() if isinstance(data, bytes) else data)


def session(pooled: bool, synchronous_commit: bool) -> dict[str, Any]:
    """How a worker connection is opened.

    Behind a transaction-mode pooler (``pooled``) nothing may live in the session: no prepared
    statements, no SET. Otherwise the worker's acks, heartbeats and maintenance skip the
    WAL flush wait unless ``synchronous_commit``: a crash can only lose the last fraction of
    a second of them, and a lost ack means the job is rescued and runs again under a new
    attempt number, which at-least-once execution allows. Claims never skip it (see Worker):
    a session that waits for the flush (the claimer's, and every one with
    ``synchronous_commit``) raises a database or role default of 'off' to 'local'. Behind a
    pooler the default holds (the worker warns at start when it is 'off').
    """
    if pooled:
        return {"prepare_threshold": None}
    return {"async_commit": not synchronous_commit}


def backoff(failures: int, cap: float = 10.0) -> float:
    """Seconds to wait before reconnecting after ``failures`` consecutive failures."""
    return float(min(cap, 0.1 * 2 ** min(failures, 10)))
