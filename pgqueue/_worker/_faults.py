"""Test-only crash points: ``PGQUEUE_FAULT=<stage>`` makes a worker SIGKILL itself there.

The fault-injection suite (``tests/faults``) uses them to kill a real worker at a precise moment
of a job's life. Stages, in the order a job meets them:

- ``after_claim``: the claim committed, the task has not started;
- ``mid_task``: called by a test task while it runs (workers never call it themselves);
- ``after_side_effect``: the task returned, its outcome is not written yet;
- ``after_ack``: the outcome batch was committed.

The variable is read once at import, so an unset variable costs one string comparison.
Never set it in production.
"""

from __future__ import annotations

import os
import signal

STAGES = ("after_claim", "mid_task", "after_side_effect", "after_ack")

FAULT = os.environ.get("PGQUEUE_FAULT") or None


def crash_point(stage: str) -> None:
    """SIGKILL this process if ``PGQUEUE_FAULT`` names ``stage``; otherwise do nothing."""
    if FAULT is not None and stage == FAULT:
        os.kill(os.getpid(), signal.SIGKILL)
