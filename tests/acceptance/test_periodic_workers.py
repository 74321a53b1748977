"""Real worker processes share periodic schedules: one job per tick, whatever happens to them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from tests.helpers import query

ROOT = Path(__file__).resolve().parents[2]
RUN_FOR = timedelta(seconds=30)
WORKER_OPTIONS = ["--poll-interval", "0.2", "--lease", "5", "--rescue-interval", "1"]


class Workers:
    """Worker processes of one app, each logging to its own file."""

    def __init__(self, dsn: str, app: str, logs: Path) -> None:
        self.dsn, self.app, self.logs = dsn, app, logs
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes], Path]] = []

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start one more `python -m pgqueue worker` (with ``extra`` options)."""
        path = self.logs / f"worker-{len(self.procs)}.log"
        log = path.open("wb")
        command = [sys.executable, "-m", "pgqueue", "--app", self.app, "--dsn", self.dsn,
                   "worker", *WORKER_OPTIONS, *extra]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
        env["PYTHONPATH"] = str(ROOT)
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append((proc, log, path))
        return proc

    def stop_all(self) -> None:
        """SIGTERM every live worker and wait for it."""
        for proc, log, _path in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()

    def log_text(self, index: int = -1) -> str:
        """What one worker logged."""
        return self.procs[index][2].read_text()


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Callable[[str], Workers]]:
    """A factory of worker groups; every process is stopped at the end."""
    groups: list[Workers] = []

    def make(app: str) -> Workers:
        groups.append(Workers(dsn, app, tmp_path))
        return groups[-1]

    yield make
    for group in groups:
        group.stop_all()


def wait_for(condition: Callable[[], Any], timeout: float = 90, step: float = 0.25) -> Any:
    """Poll ``condition`` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)
    return result


def ticks_per_job(dsn: str, name: str) -> list[tuple[datetime, int]]:
    """(tick, number of jobs) for each tick of schedule ``name``, oldest first."""
    return query(
        dsn,
        "SELECT (meta->>'tick')::timestamptz, count(*) FROM pgqueue.jobs"
        " WHERE meta->>'periodic' = %s GROUP BY 1 ORDER BY 1",
        [name],
    )


def span_reached(dsn: str) -> bool:
    """Whether the 'beat' ticks with jobs cover RUN_FOR."""
    rows = query(dsn, "SELECT max(tick) - min(tick) FROM pgqueue.periodic_ticks")
    return rows[0][0] is not None and rows[0][0] >= RUN_FOR


def every(start: datetime, end: datetime, step: float) -> list[datetime]:
    """Every ``step`` seconds from ``start`` to ``end`` inclusive."""
    count = int((end - start).total_seconds() // step) + 1
    return [start + timedelta(seconds=i * step) for i in range(count)]


def assert_one_job_per_tick(dsn: str) -> tuple[int, int]:
    """Every second between the first and last tick has exactly one job; (observed, expected)."""
    rows = ticks_per_job(dsn, "beat")
    ticks = [tick for tick, _count in rows]
    expected = every(ticks[0], ticks[-1], 1)
    duplicates = [(tick, count) for tick, count in rows if count != 1]
    assert duplicates == []
    assert ticks == expected
    recorded = query(dsn, "SELECT count(*), count(DISTINCT job_id) FROM pgqueue.periodic_ticks")
    assert recorded == [(len(ticks), len(ticks))]
    print(f"\nticks observed {len(ticks)}, expected {len(expected)}, duplicates 0")
    return len(ticks), len(expected)


@pytest.mark.slow
def test_four_workers_fire_each_second_exactly_once(workers: Callable[[str], Workers]) -> None:
    """4 worker processes on a per-second schedule for 30 s: one job per tick, none missing."""
    group = workers("tests.acceptance.periodic_app:app")
    for _ in range(4):
        group.start()
    group.start("--no-scheduler")
    wait_for(lambda: span_reached(group.dsn))
    group.stop_all()
    assert all("scheduler started" in group.log_text(i) for i in range(4))
    # Its start record names the switch (scheduler=False), so "scheduler" alone is no sign.
    no_scheduler = group.log_text(4)
    assert "scheduler=False (command line)" in no_scheduler
    assert "worker" in no_scheduler and "scheduler started" not in no_scheduler
    observed, expected = assert_one_job_per_tick(group.dsn)
    assert observed == expected > RUN_FOR.total_seconds()


@pytest.mark.slow
def test_one_scheduler_killed_every_few_seconds_still_fires_each_tick_once(
    workers: Callable[[str], Workers],
) -> None:
    """SIGKILL and restart one of 4 workers every ~3 s for 30 s: still one job per tick."""
    group = workers("tests.acceptance.periodic_app:app")
    for _ in range(3):
        group.start()
    victim, kills = group.start(), 0
    wait_for(lambda: query(group.dsn, "SELECT count(*) FROM pgqueue.periodic_ticks")[0][0])
    while not span_reached(group.dsn):
        time.sleep(3)  # pacing the kills, not asserting anything about time
        victim.kill()
        victim.wait()
        kills += 1
        victim = group.start()
    group.stop_all()
    print(f"\nkilled and restarted a scheduler {kills} times")
    assert kills >= 5
    observed, expected = assert_one_job_per_tick(group.dsn)
    assert observed == expected > RUN_FOR.total_seconds()


SKIPPED = re.compile(
    r"periodic 'catchup': skipped (\d+) missed ticks older than the catch-up window of 6.0 s,"
    r" from (\S+) to (\S+)"
)


def db_now(dsn: str) -> datetime:
    """The database clock."""
    return query(dsn, "SELECT now()")[0][0]


@pytest.mark.slow
def test_after_downtime_ticks_inside_the_window_run_once_and_older_ones_are_logged(
    workers: Callable[[str], Workers],
) -> None:
    """Every worker down across 4+ ticks: on restart the ticks of the last 6 s run, older skip."""
    first = workers("tests.acceptance.periodic_app:catchup_app")
    first.start()
    wait_for(lambda: len(ticks_per_job(first.dsn, "catchup")) >= 2)
    first.stop_all()
    last = query(first.dsn, "SELECT max(tick) FROM pgqueue.periodic_ticks")[0][0]
    wait_for(lambda: db_now(first.dsn) >= last + timedelta(seconds=9), step=0.1)
    restarted_at = db_now(first.dsn)
    second = workers("tests.acceptance.periodic_app:catchup_app")
    second.start()
    after = restarted_at + timedelta(seconds=2)
    wait_for(lambda: any(t > after for t, _n in ticks_per_job(first.dsn, "catchup")))
    wait_for(lambda: query(first.dsn, "SELECT count(*) FROM pgqueue.active_jobs") == [(0,)])
    second.stop_all()

    match = SKIPPED.search(second.log_text())
    assert match, second.log_text()
    count = int(match.group(1))
    skip_from, skip_to = (datetime.fromisoformat(match.group(i)) for i in (2, 3))
    skipped = every(skip_from, skip_to, 2)
    rows = [(t, n) for t, n in ticks_per_job(first.dsn, "catchup") if t > last]
    ran = [t for t, _n in rows]
    caught_up = [t for t in ran if t < restarted_at]
    print(f"\ndown from {last} to {restarted_at}: skipped {len(skipped)} ticks, "
          f"caught up {len(caught_up)}, then {len(ran) - len(caught_up)} on time")  # fmt: skip
    assert {n for _t, n in rows} == {1}
    assert count == len(skipped) >= 1
    assert sorted(skipped + ran) == every(last + timedelta(seconds=2), ran[-1], 2)
    assert max(skipped) < min(ran)
    assert len(caught_up) >= 2
    assert query(first.dsn, "SELECT DISTINCT state FROM pgqueue.jobs") == [("succeeded",)]
