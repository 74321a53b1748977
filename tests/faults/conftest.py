"""Fixtures of the fault-injection suite: a ledger table and a fleet of real workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Fleet, create_ledger, fleet_of


@pytest.fixture
def ledger_dsn(dsn: str) -> str:
    """The test database, with the execution ledger created."""
    create_ledger(dsn)
    return dsn


@pytest.fixture
def fleet(ledger_dsn: str, tmp_path: Path) -> Iterator[Fleet]:
    """Real worker processes on the test database, stopped at the end."""
    yield from fleet_of(ledger_dsn, tmp_path)
