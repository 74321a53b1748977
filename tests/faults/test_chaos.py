"""Scenario 9: every kind of outcome (success, failure with retries left and on the last
attempt, Retry() giving its attempt back, Retry(delay), timeouts, cancels while running,
unique and scheduled jobs, async and thread tasks) under lost replies, killed connections and
killed workers: the ledger of what ran must agree with every job's row (see chaos.judge)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgqueue._worker._faults import STAGES
from tests.faults.chaos import create_chaos_ledger, enqueue_chaos, judge, outcomes
from tests.faults.harness import Fleet, all_done, fleet_of, wait_for
from tests.faults.proxy import LossyProxy, serving
from tests.helpers import query

COPIES = 4  # jobs of each plan on each executor: 96 jobs
WORKERS = 3
LEASE, RESCUE = 3.0, 0.5
# Acks do not wake other workers: a job a Retry() put back is claimed again at their next poll.
# A short poll makes that claim likely before an ack whose reply was lost is written again.
POLL = 0.05
ACK = b"jsonb_array_elements"  # in JOBS_ACK's text, and in no other statement a worker sends
CLAIM = b"SET state = 'running'"  # in every claim statement


@pytest.fixture
def chaos_dsn(ledger_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test database with the chaos ledger, which tasks write directly (not through a
    proxy their worker may be behind)."""
    create_chaos_ledger(ledger_dsn)
    monkeypatch.setenv("FAULTS_LEDGER_DSN", ledger_dsn)
    return ledger_dsn


def _drive(dsn: str, fleet: Fleet, seed: int, fault: Callable[[], str | None]) -> dict[str, int]:
    """Enqueue the workload, keep WORKERS workers running (a dead one is replaced, with the
    fault ``fault()`` names), wait for every job to end, and judge the ledger."""
    enqueued = enqueue_chaos(dsn, COPIES, seed)
    started: list[str] = []

    def start() -> None:
        started.append(f"w{len(started)}")
        fleet.start(started[-1], queues="chaos", concurrency=8, lease=LEASE, rescue=RESCUE,
                    poll=POLL, fault=fault())  # fmt: skip

    for _ in range(WORKERS):
        start()

    def finished() -> bool:
        for _ in range(WORKERS - sum(w.alive for w in fleet.workers)):
            start()
        return all_done(dsn, len(enqueued.plans))()

    wait_for(finished, 50, "every chaos job to end")
    wrong = judge(dsn, enqueued)
    figures = {**outcomes(dsn), "workers_started": len(started)}
    print(json.dumps({"scenario": 9, "seed": seed, **figures, "wrong": len(wrong)}))
    for job_id in wrong:  # what the ledger and the job's row say, to read a failure by
        print(
            job_id,
            query(dsn, "SELECT * FROM chaos_ledger WHERE job_id = %s ORDER BY run", [job_id]),
        )
        print(job_id, query(dsn, "SELECT * FROM pgqueue.jobs WHERE id = %s", [job_id]))
    assert wrong == {}
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
def test_lost_replies_to_acks_and_claims(chaos_dsn: str, tmp_path: Path, seed: int) -> None:
    """A fifth of acks and a twentieth of claims lose their reply (or never reach the server),
    at random."""
    markers = {ACK: 0.2, CLAIM: 0.05}
    proxy = LossyProxy(chaos_dsn, markers, (b"pgqueue acker", b"pgqueue claimer"), seed)
    with serving(proxy):
        for fleet in fleet_of(proxy.dsn, tmp_path):
            _drive(chaos_dsn, fleet, seed, lambda: None)
    print(json.dumps({"lost": proxy.lost}))
    assert proxy.lost["reply"] and proxy.lost["statement"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_workers_killed_at_every_crash_point(chaos_dsn: str, fleet: Fleet, seed: int) -> None:
    """Workers are SIGKILLed at random crash points, 8 times; each is replaced."""
    rng = random.Random(seed)
    crashes = iter([rng.choice(STAGES) for _ in range(8)])
    figures = _drive(chaos_dsn, fleet, seed, lambda: next(crashes, None))
    assert figures["workers_started"] > WORKERS + 8 - 1  # the faults did strike


ROLES = ("acker", "claimer", "maintenance", "listener")


def _terminate(dsn: str, rng: random.Random, stop: threading.Event, killed: list[str]) -> None:
    """Every 0.05 to 0.2 s, terminate a worker's backend chosen at random among those of the
    next role in turn (acker, claimer, maintenance, LISTEN: each order shuffled)."""
    turns = (role for _ in iter(int, 1) for role in rng.sample(ROLES, len(ROLES)))
    while not stop.wait(rng.uniform(0.05, 0.2)):
        role = next(turns)
        backends = query(dsn, "SELECT pid FROM pg_stat_activity "
                              "WHERE datname = current_database() AND application_name = %s "
                              "ORDER BY pid", [f"pgqueue {role}"])  # fmt: skip
        if backends:
            query(dsn, "SELECT pg_terminate_backend(%s)", [rng.choice(backends)[0]])
            killed.append(role)


@pytest.fixture
def terminator(chaos_dsn: str) -> Iterator[Callable[[int], list[str]]]:
    """Starts terminating worker backends at random; stopped at the end."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    killed: list[str] = []

    def begin(seed: int) -> list[str]:
        args = (chaos_dsn, random.Random(seed), stop, killed)
        threads.append(threading.Thread(target=_terminate, args=args, daemon=True))
        threads[-1].start()
        return killed

    yield begin
    stop.set()
    for thread in threads:
        thread.join(10)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_worker_connections_terminated(
    chaos_dsn: str, fleet: Fleet, terminator: Callable[[int], list[str]], seed: int
) -> None:
    """pg_terminate_backend of the workers' own backends, at random, all along."""
    killed = terminator(seed)
    _drive(chaos_dsn, fleet, seed, lambda: None)
    print(json.dumps({"terminated": len(killed)}))
    assert {"acker", "claimer"} <= set(killed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5])
def test_every_fault_at_once(
    chaos_dsn: str, tmp_path: Path, terminator: Callable[[int], list[str]], seed: int
) -> None:
    """Lost replies, terminated backends and crash points together."""
    markers = {ACK: 0.2, CLAIM: 0.05}
    proxy = LossyProxy(chaos_dsn, markers, (b"pgqueue acker", b"pgqueue claimer"), seed)
    rng = random.Random(seed)
    crashes = iter([rng.choice(STAGES) for _ in range(4)])
    with serving(proxy):
        for fleet in fleet_of(proxy.dsn, tmp_path):
            terminator(seed)
            _drive(chaos_dsn, fleet, seed, lambda: next(crashes, None))
    assert proxy.lost["reply"] and proxy.lost["statement"]
