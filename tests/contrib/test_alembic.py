"""Alembic in the user's project: pgqueue's schema in their history, hidden from autogenerate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import BigInteger, Column, MetaData, Table, create_engine, inspect
from sqlalchemy.pool import NullPool

import pgqueue
from pgqueue.contrib.alembic import include_name, include_object
from tests.contrib.catalog import catalog
from tests.contrib.test_sqlalchemy import url
from tests.helpers import query

INI = os.path.join("examples", "alembic", "alembic.ini")


def alembic(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the example project's alembic command on ``dsn``."""
    env = {**os.environ, "DATABASE_URL": url(dsn)}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", INI, *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_users_history_installs_the_same_schema_as_pgqueue_migrate(dsn, empty_dsn) -> None:
    """The example's `alembic upgrade head` creates pgqueue's schema exactly as pgqueue does."""
    done = alembic(empty_dsn, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert catalog(empty_dsn) == catalog(dsn)
    assert pgqueue.schema_check(empty_dsn) is None
    assert query(empty_dsn, "SELECT version_num FROM public.alembic_version") == [("a10",)]


def test_users_history_on_a_database_pgqueue_migrated_changes_nothing(dsn: str) -> None:
    """upgrade_ops skips a schema pgqueue migrate already installed; the user's tables come."""
    before = catalog(dsn)
    done = alembic(dsn, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert catalog(dsn) == before
    assert query(dsn, "SELECT count(*) FROM orders") == [(0,)]


def test_downgrade_leaves_pgqueues_schema_and_jobs_and_upgrade_finds_them(empty_dsn) -> None:
    """As the docs say: `alembic downgrade` undoes the user's changes only; pgqueue's schema,
    and the jobs in it, stay current, and upgrading again installs nothing of pgqueue's."""
    assert alembic(empty_dsn, "upgrade", "head").returncode == 0
    with psycopg.connect(empty_dsn) as conn:
        pgqueue.PgQueue().using("kept").enqueue(conn)
    done = alembic(empty_dsn, "downgrade", "base")
    assert done.returncode == 0, done.stderr
    assert query(empty_dsn, "SELECT to_regclass('public.orders') IS NULL") == [(True,)]
    assert pgqueue.schema_check(empty_dsn) is None
    after_downgrade = catalog(empty_dsn)
    done = alembic(empty_dsn, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert query(empty_dsn, "SELECT task FROM pgqueue.jobs") == [("kept",)]
    assert catalog(empty_dsn) == after_downgrade
    assert query(empty_dsn, "SELECT count(*) FROM orders") == [(0,)]
    assert pgqueue.schema_check(empty_dsn) is None


def test_alembic_check_finds_nothing_to_do_with_the_filter(empty_dsn: str) -> None:
    """After upgrade, `alembic check` (autogenerate) proposes nothing about pgqueue's tables."""
    assert alembic(empty_dsn, "upgrade", "head").returncode == 0
    done = alembic(empty_dsn, "check")
    assert done.returncode == 0, done.stderr + done.stdout


@pytest.mark.parametrize("hook", ["include_name", "include_object", None])
def test_autogenerate_drops_pgqueue_tables_only_without_a_hook(dsn: str, hook: str | None) -> None:
    """Without a hook, autogenerate wants to drop pgqueue's tables; either hook stops that.
    SQLAlchemy releases before the fix of sqlalchemy#13472 list no schema named ``pg`` plus a
    character (``NOT LIKE 'pg_%'``), so autogenerate never sees pgqueue's schema there."""
    engine = create_engine(url(dsn), poolclass=NullPool)
    hooks = {"include_name": include_name, "include_object": include_object}
    opts = {"include_schemas": True} | ({hook: hooks[hook]} if hook else {})
    try:
        with engine.connect() as conn:
            listed = "pgqueue" in inspect(conn).get_schema_names()
            diff = compare_metadata(MigrationContext.configure(conn, opts=opts), MetaData())
    finally:
        engine.dispose()
    dropped = {d[1].name for d in diff if d[0] == "remove_table"}
    assert ("active_jobs" in dropped) == (hook is None and listed)


def jobs_model() -> MetaData:
    """Metadata with a read-only model of pgqueue's jobs view, as a project may map it."""
    metadata = MetaData()
    Table("jobs", metadata, Column("id", BigInteger, primary_key=True), schema="pgqueue")
    return metadata


@pytest.mark.parametrize("include_schemas", [True, False])
@pytest.mark.parametrize("hook", ["include_name", "include_object"])
def test_a_model_of_pgqueues_jobs_needs_include_object(dsn, hook, include_schemas) -> None:
    """include_name never sees the metadata's objects: with it alone, a model of pgqueue.jobs
    makes autogenerate propose to create the table, include_schemas or not; include_object
    (which the docs and the example's env.py pass too) keeps it out."""
    engine = create_engine(url(dsn), poolclass=NullPool)
    hooks = {"include_name": include_name, "include_object": include_object}
    opts = {"include_schemas": include_schemas, hook: hooks[hook]}
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts=opts), jobs_model())
    finally:
        engine.dispose()
    added = {d[1].fullname for d in diff if d[0] == "add_table"}
    assert added == ({"pgqueue.jobs"} if hook == "include_name" else set())


ASYNC_ENV = """
import asyncio, os
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

def run(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()

async def main():
    engine = create_async_engine(os.environ["DATABASE_URL"], poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run)
    await engine.dispose()

asyncio.run(main())
"""

ASYNC_REVISION = """
from alembic import op
from pgqueue.contrib.alembic import upgrade_ops

revision, down_revision = {revision!r}, {down!r}

def upgrade():
    assert upgrade_ops(op, {pgqueue!r})
"""


def upgrade_project(
    path: Path, env_py: str, revisions: list[tuple[str, str | None, str]], dsn: str
) -> subprocess.CompletedProcess[str]:
    """Write an alembic project at ``path`` (its ``env.py``, and a revision calling upgrade_ops
    per ``(revision, down_revision, pgqueue revision)``) and run its `upgrade head` on ``dsn``."""
    (path / "versions").mkdir(exist_ok=True)
    (path / "env.py").write_text(env_py)
    for revision, down, pgqueue_revision in revisions:
        text = ASYNC_REVISION.format(revision=revision, down=down, pgqueue=pgqueue_revision)
        (path / "versions" / f"{revision}.py").write_text(text)
    ini = path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {path}\n")
    env = {**os.environ, "DATABASE_URL": url(dsn)}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_async_alembic_env_installs_the_schema(dsn: str, empty_dsn: str, tmp_path) -> None:
    """Under alembic's async template (run_sync on create_async_engine), upgrade_ops installs
    pgqueue's schema step by step, as `pgqueue migrate` does. It raised a TypeError that named
    the postgresql+psycopg driver and asked for a postgresql+psycopg:// URL."""
    done = upgrade_project(
        tmp_path, ASYNC_ENV, [("b1", None, "0005"), ("b2", "b1", "0010")], empty_dsn
    )
    assert done.returncode == 0, done.stderr
    assert catalog(empty_dsn) == catalog(dsn)
    assert pgqueue.schema_check(empty_dsn) is None


VERSION_SCHEMA_ENV = """
import os
from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

engine = create_engine(os.environ["DATABASE_URL"], poolclass=NullPool)
with engine.connect() as connection:
    connection.execute(text({setup!r}))
    connection.commit()
    context.configure(connection=connection, version_table_schema={schema!r})
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""


def test_a_version_table_in_pgqueues_schema_is_refused(empty_dsn: str, tmp_path) -> None:
    """An env.py with version_table_schema="pgqueue" records the project's history in
    pgqueue.alembic_version, where pgqueue records its revision: upgrade_ops refuses, naming
    the setting, and nothing is installed. Both revisions went into that table, and the next
    `alembic upgrade` stopped on "Can't locate revision identified by '0010'"."""
    env_py = VERSION_SCHEMA_ENV.format(schema="pgqueue", setup="CREATE SCHEMA pgqueue")
    done = upgrade_project(tmp_path, env_py, [("b1", None, "0010")], empty_dsn)
    assert done.returncode != 0
    assert "ConfigurationError" in done.stderr and "version_table_schema" in done.stderr
    assert query(empty_dsn, "SELECT to_regclass('pgqueue.alembic_version')") == [(None,)]


def test_a_search_path_naming_pgqueue_first_is_refused(empty_dsn: str, tmp_path) -> None:
    """No version_table_schema, but a search_path with pgqueue first: alembic's unqualified
    version table resolves to pgqueue.alembic_version once upgrade_ops created it. Refused,
    naming the search_path, and nothing is installed. Both revisions went into that table,
    and the next `alembic upgrade` stopped on "Can't locate revision identified by '0010'"."""
    env_py = VERSION_SCHEMA_ENV.format(schema=None, setup="SET search_path TO pgqueue, public")
    done = upgrade_project(tmp_path, env_py, [("b1", None, "0010")], empty_dsn)
    assert done.returncode != 0
    assert "ConfigurationError" in done.stderr and "search_path" in done.stderr
    assert query(empty_dsn, "SELECT to_regclass('pgqueue.alembic_version')") == [(None,)]


def test_a_version_table_in_a_schema_of_the_projects_own(dsn, empty_dsn, tmp_path) -> None:
    """version_table_schema="app": the project's history is recorded there, pgqueue's revision
    in pgqueue.alembic_version, each alone, and upgrading again changes nothing."""
    env_py = VERSION_SCHEMA_ENV.format(schema="app", setup="CREATE SCHEMA IF NOT EXISTS app")
    for _ in range(2):
        done = upgrade_project(tmp_path, env_py, [("b1", None, "0010")], empty_dsn)
        assert done.returncode == 0, done.stderr
    assert query(empty_dsn, "SELECT version_num FROM app.alembic_version") == [("b1",)]
    assert query(empty_dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0010",)]
    assert catalog(empty_dsn) == catalog(dsn)
