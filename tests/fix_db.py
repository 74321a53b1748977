"""Database fixtures: a server per session, a migrated template, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._testdb import Server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow scenarios run when PGQUEUE_SLOW=1 (CI sets it), so a default run stays quick."""
    if os.environ.get("PGQUEUE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow scenario: set PGQUEUE_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# The server, the migrated template and the per-test database are those of the pytest plugin
# pgqueue ships to its users (pgqueue.testing.pytest_plugin), so both share one server.


@pytest.fixture(scope="session")
def pg_server(pgqueue_server: Server) -> Server:
    """A PostgreSQL server where the suite may create databases."""
    return pgqueue_server


@pytest.fixture(scope="session")
def template_db(pgqueue_template: str) -> str:
    """The name of a database migrated once per session, cloned by every test."""
    return pgqueue_template


@pytest.fixture
def dsn(pgqueue_dsn: str) -> str:
    """The DSN of a fresh, migrated database of this test's own."""
    return pgqueue_dsn


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
