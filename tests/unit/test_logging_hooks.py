"""The JSON logs' excepthooks when another hook wraps them: each crash is logged once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WRAPPED_BETWEEN = """
import sys, threading
from pgqueue._logging import configure_logging


def wrap(old):  # as Sentry's SDK wraps the hook it finds, calling it after its own work
    def hook(*args):
        print("wrapper saw it", flush=True)
        return old(*args)
    return hook


configure_logging("info", "json")  # a process-pool child: before the app's set-up,
sys.excepthook = wrap(sys.excepthook)  # which inits an error tracker,
threading.excepthook = wrap(threading.excepthook)
configure_logging("info", "json")  # and again after it
doomed = threading.Thread(target=lambda: 1 / 0, name="doomed")
doomed.start()
doomed.join()
raise ValueError("the end")
"""


def test_a_hook_that_wraps_ours_between_two_set_ups_sees_each_crash_once() -> None:
    """A process-pool child sets the JSON logs up before the app's process set-up and again
    after it. A hook the set-up installed over ours (an error tracker's) became ours's
    previous hook at the second set-up, and ours its: each called the other until a
    RecursionError, printed as text. Each crash is one record, and the wrapper sees it once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, "-c", WRAPPED_BETWEEN], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert ran.returncode == 1
    assert ran.stdout.splitlines() == ["wrapper saw it"] * 2, ran.stdout
    lines = ran.stderr.splitlines()
    assert all(line.startswith("{") for line in lines), ran.stderr[-3000:]
    records = [json.loads(line) for line in lines]
    assert [(r["action"], r["message"].split(" ended")[0]) for r in records] == [
        ("uncaught_exception", "thread doomed"),
        ("uncaught_exception", "the process"),
    ]
