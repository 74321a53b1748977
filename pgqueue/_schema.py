"""The schema revision this code needs, and the check workers run at start-up."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from pgqueue import _store
from pgqueue._errors import SchemaError

log = logging.getLogger("pgqueue.worker")

# The newest alembic revision in pgqueue/migrations/versions (a test keeps them equal). A new
# revision that code needing an older one cannot run on also replaces the SQL function
# pgqueue.compatible_since() (sql/0007_zz_functions.sql) to return the new revision; one that
# older code runs on leaves it, and older workers then start on it (schema_problem). 0008
# changes function bodies only, 0009 adds a table older code never reads and 0010 changes
# function bodies only, so all leave it: compatible_since() stays '0007'.
SCHEMA_REVISION = "0010"
KNOWN_REVISIONS = (
    "0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010",
)  # fmt: skip


# What a statement on pgqueue's tables or functions raises in a database without its schema.
UNDEFINED = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.InvalidSchemaName,
)


def schema_missing(exc: psycopg.Error) -> bool:
    """Whether ``exc`` says that pgqueue's schema is missing: one of :data:`UNDEFINED` that the
    statement itself raised. Raised in a function it called (a user's trigger on pgqueue's
    tables, say), it has a ``diag.context`` and is that function's own error."""
    return isinstance(exc, UNDEFINED) and exc.diag.context is None


def schema_problem(
    exists: bool, revision: str | None, compatible_since: str | None = None
) -> str | None:
    """A one-line explanation of what is wrong with the schema, or ``None`` when this code can
    run on it: the revision it needs, or a newer one whose ``compatible_since`` (the oldest
    revision code may need and still run on it) is not after the revision it needs."""
    if not exists or revision is None:
        return "pgqueue's schema is not installed in this database: run `pgqueue migrate`"
    if revision == SCHEMA_REVISION or serves_this_code(revision, compatible_since):
        return None
    if revision in KNOWN_REVISIONS:
        return (
            f"pgqueue's schema is at revision {revision}, this version needs {SCHEMA_REVISION}:"
            " run `pgqueue migrate`"
        )
    return f"pgqueue's schema is at revision {revision}, newer than this version: upgrade pgqueue"


def serves_this_code(revision: str, compatible_since: str | None) -> bool:
    """Whether a schema newer than this code says code needing SCHEMA_REVISION still runs on
    it. Older code refused every newer schema, so a worker restarted during a rolling deploy,
    after the migration and before its own upgrade, could not start."""
    return (
        revision not in KNOWN_REVISIONS
        and compatible_since in KNOWN_REVISIONS
        and KNOWN_REVISIONS.index(compatible_since) <= KNOWN_REVISIONS.index(SCHEMA_REVISION)
    )


def schema_state(conn: psycopg.Connection[Any]) -> tuple[bool, str | None, str | None]:
    """Whether the schema exists, its revision, and (when newer than this code) the oldest
    revision code may need and still run on it, read on a sync connection."""
    with conn.cursor() as cur:
        return schema_state_on(partial(_store.run, cur))


def schema_state_on(
    run: Callable[[_store.Query[Any]], Any],
) -> tuple[bool, str | None, str | None]:
    """:func:`schema_state`, with ``run`` running each statement on a sync connection."""
    if not run(_store.schema_exists()):
        return False, None, None
    revision = run(_store.schema_revision_get())
    return True, revision, _compatible_since_on(run, revision)


def _compatible_since_on(
    run: Callable[[_store.Query[Any]], Any], revision: str | None
) -> str | None:
    """The oldest revision code may need and still run on a schema at ``revision``, read only
    when ``revision`` is newer than this code (``None`` otherwise, or when it cannot be read)."""
    if revision is None or revision in KNOWN_REVISIONS:
        return None
    if not run(_store.schema_compatible_since_callable()):
        return None
    since: str | None = run(_store.schema_compatible_since())
    return since


def require_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`SchemaError` unless ``conn``'s database has a schema this code runs on,
    as a worker's start-up check does: a command on a schema a revision behind answered as if
    the schema were current. One statement when the schema is at this code's revision: its
    revision read, a missing table saying the schema is missing. A role that may not read the
    revision (one granted only what its commands read) is not checked: every command refused
    it, naming alembic_version; its transaction, aborted by the refusal, is rolled back."""
    log = logging.getLogger("pgqueue.cli")
    try:
        with conn.cursor() as cur:
            _check_schema(cur, log, "this command runs")
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        _not_checked(log)
        _checked.add(conn)  # the admin functions it calls check no more
        return
    _passed(conn)


def require_schema_once(cur: psycopg.Cursor[Any]) -> None:
    """:func:`require_schema` on a caller's connection (``cur``'s), in the caller's transaction,
    the first time a writing admin function runs on it (``admin.retry_failed`` requeued, and
    ``admin.prune`` deleted, on a schema a revision behind without a word). It never commits
    and never leaves the caller's transaction aborted: in one, the read runs in a savepoint;
    in a transaction the read began itself, anything raised rolls that back. On a transaction
    already aborted it checks nothing (the call fails anyway); the next call checks. A check
    this process passed on the same database less than ``CHECK_MEMORY`` seconds ago stands
    for this one."""
    conn = cur.connection
    if not _unchecked(conn) or _remembered(conn):
        return
    began = _begins(conn)
    try:
        with conn.transaction() if _in_transaction(conn) else nullcontext():
            _check_schema(cur, _admin_log, "this call runs")
    except Exception as exc:
        if began and not conn.closed:  # the transaction holds the check's read alone
            conn.rollback()  # (on a connection lost, its error would replace the server's)
        _refused(exc, conn)
        return
    _passed(conn)


async def arequire_schema_once(cur: psycopg.AsyncCursor[Any]) -> None:
    """Async twin of :func:`require_schema_once`."""
    conn = cur.connection
    if not _unchecked(conn) or _remembered(conn):
        return
    began = _begins(conn)
    try:
        async with conn.transaction() if _in_transaction(conn) else nullcontext():
            with _missing_said():
                revision = await _store.arun(cur, _store.schema_revision_get())
            if revision != SCHEMA_REVISION:
                _, _, since = await aschema_state(partial(_store.arun, cur))
                _judge(revision, since, _admin_log, "this call runs")
    except Exception as exc:
        if began and not conn.closed:
            await conn.rollback()
        _refused(exc, conn)
        return
    _passed(conn)


# The connections whose schema was checked, held weakly: one check per connection.
_checked: weakref.WeakSet[psycopg.BaseConnection[Any]] = weakref.WeakSet()
_admin_log = logging.getLogger("pgqueue.admin")

# Seconds a check passed on a database stands for the new connections to it of this process:
# Django opens one per request (CONN_MAX_AGE=0), and checking each cost every request that
# read a job a read of the revision (in a savepoint: three round trips). A pooled connection
# is checked once in its life, a worker at its start; so the bound is only how soon a process
# that opens a connection per request refuses a schema migrated past what it can run on.
CHECK_MEMORY = 30.0
# Each database's key (_database) and the time.monotonic() of the last check passed on it. A
# forked child inherits it and may trust it: a fact about the database, not the connection,
# dated on a clock the parent shares; no lock, that a fork could inherit held.
_passed_at: dict[tuple[str, ...], float] = {}


def _database(conn: psycopg.BaseConnection[Any]) -> tuple[str, ...]:
    """The database ``conn`` is connected to, as libpq and the server name it once connected,
    whatever the DSN's spelling: the address connected to (a name's, or the socket's
    directory), port and database, and the server's version (two servers in turn behind one
    address, an upgrade's old and new, are told apart)."""
    info = conn.info
    try:
        address = info.hostaddr or info.host
    except psycopg.NotSupportedError:  # libpq before 12
        address = info.host
    version = info.parameter_status("server_version") or ""
    return address, str(info.port), info.dbname, version


def _remembered(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether a check this process passed on ``conn``'s database less than ``CHECK_MEMORY``
    seconds ago stands for ``conn``'s own (``conn`` then counts as checked)."""
    passed = _passed_at.get(_database(conn))
    if passed is None or time.monotonic() - passed >= CHECK_MEMORY:
        return False
    _checked.add(conn)
    return True


def _passed(conn: psycopg.BaseConnection[Any]) -> None:
    """Record that ``conn``'s schema was checked and serves this code, for ``conn`` and, for
    ``CHECK_MEMORY`` seconds, for the new connections to its database."""
    _checked.add(conn)
    _passed_at[_database(conn)] = time.monotonic()


def _unchecked(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether ``conn`` is still to be checked: not yet, its transaction not aborted, and not
    a pipeline's implicit one, results pending on an autocommit connection (ACTIVE), where no
    savepoint can be made and a refused read aborted the caller's statements."""
    status = conn.info.transaction_status
    if status == TransactionStatus.ACTIVE and conn.autocommit:
        return False
    return conn not in _checked and status != TransactionStatus.INERROR


def _begins(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether the check's read begins the transaction it runs in (the caller's next ones
    join it)."""
    return conn.info.transaction_status == TransactionStatus.IDLE and not conn.autocommit


def _in_transaction(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether ``conn`` is in a transaction the check must run in a savepoint of: a pipeline's
    results pending (ACTIVE) on a connection not in autocommit are in one psycopg began."""
    status = conn.info.transaction_status
    return status == TransactionStatus.INTRANS or (
        status == TransactionStatus.ACTIVE and not conn.autocommit
    )


def _refused(exc: Exception, conn: psycopg.BaseConnection[Any]) -> None:
    """Raise ``exc`` again, unless it is a role's refusal to let the revision be read: then
    ``conn`` is not checked again, and the database is not remembered as checked."""
    if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
        raise exc
    _not_checked(_admin_log)
    _checked.add(conn)


def _check_schema(cur: psycopg.Cursor[Any], log: logging.Logger, goes_on: str) -> None:
    """Raise :class:`SchemaError` unless the schema is one this code runs on (read on ``cur``,
    whose rows are tuples); a role that may not read the revision raises
    ``InsufficientPrivilege``, its statement refused."""
    run = partial(_store.run, cur)
    with _missing_said():
        revision = run(_store.schema_revision_get())
    if revision != SCHEMA_REVISION:
        _judge(revision, _compatible_since_on(run, revision), log, goes_on)


@contextmanager
def _missing_said() -> Iterator[None]:
    """The error of a statement on a database without pgqueue's schema, as the SchemaError
    saying so."""
    try:
        yield
    except UNDEFINED as exc:
        if not schema_missing(exc):
            raise
        raise SchemaError(str(schema_problem(False, None))) from None


def _judge(
    revision: str | None, compatible_since: str | None, log: logging.Logger, goes_on: str
) -> None:
    """Raise :class:`SchemaError` unless this code runs on a schema at ``revision``; say so
    when it is a newer one that serves it."""
    problem = schema_problem(True, revision, compatible_since)
    if problem:
        raise SchemaError(problem)
    say_newer(log, revision, compatible_since, goes_on)


def _not_checked(log: logging.Logger) -> None:
    log.debug(
        "this role may not read pgqueue.alembic_version: the schema is not checked",
        extra={"action": "schema_not_checked"},
    )


async def aschema_state(
    run: Callable[[_store.Query[Any]], Awaitable[Any]],
) -> tuple[bool, str | None, str | None]:
    """:func:`schema_state`, with ``run`` running each statement (a worker's ``Db.run``)."""
    if not await run(_store.schema_exists()):
        return False, None, None
    revision = await run(_store.schema_revision_get())
    if revision is None or revision in KNOWN_REVISIONS:
        return True, revision, None
    if not await run(_store.schema_compatible_since_callable()):
        return True, revision, None
    return True, revision, await run(_store.schema_compatible_since())


async def check_schema(db: Any) -> None:
    """Raise :class:`SchemaError` unless the database has a schema this code runs on.

    ``db`` is a worker :class:`~pgqueue._worker._db.Db`.
    """
    exists, revision, compatible_since = await aschema_state(db.run)
    problem = schema_problem(exists, revision, compatible_since)
    if problem:
        raise SchemaError(problem)
    if revision != SCHEMA_REVISION:
        say_newer(log, revision, compatible_since, "this worker starts")


def say_newer(
    log: logging.Logger, revision: str | None, compatible_since: str | None, goes_on: str
) -> None:
    """Log, at INFO, that the schema is newer than this code and serves it, so ``goes_on``."""
    log.info(
        "pgqueue's schema is at revision %s, newer than this version's %s; it runs code"
        " that needs revision %s or later, so %s: upgrade it when you can",
        revision, SCHEMA_REVISION, compatible_since, goes_on,
        extra={"action": "schema_newer", "revision": revision},
    )  # fmt: skip
