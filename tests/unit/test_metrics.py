"""The metrics a worker serves, fed with events as its hot path feeds them (no database)."""

from __future__ import annotations

import pytest

import pgqueue
from pgqueue import JobContext
from pgqueue._hooks import JobEvent

prometheus_client = pytest.importorskip("prometheus_client")
from pgqueue._metrics import WorkerMetrics  # noqa: E402  # needs prometheus_client


def metrics() -> WorkerMetrics:
    """The metrics of a worker that never connects."""
    app = pgqueue.PgQueue("postgresql://nobody@127.0.0.1:1/none")
    return WorkerMetrics(app.worker(queues=["q"]))


def buckets(m: WorkerMetrics, name: str) -> dict[float, float]:
    """The cumulative counts of histogram ``name``, by finite upper bound."""
    return {
        float(s.labels["le"]): s.value
        for family in m.registry.collect()
        for s in family.samples
        if s.name == f"{name}_bucket" and s.labels["le"] != "+Inf"
    }


def test_job_durations_of_minutes_fall_in_buckets_of_their_own() -> None:
    """The duration histogram had Prometheus' default buckets, the last at 10 s: an attempt of
    two minutes and one of an hour fell in +Inf alike, and the documented p95 panel read 10 s
    for both. Its buckets now reach an hour, as the start latency's do."""
    m = metrics()
    for seconds in (0.002, 120.0, 3000.0):
        m.on_finished(JobEvent(JobContext(1, "work", "q", 1, 3), "succeeded", seconds))
    counts = buckets(m, "pgqueue_job_duration_seconds")
    assert (counts[0.005], counts[60.0], counts[300.0], counts[3600.0]) == (1, 1, 2, 3)
