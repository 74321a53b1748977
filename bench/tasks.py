"""The tasks the benchmark's workers run (importable as ``bench.tasks:app``)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pgqueue

app = pgqueue.PgQueue()

# A worker started with PGQUEUE_BENCH_STOP_AFTER=N stops itself after N jobs, so a scenario
# can time a fixed amount of work out of a much bigger backlog.
_stop_after = int(os.environ.get("PGQUEUE_BENCH_STOP_AFTER", "0"))
_done = 0


@app.task
async def noop(i: int) -> None:
    """Do nothing (the drain scenarios measure the queue, not the task)."""
    global _done
    if _stop_after:
        _done += 1
        if _done == _stop_after:
            os.kill(os.getpid(), signal.SIGTERM)


@app.task
async def stamp() -> list[object]:
    """Return when the task body started (wall clock) and whether heavy modules got imported."""
    heavy = sorted(m for m in ("alembic", "sqlalchemy") if m in sys.modules)
    return [time.time(), heavy]
