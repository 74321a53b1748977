"""Set each process-pool child up once, before its first job, and wrap each of its jobs.

    PGQUEUE_DSN=... pgqueue --app examples.process_setup:app enqueue \
        examples.process_setup.score --args '["a job in a queue"]'
    PGQUEUE_DSN=... pgqueue --app examples.process_setup:app worker -q cpu --burst

Run both from the repository's root. Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
The job's result says which child scored it, and that the child's set-up loaded the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pgqueue

app = pgqueue.PgQueue()
log = logging.getLogger("scoring")
model: dict[str, Any] = {}  # loaded once in each child by set_up_child


@app.process_setup
def set_up_child() -> Callable[[], AbstractContextManager[None]]:
    """Runs once in each child, before its first job: load what its jobs share (here a toy
    model; a TracerProvider, Sentry's SDK or a client's pool go here too). What it returns
    makes the context manager each job of the child then runs in."""
    model["weights"] = {"job": 2, "queue": 3}
    model["loaded_in"] = os.getpid()
    return timed


@contextlib.contextmanager
def timed() -> Iterator[None]:
    """Log how long each job of this child took (its logs are the worker's)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        job = pgqueue.current_job()
        log.info(
            "job %s took %.3f s in child %s", job.id, time.perf_counter() - started, os.getpid()
        )


@app.task(queue="cpu", executor="process")
def score(text: str) -> dict[str, Any]:
    """Score ``text`` with the model its child loaded."""
    weights = model["weights"]
    total = sum(weights.get(word, 0) for word in text.split())
    return {"score": total, "child": os.getpid(), "model_loaded_in": model["loaded_in"]}
