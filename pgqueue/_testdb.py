"""Throwaway PostgreSQL databases for tests: ours, and (through pgqueue.testing) our users'.

Where a server comes from, in order: ``PGQUEUE_TEST_DSN``; a testcontainers PostgreSQL when a
Docker engine answers; an embedded ``pgserver``; otherwise ``None`` with the reasons.
Each test gets a fresh database cloned from a template migrated once per session.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue._connections import dsn_variable, normalize_dsn
from pgqueue._errors import ConfigurationError, first_line


@dataclass
class Server:
    """An admin DSN on a server where databases may be created and dropped."""

    dsn: str
    origin: str
    _stop: Callable[[], None] | None = None
    _names: list[str] = field(default_factory=list)

    def dsn_for(self, dbname: str) -> str:
        """The DSN of database ``dbname`` on this server."""
        return make_conninfo(self.dsn, dbname=dbname)

    def create(self, template: str | None = None, prefix: str = "pgqueue_test") -> str:
        """Create a new database (optionally copied from ``template``); returns its name."""
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement)
        self._names.append(name)
        return name

    def drop(self, name: str) -> None:
        """Drop database ``name``, disconnecting anyone still on it."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        with contextlib.suppress(ValueError):
            self._names.remove(name)

    def close(self) -> None:
        """Drop what this object created and stop the server if it started one."""
        for name in list(self._names):
            with contextlib.suppress(psycopg.Error):
                self.drop(name)
        if self._stop:
            self._stop()


def _from_env() -> Server | None:
    dsn = dsn_variable("PGQUEUE_TEST_DSN")
    if dsn is None:
        return None
    try:
        dsn = normalize_dsn(dsn)
    except ConfigurationError as exc:  # it named no setting: which one to fix, as below
        raise ConfigurationError(f"PGQUEUE_TEST_DSN: {exc}") from None
    return Server(_answering(dsn), "PGQUEUE_TEST_DSN")


def _answering(dsn: str) -> str:
    """``dsn``, once a connection to it opens: a database it names that does not exist (the
    one the tests are meant to use, say) errored every test with psycopg's traceback."""
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        raise ConfigurationError(
            f"PGQUEUE_TEST_DSN: cannot connect ({first_line(exc)}); it names an existing "
            "database (postgres, say) and a role that may create databases: each test's "
            "database is created beside it"
        ) from None
    return dsn


def _postgres_container() -> Any:
    """testcontainers' PostgresContainer class, from where this version keeps it (4.14 moved
    it to ``testcontainers.community``, and importing the old place warns)."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer


def _from_docker() -> Server | None:
    try:
        import docker  # type: ignore[import-untyped]

        container_class = _postgres_container()
        docker.from_env(timeout=3).ping()
    except Exception:  # no client library, or no engine answering
        return None
    container = container_class("postgres:16-alpine", driver=None)
    try:
        container.start()
    except Exception as exc:  # an engine that answers but cannot pull or run the image
        with contextlib.suppress(Exception):
            container.stop()
        _report(
            "a Docker engine answers but testcontainers could not start PostgreSQL in it "
            f"({type(exc).__name__}: {first_line(exc)}); looking further: set "
            "PGQUEUE_TEST_DSN, or install the embedded server with "
            "pip install 'pgqueue[embedded]'"
        )
        return None
    return Server(container.get_connection_url(), "testcontainers", container.stop)


def _report(text: str) -> None:
    """Warn, never raise, whatever the filters say (pytest's ``filterwarnings = error``):
    the search goes on, and the warning says why it did."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(text, RuntimeWarning, stacklevel=4)


def _from_pgserver() -> Server | None:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI containers): harmless here.
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            return None
        server = pgserver.get_server(  # type: ignore[attr-defined]
            tempfile.mkdtemp(prefix="pgqueue-pgserver-"), cleanup_mode="delete"
        )
    info = conninfo_to_dict(server.get_uri())
    return Server(make_conninfo("", **info), "pgserver", server.cleanup)


def find_server() -> Server | None:
    """The first server available, in the documented order, or ``None``."""
    for source in (_from_env, _from_docker, _from_pgserver):
        server = source()
        if server is not None:
            return server
    return None


NO_SERVER = (
    "no PostgreSQL for tests: set PGQUEUE_TEST_DSN, start a Docker engine (testcontainers), "
    "or install the embedded server with pip install 'pgqueue[embedded]'"
)


@contextlib.contextmanager
def migrated_template(server: Server) -> Iterator[str]:
    """A database with pgqueue's schema, to clone per test; dropped afterwards."""
    from pgqueue._migrate import migrate

    name = server.create(prefix="pgqueue_template")
    try:
        migrate(server.dsn_for(name))
        yield name
    finally:
        server.drop(name)
