"""The timeouts-and-cancellation example runs as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import psycopg

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cancel_and_timeouts.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cancel_and_timeouts", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_times_out_one_job_and_cancels_the_other(dsn: str) -> None:
    """slow_report times out; export, cancelled while it runs, ends cancelled on request."""
    ends = await _load_example().main(dsn)
    assert sorted(ends.values()) == [
        ("cancelled", "cancelled on request"),
        ("failed", "timed out after 0.5 s"),
    ]
    with psycopg.connect(dsn) as conn:
        attempts = conn.execute("SELECT attempts FROM pgqueue.jobs ORDER BY id").fetchall()
    assert attempts == [(1,), (1,)]  # both ran: the export was running when it was cancelled


async def test_example_reports_only_its_own_jobs(dsn: str) -> None:
    """Finished jobs already in the database (the tutorial's, say) are not taken for its own."""
    module = _load_example()
    with psycopg.connect(dsn) as conn:
        for _ in range(2):
            job_id = module.export.enqueue(conn, 1)
            module.app.cancel(conn, job_id)
        conn.commit()
    ends = await module.main(dsn)
    assert sorted(ends.values()) == [
        ("cancelled", "cancelled on request"),
        ("failed", "timed out after 0.5 s"),
    ]
