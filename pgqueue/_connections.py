"""Turn whatever connection the caller holds into a psycopg cursor, without committing.

psycopg connections and cursors are handled here. Other libraries (SQLAlchemy, Django) plug in
adapters through the ``pgqueue.connections`` entry-point group or :func:`register_adapter`, so
the core never imports them.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row

from pgqueue._errors import ConfigurationError

SyncConnection = Any
"""A psycopg ``Connection`` or ``Cursor``, or anything a registered adapter accepts."""
AsyncConnection = Any
"""A psycopg ``AsyncConnection`` or ``AsyncCursor``, or anything a registered adapter accepts."""


# A database that vanishes without closing its connections (a network partition, a failover
# that leaves no host to answer) left a worker waiting on them for as long as the kernel keeps
# trying: about 15 minutes for a statement sent (tcp_retries2), two hours and more for an idle
# LISTEN connection (keepalives). With these, a statement unanswered at the TCP level for 60 s,
# or an idle connection silent for 30 s and then 3 probes 10 s apart, fails; the worker (and
# app.wait) then reconnects as after any dropped connection. A DSN's own values win; Unix
# sockets ignore them. A connect gives up after 10 s (psycopg's default is 130 s per host): a
# server that takes connections and never answers (frozen, a hung proxy), or the first host of
# several that drops them, held the connection's lock that long, and the heartbeats could not
# be retried. (This one applies to Unix sockets too.)
TCP_DEFAULTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # milliseconds
}


def tcp_defaults(dsn: str) -> dict[str, Any]:
    """The TCP settings of :data:`TCP_DEFAULTS` that ``dsn`` does not set itself."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # connect() will say what is wrong with it
        return {}
    if "service" in given or os.environ.get("PGSERVICE"):
        return {}  # a service file may set them: keyword arguments would override it
    wanted: dict[str, Any] = {k: v for k, v in TCP_DEFAULTS.items() if k not in given}
    if psycopg.pq.version() < 120000:  # libpq learnt tcp_user_timeout in PostgreSQL 12
        wanted.pop("tcp_user_timeout", None)
    return wanted


# The whitespace libpq skips around a DSN's words (C's isspace), of which Python's str.strip
# is a superset: a no-break space ending an unquoted password is part of it for libpq.
LIBPQ_SPACE = " \t\n\r\f\v"


def strip_dsn(dsn: str) -> str:
    """``dsn`` without the whitespace libpq ignores around it (a variable's trailing newline,
    which a URL would keep in its last value): ASCII only, and not an escaped one
    (``password=secret\\ `` ends in a space)."""
    text = dsn.lstrip(LIBPQ_SPACE)
    stripped = text.rstrip(LIBPQ_SPACE)
    if (len(stripped) - len(stripped.rstrip("\\"))) % 2:  # an odd run of "\\" escapes the next
        return text[: len(stripped) + 1]
    return stripped


def dsn_variable(name: str) -> str | None:
    """The DSN in the environment variable ``name``, stripped as :func:`strip_dsn` does;
    ``None`` when it is unset or empty. A blank one is a :class:`ConfigurationError`: read as
    a DSN, it would connect to libpq's default database."""
    value = os.environ.get(name)
    if not value:
        return None
    dsn = strip_dsn(value)
    if not dsn:
        raise ConfigurationError(f"{name} is blank ({value!r}): set it to a DSN, or unset it")
    return dsn


def normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (``postgresql+psycopg://``) as libpq DSNs too; raise
    :class:`ConfigurationError` for one libpq cannot parse, before anything connects."""
    scheme, sep, rest = dsn.partition("://")
    if sep and scheme.startswith(("postgresql+", "postgres+")):
        dsn = f"postgresql://{rest}"
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except UnicodeEncodeError:  # a byte the locale could not decode ($'\xff' in a shell)
        raise ConfigurationError(
            "invalid database DSN: it is not valid UTF-8; the DSN is not shown, as it may hold"
            " a password"
        ) from None
    except psycopg.ProgrammingError as exc:
        # libpq quotes the string, password and all: leave it out of the message.
        reason = str(exc).strip().splitlines()[0].replace(dsn, "<DSN>")
        raise ConfigurationError(
            f"invalid database DSN: {reason}; use a URL (postgresql://user:password@host:5432"
            "/dbname) or key=value pairs (host=... dbname=...)"
        ) from None
    return dsn


class ConnectionKindError(TypeError):
    """The connection given to enqueue on is of the other kind (sync where async is wanted, or
    the reverse), or an object no adapter takes. An adapter raises it for an object of its
    library of the other kind; ``assert_enqueued`` says it in its own words, and leaves any
    other ``TypeError`` (a driver's, a session's binds) as said."""


ConnectionKindError.__module__ = "pgqueue"


@dataclass(frozen=True, slots=True)
class Adapter:
    """Finds the psycopg connection behind a foreign object (or returns ``None``)."""

    name: str
    sync: Callable[[Any], psycopg.Connection[Any] | None]
    async_: Callable[[Any], Any]


_adapters: list[Adapter] = []
_entry_points_loaded = False


def register_adapter(adapter: Adapter) -> None:
    """Teach pgqueue to enqueue on another library's connection objects."""
    _adapters.append(adapter)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="pgqueue.connections"):
        register_adapter(ep.load())


def _foreign(conn: Any, pick: Callable[[Adapter], Callable[[Any], Any]]) -> Any:
    _load_entry_points()
    for adapter in _adapters:
        found = pick(adapter)(conn)
        if found is not None:
            return found
    raise ConnectionKindError(
        f"cannot enqueue on a {type(conn).__module__}.{type(conn).__qualname__}: pass a psycopg "
        "connection or cursor (or a SQLAlchemy/Django connection with pgqueue's contrib installed)"
    )


def sync_connection(conn: SyncConnection) -> psycopg.Connection[Any]:
    """The psycopg sync connection behind ``conn``."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.Cursor):
        return conn.connection
    if isinstance(conn, psycopg.AsyncConnection | psycopg.AsyncCursor):
        raise ConnectionKindError(
            "this is an async connection: use aenqueue() instead of enqueue()"
        )
    found: psycopg.Connection[Any] = _foreign(conn, lambda a: a.sync)
    return found


async def async_connection(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg async connection behind ``conn``."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, psycopg.AsyncCursor):
        return conn.connection
    if isinstance(conn, psycopg.Connection | psycopg.Cursor):
        raise ConnectionKindError("this is a sync connection: use enqueue() instead of aenqueue()")
    found = _foreign(conn, lambda a: a.async_)
    if not isinstance(found, psycopg.AsyncConnection):
        found = await found  # adapters may need to await the driver connection
    assert isinstance(found, psycopg.AsyncConnection)
    return found


# The psycopg connections pgqueue has run on, held weakly, once pgqueue.testing is imported
# (None before): drain() names those of them idling in a transaction that wrote jobs. It looked
# for them among all live objects (gc), which cost 55 ms in a process holding a million.
_watched: weakref.WeakSet[psycopg.BaseConnection[Any]] | None = None


def watch_connections() -> None:
    """From now on, keep (weakly) every psycopg connection pgqueue runs on."""
    global _watched
    if _watched is None:
        _watched = weakref.WeakSet()


def watched_backends() -> set[int]:
    """The server pids of the open connections pgqueue ran on since :func:`watch_connections`.
    Another thread of the test (a live server's, a task's) may enqueue on a connection new to
    the set as it is read, which then changed size (RuntimeError: read again), or close one
    after it was found open (its pid is then asked of a closed connection: left out)."""
    while True:
        try:
            kept = list(_watched or ())
        except RuntimeError:
            continue
        break
    pids = set()
    for conn in kept:
        try:
            if not conn.closed:
                pids.add(conn.info.backend_pid)
        except psycopg.OperationalError:
            pass
    return pids


def commits_alone(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether each statement on ``conn`` commits alone: autocommit, and not inside a
    transaction block (``conn.transaction()`` on an autocommit connection opens one)."""
    return conn.autocommit and conn.info.transaction_status != _INTRANS


_INTRANS = psycopg.pq.TransactionStatus.INTRANS


def sync_cursor(conn: SyncConnection) -> psycopg.Cursor[Any]:
    """A fresh cursor on the caller's connection, inside the caller's transaction; use it in a
    ``with`` block, which closes it. (Not a generator context manager, which cost every
    enqueue 4 µs more than the cursor itself.) Its rows are tuples, as the store reads them,
    whatever ``row_factory`` the caller's connection has (``dict_row`` made KeyError: 0)."""
    found = sync_connection(conn)
    if _watched is not None:
        _watched.add(found)
    if _numbered(found.cursor_factory):
        return psycopg.Cursor(found, row_factory=tuple_row)
    return found.cursor(row_factory=tuple_row)


def _numbered(factory: object) -> bool:
    """Whether a connection's cursors take ``$1`` placeholders (psycopg's raw cursors): the
    store's statements are written with ``%s``, and need another kind of cursor there."""
    return isinstance(factory, type) and issubclass(
        factory, psycopg.RawCursor | psycopg.AsyncRawCursor
    )


class async_cursor:  # lower case: used like a function, ``async with async_cursor(conn)``
    """A fresh async cursor on the caller's connection, inside the caller's transaction,
    closed on leaving the ``async with`` block. (A class, not an async generator context
    manager, which cost every ``aenqueue`` 2-3 µs more.)"""

    __slots__ = ("_conn", "_cur")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def __aenter__(self) -> psycopg.AsyncCursor[Any]:
        conn = await async_connection(self._conn)
        if _watched is not None:
            _watched.add(conn)
        self._cur: psycopg.AsyncCursor[Any] = (  # see sync_cursor
            psycopg.AsyncCursor(conn, row_factory=tuple_row)
            if _numbered(conn.cursor_factory)
            else conn.cursor(row_factory=tuple_row)
        )
        return self._cur

    async def __aexit__(self, *exc_info: object) -> None:
        await self._cur.close()


Adapter.__module__ = "pgqueue"
