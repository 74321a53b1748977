"""A schema newer than the code: the code runs on it when the schema says so
(pgqueue.compatible_since(), rev. 0007), and refuses it otherwise."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
import pgqueue.testing
from pgqueue import _embed, _migrate, _schema, _store
from pgqueue._embed import install_revision
from pgqueue._errors import SchemaError
from pgqueue._ops import health_problem
from pgqueue._schema import KNOWN_REVISIONS, SCHEMA_REVISION
from tests.acceptance.conftest import cli
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t

NEWER = "upgrade pgqueue"


def from_the_future(dsn: str, compatible_since: str | None) -> None:
    """Make the database look migrated by a later pgqueue: revision 0042, serving code that
    needs ``compatible_since`` or later (None: a schema without the function)."""
    query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0042'")
    query(dsn, "DROP FUNCTION pgqueue.compatible_since()")
    if compatible_since is not None:
        query(dsn, psycopg.sql.SQL(
            "CREATE FUNCTION pgqueue.compatible_since() RETURNS text LANGUAGE sql"
            " AS $$ SELECT {}::text $$").format(psycopg.sql.Literal(compatible_since)))  # fmt: skip


def embedded_install(dsn: str, revision: str) -> bool:
    """What Django's migrations and alembic's upgrade_ops() run: whether anything was applied."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        return install_revision(cur, revision, lambda text: cur.execute(text.encode()))


def code_needing(monkeypatch: pytest.MonkeyPatch, revision: str) -> None:
    """Make this process the pgqueue release whose code needs ``revision`` (and knows no
    later one)."""
    monkeypatch.setattr(_schema, "SCHEMA_REVISION", revision)
    known = KNOWN_REVISIONS[: KNOWN_REVISIONS.index(revision) + 1]
    for module in (_schema, _embed, _migrate):
        monkeypatch.setattr(module, "KNOWN_REVISIONS", known)


def test_a_fresh_schema_serves_the_code_that_installed_it(dsn: str) -> None:
    """It serves code needing 0007 to 0009 too: 0008 and 0010 changed function bodies only
    and 0009 added a table, so all kept compatible_since() at 0007."""
    assert query(dsn, "SELECT pgqueue.compatible_since()") == [("0007",)]
    assert pgqueue.schema_check(dsn) is None


@pytest.mark.parametrize("needed", ["0007", "0008", "0009"])
async def test_older_code_runs_on_0010(
    dsn: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, needed: str,
) -> None:  # fmt: skip
    """A worker of a release that needs 0007, 0008 or 0009, restarted after `pgqueue migrate`
    installed 0010, starts and runs jobs, and its checks and embedded installs (Django,
    alembic upgrade_ops) pass without changing anything."""
    assert query(dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0010",)]
    code_needing(monkeypatch, needed)
    assert pgqueue.schema_check(dsn) is None
    assert health_problem(dsn) is None
    assert not embedded_install(dsn, needed)
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    with caplog.at_level(logging.INFO, logger="pgqueue.worker"):
        await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 1})
    [newer] = [r for r in caplog.records if getattr(r, "action", "") == "schema_newer"]
    assert f"revision 0010, newer than this version's {needed}" in newer.getMessage()
    assert query(dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0010",)]


async def test_older_code_runs_on_a_newer_schema_that_serves_it(
    dsn: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Before 0007 a worker refused any newer revision: during a rolling deploy one still on
    the old code that restarted after the migration could not start. Now it starts, says so,
    and runs jobs; the health check and `pgqueue migrate --check` pass, and `pgqueue migrate`
    leaves the newer schema alone."""
    from_the_future(dsn, SCHEMA_REVISION)
    assert pgqueue.schema_check(dsn) is None
    assert health_problem(dsn) is None
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    with caplog.at_level(logging.INFO, logger="pgqueue.worker"):
        await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 1})
    [newer] = [r for r in caplog.records if getattr(r, "action", "") == "schema_newer"]
    assert "revision 0042, newer than this version's" in newer.getMessage()
    assert cli(dsn, "migrate", "--check").returncode == 0
    migrated = cli(dsn, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert query(dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0042",)]
    assert not embedded_install(dsn, "0001") and not embedded_install(dsn, SCHEMA_REVISION)


@pytest.mark.parametrize("compatible_since", ["0042", None, "not a revision"])
async def test_older_code_refuses_a_newer_schema_that_does_not_serve_it(
    dsn: str, compatible_since: str | None
) -> None:
    """A newer schema that needs newer code (or says nothing, or something this code cannot
    read) is refused everywhere, `pgqueue migrate` included, with the fix: upgrade pgqueue."""
    from_the_future(dsn, compatible_since)
    expected = "pgqueue's schema is at revision 0042, newer than this version: upgrade pgqueue"
    assert pgqueue.schema_check(dsn) == expected
    assert health_problem(dsn) == expected
    with pytest.raises(SchemaError, match=NEWER):
        await t.app.worker(dsn=dsn, queues=["io"]).run()
    checked = cli(dsn, "migrate", "--check")
    assert checked.returncode == 1 and expected in checked.stderr
    migrated = cli(dsn, "migrate")  # alembic could not place 0042: a traceback, before
    assert (migrated.returncode, migrated.stderr) == (1, f"Error: {expected}\n")
    with pytest.raises(SchemaError, match=NEWER):
        await pgqueue.testing.adrain(t.app, dsn=dsn)
    # Django's migrations and alembic's upgrade_ops() passed it as "already installed", and
    # only the workers refused it afterwards.
    for revision in ("0001", SCHEMA_REVISION):
        with pytest.raises(SchemaError, match=f"^{re.escape(expected)}$"):
            embedded_install(dsn, revision)
    assert query(dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0042",)]


def test_a_current_or_older_schema_is_read_without_its_compatibility(dsn: str) -> None:
    """The compatibility is read only when the schema is newer than the code (the common
    case, code and schema at one revision, reads what it read before)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        from pgqueue._schema import schema_state

        assert schema_state(conn) == (True, SCHEMA_REVISION, None)
        query(dsn, "UPDATE pgqueue.alembic_version SET version_num = '0006'")
        assert schema_state(conn) == (True, "0006", None)


def test_a_role_that_may_not_call_the_function_is_refused_not_failed(dsn: str) -> None:
    """Where EXECUTE was revoked from PUBLIC (a hardening step) the read failed with
    InsufficientPrivilege; now such a role is refused with the usual line until it may call
    the function (roles.sql grants it to pgqueue_worker and pgqueue_producer)."""
    from_the_future(dsn, SCHEMA_REVISION)
    role = f"pgq_compat_{uuid.uuid4().hex[:8]}"
    query(dsn, "REVOKE EXECUTE ON FUNCTION pgqueue.compatible_since() FROM PUBLIC")
    query(dsn, psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(role)))
    try:
        query(dsn, psycopg.sql.SQL("GRANT USAGE ON SCHEMA pgqueue TO {0};"
                                   " GRANT SELECT ON pgqueue.alembic_version TO {0}").format(
            psycopg.sql.Identifier(role)))  # fmt: skip
        as_role = make_conninfo(dsn, user=role)
        assert pgqueue.schema_check(as_role) == (
            "pgqueue's schema is at revision 0042, newer than this version: upgrade pgqueue"
        )
        query(dsn, psycopg.sql.SQL("GRANT EXECUTE ON FUNCTION pgqueue.compatible_since() TO {}")
              .format(psycopg.sql.Identifier(role)))  # fmt: skip
        assert pgqueue.schema_check(as_role) is None
    finally:
        query(dsn, psycopg.sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(
            psycopg.sql.Identifier(role)))  # fmt: skip


def test_functions_taking_a_dsn_accept_a_sqlalchemy_url(dsn: str) -> None:
    """postgresql+psycopg:// URLs, which PgQueue(dsn=...) and Worker(dsn=...) take, work for
    pgqueue.migrate, schema_check and health_problem too; they refused them as malformed."""
    url = "postgresql+psycopg:///?" + urlencode(conninfo_to_dict(dsn))
    pgqueue.migrate(url)
    assert (pgqueue.schema_check(url), health_problem(url)) == (None, None)


MIGRATE_WAITING = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.mark.parametrize("compatible_since", ["0007", "0042"])
def test_a_migrate_that_waited_for_a_later_pgqueues_migration_says_what_it_found(
    empty_dsn: str, compatible_since: str
) -> None:
    """`pgqueue migrate` found the schema behind, then waited on the migration lock while a
    later pgqueue migrated it: alembic could not place the revision it then found, and the
    migrate ended on its traceback, even when that schema serves this version. Now it ends
    as if it had found that schema first: done, or "upgrade pgqueue"."""
    embedded_install(empty_dsn, "0008")
    with psycopg.connect(empty_dsn) as later, ThreadPoolExecutor(1) as pool:
        later.execute(_store.schema_lock().sql)
        migrating = pool.submit(pgqueue.migrate, empty_dsn)
        deadline = time.monotonic() + 60
        while query(empty_dsn, MIGRATE_WAITING) != [(1,)] and not migrating.done():
            assert time.monotonic() < deadline, "pgqueue.migrate never waited for the lock"
            time.sleep(0.02)
        later.execute("UPDATE pgqueue.alembic_version SET version_num = '0042'")
        later.execute(psycopg.sql.SQL(
            "CREATE OR REPLACE FUNCTION pgqueue.compatible_since() RETURNS text LANGUAGE sql"
            " AS $$ SELECT {}::text $$").format(psycopg.sql.Literal(compatible_since)))  # fmt: skip
        later.commit()
        if compatible_since == "0007":  # the revisions it found before it waited, and after
            assert migrating.result(timeout=60) == ("0008", "0042")
        else:
            with pytest.raises(SchemaError, match=f"revision 0042, newer than .*{NEWER}"):
                migrating.result(timeout=60)
    assert query(empty_dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0042",)]


async def test_a_worker_refused_at_start_leaves_no_connection_opening(
    empty_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started before `pgqueue migrate` raises SchemaError once the connections it
    opened meanwhile are closed: it returned while one was still being cancelled, and the
    exit interrupted that cancellation, which psycopg logged as a WARNING above the error."""
    for _ in range(10):  # the connections are opened during the check: a race, so ten tries
        with pytest.raises(SchemaError, match="not installed"):
            await t.app.worker(dsn=empty_dsn, queues=["io"]).run()
        assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [r.getMessage() for r in caplog.records if r.name == "psycopg"] == []
