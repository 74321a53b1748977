"""Database fixtures: a server per session, a migrated template, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._testdb import NO_SERVER, Server, find_server, migrated_template


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow scenarios run when PGQUEUE_SLOW=1 (CI sets it), so a default run stays quick."""
    if os.environ.get("PGQUEUE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow scenario: set PGQUEUE_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """A PostgreSQL server where the suite may create databases."""
    server = find_server()
    if server is None:
        pytest.skip(NO_SERVER)
    yield server
    server.close()


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    """The name of a database migrated once per session, cloned by every test."""
    with migrated_template(pg_server) as name:
        yield name


@pytest.fixture
def dsn(pg_server: Server, template_db: str) -> Iterator[str]:
    """The DSN of a fresh, migrated database of this test's own."""
    name = pg_server.create(template=template_db)
    yield pg_server.dsn_for(name)
    pg_server.drop(name)


@pytest.fixture
def empty_dsn(pg_server: Server) -> Iterator[str]:
    """The DSN of a fresh database without pgqueue's schema."""
    name = pg_server.create()
    yield pg_server.dsn_for(name)
    pg_server.drop(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A sync connection (not autocommit) to the test database."""
    with psycopg.connect(dsn) as connection:
        yield connection


@pytest.fixture
async def aconn(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An async connection (not autocommit) to the test database."""
    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        yield connection


@pytest.fixture
def app(dsn: str) -> pgqueue.PgQueue:
    """An empty app bound to the test database."""
    return pgqueue.PgQueue(dsn)
