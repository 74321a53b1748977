"""A worker's options are checked when it is built, each error naming the option and value."""

from __future__ import annotations

import math
from typing import Any

import pytest

import pgqueue
from pgqueue._worker import parse_queues

NAN, INF = math.nan, math.inf


def build(**options: Any) -> pgqueue.Worker:
    """A worker of an empty app; building one touches no database."""
    return pgqueue.PgQueue().worker(dsn="postgresql://nobody@127.0.0.1:1/none", **options)


@pytest.mark.parametrize(
    ("option", "value"),
    [("poll_interval", 0), ("poll_interval", NAN), ("poll_interval", INF), ("poll_interval", True),
     ("lease", 0), ("lease", -5), ("lease", NAN), ("lease", INF), ("lease", 1e300),
     ("lease", None),
     ("heartbeat", 0), ("heartbeat", -1), ("heartbeat", 30), ("heartbeat", 600),
     ("rescue_interval", 0), ("rescue_interval", NAN), ("rescue_interval", INF),
     ("shutdown_timeout", -1), ("shutdown_timeout", NAN), ("summary_interval", 0),
     ("ack_interval", -1), ("ack_interval", NAN), ("ack_interval", INF), ("ack_interval", 30),
     ("long_transaction_warning", -1), ("long_transaction_warning", NAN),
     ("batch_size", 0), ("batch_size", -1), ("batch_size", 2**31), ("batch_size", 1.5),
     ("ack_batch", 0), ("vacuum_threshold", -1), ("threads", 0), ("processes", -1),
     ("concurrency", 0), ("concurrency", NAN), ("concurrency", 2.7), ("concurrency", True),
     ("metrics_port", 70000), ("metrics_addr", ""), ("metrics_addr", " 127.0.0.1"),
     ("metrics_addr", None),
     ("child_start_timeout", 0), ("child_start_timeout", NAN), ("child_start_timeout", None)],
)  # fmt: skip
def test_a_bad_worker_option_is_refused_naming_it(option: str, value: Any) -> None:
    """Each of these used to be accepted and then spin (0 s intervals), stall (a claim or
    lease SQL cannot hold, batch_size 0), hang the event loop (ack_batch 0), flood the log
    (summary_interval 0) or let leases expire under jobs (heartbeat or ack_interval >= lease)."""
    with pytest.raises(ValueError) as raised:
        build(**{option: value})
    assert str(raised.value).startswith(f"{option} must")
    assert f"got {value!r}" in str(raised.value)


def test_good_worker_options_are_kept() -> None:
    """Zero where zero means "off", and defaults given as None, are accepted."""
    worker = build(
        vacuum_threshold=0, long_transaction_warning=0, shutdown_timeout=0, ack_interval=0,
        lease=0.3, heartbeat=0.1, threads=1, processes=1, metrics_port=0,
    )  # fmt: skip
    assert build(heartbeat=None, threads=None, processes=None).heartbeat == 10.0
    assert (worker.lease, worker.heartbeat) == (0.3, 0.1)


@pytest.mark.parametrize(
    ("queues", "message"),
    [("io:abc", "concurrency of queue 'io' must be a whole number >= 1, got 'abc'"),
     ("io:1.5", "concurrency of queue 'io' must be a whole number >= 1, got '1.5'"),
     ("io:3:4", "concurrency of queue 'io' must be a whole number >= 1, got '3:4'"),
     ("io:1_0", "concurrency of queue 'io' must be a whole number >= 1, got '1_0'"),
     ("io:+2", "concurrency of queue 'io' must be a whole number >= 1, got '+2'"),
     ("io:\u0661\u0662",
      "concurrency of queue 'io' must be a whole number >= 1, got '\u0661\u0662'"),
     ("io:2 0", "concurrency of queue 'io' must be a whole number >= 1, got '2 0'"),
     ("io:" + "9" * 5000, "concurrency of queue 'io' is out of range: a number of 5000 digits"),
     ("io:2,io:3", "queue 'io' is given twice: name each queue once"),
     (["io", "io"], "queue 'io' is given twice: name each queue once"),
     ({"io": 2.5}, "concurrency of queue 'io' must be an int >= 1, got 2.5"),
     ({"io": True}, "concurrency of queue 'io' must be an int >= 1, got True"),
     ({"io": 10_001}, "concurrency of queue 'io' must be at most 10000 (jobs run at once per"
      " queue by one worker; run more workers for more), got 10001"),
     ("io:99999999999999999999", "concurrency of queue 'io' must be at most 10000 (jobs run at"
      " once per queue by one worker; run more workers for more), got 99999999999999999999"),
     ([("io", 2)], "invalid queue ('io', 2) in queues: give each as a str, 'NAME' or"
      " 'NAME:CONCURRENCY', or queues as a mapping {'NAME': CONCURRENCY}"),
     (["io", 7], "invalid queue 7 in queues: give each as a str, 'NAME' or"
      " 'NAME:CONCURRENCY', or queues as a mapping {'NAME': CONCURRENCY}")],
)  # fmt: skip
def test_bad_queue_concurrency_names_the_queue_and_value(queues: Any, message: str) -> None:
    """A per-queue figure that is not a whole number, or a queue named twice (the last figure
    used to win silently), is refused in one sentence naming the queue. So are the figures
    int() reads and an operator hardly means: "1_0" (ten), "+2", Arabic-Indic "١٢". A queue
    that is not a str, such as ("io", 2), raised AttributeError: it is named too."""
    with pytest.raises(ValueError) as raised:
        parse_queues(queues, 4)
    assert str(raised.value) == message


def test_concurrency_past_what_a_worker_runs_is_refused_naming_the_limit() -> None:
    """A worker took any figure (10**20 slots): a backlog was then claimed whole, a thread per
    sync job past what a host can start. 10,000 per queue is the most, as in River."""
    assert parse_queues("io:10000", 10_000) == {"io": 10_000}
    with pytest.raises(ValueError) as raised:
        build(queues=["io"], concurrency=10**20)
    assert str(raised.value) == (
        "concurrency must be at most 10000 (jobs run at once per queue by one worker; run more"
        " workers for more), got 100000000000000000000"
    )


def test_spaces_around_queue_names_and_figures_are_ignored() -> None:
    """' io : 4 , cpu' reads as io with 4 slots and cpu with the default."""
    assert parse_queues(" io : 4 , cpu", 3) == {"io": 4, "cpu": 3}


@pytest.mark.parametrize(
    ("queues", "message"),
    [("", "queues '' names no queue: leave queues out (None) for the app's default queue"),
     (" \n", "queues ' \\n' names no queue: leave queues out (None) for the app's default"
      " queue"),
     ([], "a worker needs at least one queue: leave queues out (None) for the app's default"
      " queue"),
     ({}, "a worker needs at least one queue: leave queues out (None) for the app's default"
      " queue")],
)  # fmt: skip
def test_queues_that_name_no_queue_are_refused(queues: Any, message: str) -> None:
    """Worker(queues="") (a setting left empty: os.environ.get("QUEUES", "")), [] or {} (a
    list of queues filtered down to none) quietly ran the app's default queue, a queue not
    asked for; `pgqueue worker -q ""` was refused. Only None (left out) means the default
    queue now; these raise ValueError saying so."""
    with pytest.raises(ValueError) as raised:
        build(queues=queues)
    assert str(raised.value) == message
    assert build(queues=None).queues == {"default": 10}


def test_a_failed_heartbeat_is_tried_again_sooner_while_the_worker_holds_leases() -> None:
    """Holding leases (here a job to give back), a worker tries a failed heartbeat again
    within a tenth of its heartbeat interval (1 s of 10 s), however long the outage: it tried
    every 10 s, and found its leases expired and rescued after the database came back. Holding
    none, within its heartbeat interval: a job claimed after the outage gets its first
    heartbeat in time even under a lease shorter than 10 s."""
    worker = build(lease=30)
    assert [worker._beat_retry(n) for n in (1, 20)] == [0.2, 10.0]
    worker._unfinished.append((1, 1))
    assert [worker._beat_retry(n) for n in (1, 20)] == [0.2, 1.0]
    assert build(lease=0.6)._beat_retry(20) == pytest.approx(0.2)


def test_a_failed_heartbeat_near_the_lease_is_tried_again_within_a_tenth_of_what_is_left() -> None:
    """A heartbeat of 25 s under a lease of 30 s leaves 5 s to a failed beat: tried again
    within 2.5 s (a tenth of the heartbeat), a database back after 3.1 s was found at 5.5 s,
    its leases expired and open to rescue. The pause is now at most a tenth of the shorter of
    the heartbeat and what a failed beat leaves of the lease (0.5 s here)."""
    worker = build(lease=30, heartbeat=25)
    worker._unfinished.append((1, 1))
    assert worker._beat_retry(20) == pytest.approx(0.5)
    assert build(lease=30, heartbeat=25)._beat_retry(20) == 10.0  # holding none
