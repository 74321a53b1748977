"""pytest plugin (loaded through the ``pytest11`` entry point): databases for your tests.

Fixtures are prefixed ``pgqueue_`` so they never shadow yours:

- ``pgqueue_dsn``: the DSN of a fresh database with pgqueue's schema, for this test only;
- ``pgqueue_conn``: a psycopg connection to it (not autocommit; closed after the test).

The server comes from ``PGQUEUE_TEST_DSN``, else testcontainers (with a Docker engine), else
an embedded ``pgserver``; without any, the tests using these fixtures are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue._errors import ConfigurationError
from pgqueue._testdb import NO_SERVER, Server, find_server, migrated_template


@pytest.fixture(scope="session")
def pgqueue_server() -> Iterator[Server]:
    """A PostgreSQL server where test databases may be created."""
    try:
        server = find_server()
    except ConfigurationError as exc:  # a setting to fix: say which, not psycopg's traceback
        pytest.fail(str(exc), pytrace=False)
    if server is None:
        pytest.skip(NO_SERVER)
    yield server
    server.close()


@pytest.fixture(scope="session")
def pgqueue_template(pgqueue_server: Server) -> Iterator[str]:
    """A database migrated once per session, cloned for each test."""
    with migrated_template(pgqueue_server) as name:
        yield name


@pytest.fixture
def pgqueue_dsn(pgqueue_server: Server, pgqueue_template: str) -> Iterator[str]:
    """The DSN of a fresh database with pgqueue's schema, dropped after the test."""
    name = pgqueue_server.create(template=pgqueue_template, prefix="pgqueue_user_test")
    yield pgqueue_server.dsn_for(name)
    pgqueue_server.drop(name)


@pytest.fixture
def pgqueue_conn(pgqueue_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection (not autocommit) to ``pgqueue_dsn``."""
    with psycopg.connect(pgqueue_dsn) as conn:
        yield conn
