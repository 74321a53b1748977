"""The test-only PGQUEUE_FAULT hook: inert unless set, and fatal exactly at its stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pgqueue._worker import _faults

CALL = "from pgqueue._worker._faults import crash_point; crash_point({!r}); print('alive')"


def _run(stage: str, fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUE_FAULT"}
    if fault is not None:
        env["PGQUEUE_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", CALL.format(stage)], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_unset_variable_makes_every_crash_point_a_no_op() -> None:
    """Without PGQUEUE_FAULT (as in this test run), crash points return normally."""
    assert _faults.FAULT is None
    for stage in _faults.STAGES:
        _faults.crash_point(stage)


@pytest.mark.parametrize("stage", ["after_claim", "after_ack"])
def test_the_named_stage_sigkills_the_process_and_others_do_not(stage: str) -> None:
    """PGQUEUE_FAULT=stage kills at that stage only."""
    assert _run(stage, stage).returncode == -signal.SIGKILL
    other = _run("mid_task", stage)
    assert (other.returncode, other.stdout.strip()) == (0, "alive")
