"""The timeouts-and-cancellation example runs as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cancel_and_timeouts.py"


async def test_example_times_out_one_job_and_cancels_the_other(dsn: str) -> None:
    """slow_report times out; export, cancelled while it runs, ends cancelled on request."""
    spec = importlib.util.spec_from_file_location("cancel_and_timeouts", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ends = sorted((await module.main(dsn)).values())
    assert ends == [
        ("cancelled", "cancelled on request"),
        ("failed", "timed out after 0.5 s"),
    ]
