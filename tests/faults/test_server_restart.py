"""Scenario 4: ``pg_ctl restart -m immediate`` under load, on a private server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import migrate
from tests.faults.harness import Fleet, all_done, create_ledger, fleet_of, verdict, wait_for
from tests.faults.ledger_app import record, slow_record
from tests.faults.private_pg import PrivateServer
from tests.helpers import query

JOBS = 600


@pytest.fixture
def private() -> Iterator[tuple[PrivateServer, str]]:
    """A private server this test may restart, with a migrated database and the ledger."""
    server = PrivateServer()
    try:
        query(server.dsn, "CREATE DATABASE faults")
        dsn = server.dsn.rsplit("/", 1)[0] + "/faults"
        migrate(dsn)
        create_ledger(dsn)
        yield server, dsn
    finally:
        server.destroy()


@pytest.mark.slow
def test_immediate_restart_loses_nothing_and_workers_reconnect(
    private: tuple[PrivateServer, str], tmp_path: Path
) -> None:
    """Workers survive a crash-restart of PostgreSQL, reconnect, and finish every job."""
    server, dsn = private
    for fleet in fleet_of(dsn, tmp_path):
        _run(server, dsn, fleet)


def _run(server: PrivateServer, dsn: str, fleet: Fleet) -> None:
    with psycopg.connect(dsn) as conn:
        slow_record.enqueue_many(conn, [((2,), {}) for _ in range(JOBS)])
        conn.commit()
    for name in ("a", "b"):
        fleet.start(name, lease=3, rescue=0.5)
    wait_for(lambda: query(dsn, "SELECT count(*) FROM fault_ledger")[0][0] >= 100, 60,
             "the load to be under way")  # fmt: skip
    server.restart_immediate()
    accepted = time.monotonic()
    with psycopg.connect(dsn) as conn:
        probe = record.enqueue(conn, 0)
        conn.commit()
    probe_done = "SELECT count(*) FROM fault_ledger WHERE job_id = %s"
    wait_for(lambda: query(dsn, probe_done, [probe])[0][0], 30, "the probe job")
    reconnect = time.monotonic() - accepted
    wait_for(all_done(dsn, JOBS + 1), 120, "every job after the restart")
    others = verdict(dsn, slow_record.name)
    print(json.dumps({"scenario": 4, "reconnect_and_run_probe_s": round(reconnect, 2),
                      **others.as_dict()}))  # fmt: skip
    assert (others.jobs, others.lost, others.duplicates, others.running) == (JOBS, 0, 0, 0)
    assert reconnect < 10
    assert all(w.alive for w in fleet.workers)
    for worker in fleet.workers:
        wait_for(lambda w=worker: "LISTEN re-established" in w.text(), 15, "LISTEN restored")
