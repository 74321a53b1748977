"""The functions of ``pgqueue.admin``, ``app.cancel`` and ``app.get_job`` check the schema's
revision, once per connection, inside the caller's transaction, as the CLI's commands and
workers do."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

import pgqueue
from pgqueue import _manage, _schema, _store, admin
from pgqueue._schema import SCHEMA_REVISION
from tests.helpers import query, states
from tests.integration.test_ops_api import _finished_jobs_of_ages

OLDER = (f"pgqueue's schema is at revision 0009, this version needs {SCHEMA_REVISION}:"
         " run `pgqueue migrate`")  # fmt: skip
WRITES: dict[str, Callable[[psycopg.Connection[Any]], object]] = {
    "retry_failed": admin.retry_failed,
    "retry_job": lambda conn: admin.retry_job(conn, 103),
    "cancel_job": lambda conn: admin.cancel_job(conn, 1),
    "prune": lambda conn: admin.prune(conn, 0),
}

APP = pgqueue.PgQueue()
READS: dict[str, Callable[[psycopg.Connection[Any]], object]] = {
    "get_job": lambda conn: admin.get_job(conn, 1),
    "list_jobs": admin.list_jobs,
    "queue_stats": admin.queue_stats,
    "queue_stats_sampled": lambda conn: admin.queue_stats(conn, exact=False),
    "live_workers": admin.live_workers,
    "count_prunable": lambda conn: admin.count_prunable(conn, {"failed": 0}),
    "count_retryable": admin.count_retryable,
    "app.get_job": lambda conn: APP.get_job(conn, 1),
    "app.cancel": lambda conn: APP.cancel(conn, 1),
    "django_admin_retry": lambda conn: _manage.retry_jobs(conn, [103]),
}


def _at_0009(dsn: str) -> None:
    """A queued job 1 and the finished jobs 101-104, in a database whose revision says 0009."""
    query(dsn, "SELECT pgqueue.enqueue('t')")
    _finished_jobs_of_ages(dsn)
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0009'")


@pytest.mark.parametrize("call", [*WRITES.values(), *READS.values()], ids=[*WRITES, *READS])
def test_a_call_on_an_older_schema_says_to_migrate_and_leaves_the_transaction_usable(
    dsn: str, conn: psycopg.Connection[Any], call: Callable[[psycopg.Connection[Any]], object]
) -> None:
    """On a schema a revision behind, each admin function raises SchemaError naming the
    revision found, the one needed and `pgqueue migrate`, and reads or writes nothing: the
    writing ones requeued, cancelled and deleted without a word; the reading ones,
    app.cancel and the Django admin's retry (their own SQL) answered as if the schema were
    current. The caller's transaction, which had written already, is left usable, its write
    kept."""
    _at_0009(dsn)
    pgqueue.PgQueue(dsn).using("t").enqueue(conn)
    with pytest.raises(pgqueue.SchemaError) as raised:
        call(conn)
    assert str(raised.value) == OLDER
    assert conn.info.transaction_status == TransactionStatus.INTRANS
    conn.commit()
    assert states(dsn) == {"queued": 2, "succeeded": 2, "failed": 1, "cancelled": 1}


def test_a_refused_check_in_a_transaction_it_began_leaves_none_open(dsn: str) -> None:
    """Called first on an idle connection, the refusal rolls back the transaction the check
    began, and on an autocommit one it leaves nothing to roll back."""
    _at_0009(dsn)
    for autocommit in (False, True):
        with psycopg.connect(dsn, autocommit=autocommit) as conn:
            with pytest.raises(pgqueue.SchemaError, match="run `pgqueue migrate`"):
                admin.prune(conn, 0)
            assert conn.info.transaction_status == TransactionStatus.IDLE
    assert states(dsn)["failed"] == 1


def test_the_schema_is_checked_once_per_connection(dsn: str, conn: psycopg.Connection[Any]) -> None:
    """One read of the revision per connection, not one per call: a connection checked goes
    on past a revision changed since; a new connection is checked once the check the process
    passed on its database is ``CHECK_MEMORY`` seconds old."""
    _finished_jobs_of_ages(dsn)
    assert admin.retry_failed(conn) == 1
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0009'")
    assert admin.prune(conn, 3600) == 2
    conn.commit()
    _age_checks(_schema.CHECK_MEMORY)
    with psycopg.connect(dsn) as other, pytest.raises(pgqueue.SchemaError, match="0009"):
        admin.prune(other, 0)


def _age_checks(seconds: float) -> None:
    """Make every check this process remembers ``seconds`` older, as if that time had passed."""
    for database in _schema._passed_at:
        _schema._passed_at[database] -= seconds


def test_a_new_connection_to_a_database_checked_lately_reads_no_revision(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django opens a connection per request: each read the revision (in a transaction, in a
    savepoint: three round trips) before its app.cancel. A check passed on the database in
    the last ``CHECK_MEMORY`` seconds stands for a new connection's, whatever the DSN's
    spelling; past that, the next new connection is checked, and then stands for the next."""
    query(dsn, "SELECT pgqueue.enqueue('t') FROM generate_series(1, 4)")
    ran, revision = _statements(monkeypatch), _store.schema_revision_get().sql
    spelled = [make_conninfo(dsn, application_name=name) for name in ("a", "b", "c")]
    steps = [(dsn, 0, 1), (spelled[0], _schema.CHECK_MEMORY - 1, 1),  # a new spelling: trusted
             (spelled[1], 1, 2),  # the check is CHECK_MEMORY old: checked again
             (spelled[2], 0, 2)]  # fmt: skip
    for job, (other, age, reads) in enumerate(steps, 1):
        _age_checks(age)
        with psycopg.connect(other, autocommit=job % 2 == 0) as conn:
            conn.execute("SELECT 1")  # in a transaction of the caller's, unless autocommit
            assert APP.cancel(conn, job) == "cancelled"
            conn.commit()
        assert ran.count(revision) == reads, job
    assert states(dsn) == {"cancelled": 4}


async def test_a_new_async_connection_to_a_database_checked_lately_reads_no_revision(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The async twin: a check passed on the database stands for a new connection's."""
    query(dsn, "SELECT pgqueue.enqueue('t') FROM generate_series(1, 2)")
    ran, revision = _statements(monkeypatch), _store.schema_revision_get().sql
    for job in (1, 2):
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            assert await APP.acancel(aconn, job) == "cancelled"
    assert ran.count(revision) == 1


def test_a_check_on_one_database_does_not_stand_for_another(
    dsn: str, conn: psycopg.Connection[Any], empty_dsn: str
) -> None:
    """A check passed on one database of a server says nothing of another's schema."""
    assert APP.get_job(conn, 1) is None
    with psycopg.connect(empty_dsn) as other, pytest.raises(pgqueue.SchemaError, match="migrate"):
        APP.get_job(other, 1)


def test_a_schema_migrated_past_this_code_is_refused_once_the_check_is_old(dsn: str) -> None:
    """A check remembered is one passed: within ``CHECK_MEMORY`` a new connection trusts it;
    once it is that old, a schema migrated since to one this code cannot run on is refused,
    and the refusal is not remembered (each new connection is refused)."""
    with psycopg.connect(dsn) as conn:
        assert APP.get_job(conn, 1) is None
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0009'")
    with psycopg.connect(dsn) as conn:
        assert APP.get_job(conn, 1) is None  # trusted: the check is not yet that old
    _age_checks(_schema.CHECK_MEMORY)
    for _ in range(2):
        with psycopg.connect(dsn) as conn, pytest.raises(pgqueue.SchemaError, match="0009"):
            APP.get_job(conn, 1)


@pytest.fixture
def unread_dsn(dsn: str) -> Iterator[str]:
    """The DSN of a role that may write pgqueue's jobs but not read alembic_version."""
    role = f"pgq_nv_{os.urandom(5).hex()}"
    name = sql.Identifier(role)
    grants = sql.SQL(
        "CREATE ROLE {0} LOGIN; GRANT USAGE ON SCHEMA pgqueue TO {0};"
        " GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgqueue TO {0};"
        " REVOKE ALL ON pgqueue.alembic_version FROM {0};"
        " GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgqueue TO {0};"
        " GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgqueue TO {0}"
    )
    query(dsn, grants.format(name))
    try:
        yield psycopg.conninfo.make_conninfo(dsn, user=role)
    finally:
        query(dsn, sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(name))


def test_a_role_that_may_not_read_the_revision_is_let_through_in_its_transaction(
    dsn: str, unread_dsn: str
) -> None:
    """A role that may not read alembic_version writes what it may, as the CLI lets it: the
    refused read, run in a savepoint, leaves the caller's transaction as it was."""
    query(dsn, "SELECT pgqueue.enqueue('t')")
    with psycopg.connect(unread_dsn) as conn:
        conn.execute("SELECT 1")  # in a transaction of the caller's
        assert admin.cancel_job(conn, 1) == "cancelled"
        conn.commit()
    assert states(dsn) == {"cancelled": 1}


def test_a_check_a_role_could_not_read_is_not_remembered_as_passed(
    dsn: str, unread_dsn: str
) -> None:
    """A role that may not read the revision is let through unchecked: that is no check
    passed, and a new connection of another role checks the schema, migrated since."""
    query(dsn, "SELECT pgqueue.enqueue('t')")
    with psycopg.connect(unread_dsn) as conn:
        assert admin.cancel_job(conn, 1) == "cancelled"
        conn.commit()
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0009'")
    with psycopg.connect(dsn) as conn, pytest.raises(pgqueue.SchemaError, match="0009"):
        APP.get_job(conn, 1)


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_a_pipeline_with_results_pending_is_left_as_it_was(
    dsn: str, unread_dsn: str, autocommit: bool
) -> None:
    """In pipeline mode, a statement's results pending (the transaction's status ACTIVE, not
    INTRANS), a refused read of the revision aborted the caller's transaction: the call then
    failed, InFailedSqlTransaction, and took the caller's writes with it. In a transaction it
    runs in a savepoint; on an autocommit connection, where no savepoint can be made, it waits
    for a call with no results pending."""
    query(dsn, "SELECT pgqueue.enqueue('t')")
    with psycopg.connect(unread_dsn, autocommit=autocommit) as conn:
        with conn.pipeline():
            cur = conn.execute("SELECT pgqueue.enqueue('t')")
            assert conn.info.transaction_status == TransactionStatus.ACTIVE
            assert admin.cancel_job(conn, 1) == "cancelled"
            assert cur.fetchone() == (2,)
        conn.commit()
    assert states(dsn) == {"cancelled": 1, "queued": 1}


async def test_acancel_job_checks_the_schema_as_cancel_job_does(
    dsn: str, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """The async twin checks too, once per connection, in a savepoint of the caller's
    transaction, which stays usable with its write kept."""
    _at_0009(dsn)
    await pgqueue.PgQueue(dsn).using("t").aenqueue(aconn)
    with pytest.raises(pgqueue.SchemaError) as raised:
        await admin.acancel_job(aconn, 1)
    assert str(raised.value) == OLDER
    await aconn.commit()
    assert states(dsn) == {"queued": 2, "succeeded": 2, "failed": 1, "cancelled": 1}
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = %s", [SCHEMA_REVISION])
    assert await admin.acancel_job(aconn, 1) == "cancelled"
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0009'")
    assert await admin.acancel_job(aconn, 2) == "cancelled"  # checked once: not again


def _terminate(dsn: str, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    query(dsn, "SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])


def test_a_connection_the_server_ended_raises_the_servers_error(dsn: str) -> None:
    """On a connection not in autocommit that the server ended (a restart, an administrator),
    the check's failed read was followed by a rollback, whose "the connection is lost" was
    raised in place of the server's own error (AdminShutdown, "terminating connection due to
    administrator command")."""
    with psycopg.connect(dsn) as conn:
        _terminate(dsn, conn)
        with pytest.raises(psycopg.errors.AdminShutdown, match="administrator command"):
            admin.cancel_job(conn, 1)


async def test_an_async_connection_the_server_ended_raises_the_servers_error(dsn: str) -> None:
    """The async twin of the test above."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        _terminate(dsn, conn)
        with pytest.raises(psycopg.errors.AdminShutdown, match="administrator command"):
            await admin.acancel_job(conn, 1)


AREADS: dict[str, Callable[[psycopg.AsyncConnection[Any]], Awaitable[object]]] = {
    "aget_job": lambda aconn: admin.aget_job(aconn, 1),
    "app.aget_job": lambda aconn: APP.aget_job(aconn, 1),
    "app.acancel": lambda aconn: APP.acancel(aconn, 1),
}


@pytest.mark.parametrize("call", AREADS.values(), ids=AREADS.keys())
async def test_an_async_read_or_app_acancel_on_an_older_schema_says_to_migrate(
    dsn: str,
    aconn: psycopg.AsyncConnection[Any],
    call: Callable[[psycopg.AsyncConnection[Any]], Awaitable[object]],
) -> None:
    """The async twins check as the sync ones do, keeping the caller's transaction."""
    _at_0009(dsn)
    await pgqueue.PgQueue(dsn).using("t").aenqueue(aconn)
    with pytest.raises(pgqueue.SchemaError) as raised:
        await call(aconn)
    assert str(raised.value) == OLDER
    await aconn.commit()
    assert states(dsn) == {"queued": 2, "succeeded": 2, "failed": 1, "cancelled": 1}


def _statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements pgqueue's store runs from now on, sync and async, in order."""
    ran: list[str] = []
    run, arun = _store.run, _store.arun

    def counted(cur: Any, query: _store.Query[Any]) -> Any:
        ran.append(query.sql)
        return run(cur, query)

    async def acounted(cur: Any, query: _store.Query[Any]) -> Any:
        ran.append(query.sql)
        return await arun(cur, query)

    monkeypatch.setattr(_store, "run", counted)
    monkeypatch.setattr(_store, "arun", acounted)
    return ran


def test_app_cancel_checks_once_per_connection_and_adds_no_statement_after(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """app.cancel may run per request: its first call on a connection reads the revision,
    the next ones run their cancel alone, even past a revision changed since."""
    query(dsn, "SELECT pgqueue.enqueue('t') FROM generate_series(1, 2)")
    ran = _statements(monkeypatch)
    assert APP.cancel(conn, 1) == "cancelled"
    cancel = _store.jobs_cancel(2).sql
    assert len(ran) == 2 and ran[-1] == cancel
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0009'")
    ran.clear()
    assert APP.cancel(conn, 2) == "cancelled"
    assert ran == [cancel]


async def test_app_acancel_checks_once_per_connection_and_adds_no_statement_after(
    dsn: str, aconn: psycopg.AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The async twin of the test above."""
    query(dsn, "SELECT pgqueue.enqueue('t') FROM generate_series(1, 2)")
    ran = _statements(monkeypatch)
    assert await APP.acancel(aconn, 1) == "cancelled"
    cancel = _store.jobs_cancel(2).sql
    assert len(ran) == 2 and ran[-1] == cancel
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0009'")
    ran.clear()
    assert await APP.acancel(aconn, 2) == "cancelled"
    assert ran == [cancel]


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no_timeout", "timeout"])
async def test_a_wait_reads_no_revision_on_the_connection_it_opens(
    dsn: str, monkeypatch: pytest.MonkeyPatch, timeout: float | None
) -> None:
    """app.wait and app.wait_sync open a connection per wait and read the job on it: through
    get_job, each wait read the revision too (with a timeout, polling, in a savepoint of the
    read's transaction: three round trips more), and wait_sync raised SchemaError on a schema
    a revision behind where the shared async waiter answered. A wait checks none, as the
    shared waiter, and returns the job on any schema it can read."""
    _at_0009(dsn)
    query(dsn, "SELECT pgqueue.cancel(1)")
    app = pgqueue.PgQueue(dsn)
    ran = _statements(monkeypatch)
    for listen in (True, False):
        assert app.wait_sync(1, timeout=timeout, listen=listen).state == "cancelled"
        assert (await app.wait(1, timeout=timeout, listen=listen)).state == "cancelled"
    assert _store.schema_revision_get().sql not in ran


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_a_role_that_may_not_read_the_revision_is_refused_once_per_connection(
    dsn: str, unread_dsn: str, monkeypatch: pytest.MonkeyPatch, autocommit: bool
) -> None:
    """A role that may not read alembic_version is let through, and the refusal is kept for
    the connection's life, as a check passed is: a read refused on every call (a savepoint
    and a server log's ERROR per app.cancel) would make the check its cost on each."""
    query(dsn, "SELECT pgqueue.enqueue('t') FROM generate_series(1, 3)")
    ran = _statements(monkeypatch)
    revision = _store.schema_revision_get().sql
    with psycopg.connect(unread_dsn, autocommit=autocommit) as conn:
        conn.execute("SELECT 1")  # in a transaction of the caller's, unless autocommit
        assert APP.cancel(conn, 1) == "cancelled"
        assert ran.count(revision) == 1
        assert APP.cancel(conn, 2) == "cancelled"
        assert APP.get_job(conn, 3) is not None
        conn.commit()
    assert ran.count(revision) == 1
    assert states(dsn) == {"cancelled": 2, "queued": 1}
