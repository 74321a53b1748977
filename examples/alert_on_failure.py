"""Alert a webhook when a job fails for good, and time every attempt with middleware.

    PGQUEUE_DSN=... ALERT_WEBHOOK=https://hooks.example.com/... \
        pgqueue --app examples.alert_on_failure:app worker -q reports

and, from another shell, a report that fails (three attempts, then the alert; without
ALERT_WEBHOOK the alert is an ERROR line of the worker's):

    pgqueue --app examples.alert_on_failure:app enqueue \
        examples.alert_on_failure.build_report --args '[-1]'

Run both from the repository's root. Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pgqueue

app = pgqueue.PgQueue()
log = logging.getLogger("reports")


def alert(event: pgqueue.JobEvent) -> None:
    """POST the failure to ALERT_WEBHOOK (sync callbacks run in a thread, off the event loop)."""
    url = os.environ.get("ALERT_WEBHOOK")
    if not url:
        log.error("job %s failed for good: %s", event.job.id, event.error)
        return
    body = json.dumps({
        "text": f"pgqueue job {event.job.id} ({event.job.task}) failed after "
                f"{event.job.attempt} attempts: {event.error}",
    }).encode()  # fmt: skip
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


@app.middleware
async def timed(job: pgqueue.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    """Log how long each attempt took, whatever its outcome."""
    started = time.perf_counter()
    try:
        return await call_next()
    finally:
        log.info("%s attempt %s took %.3f s", job.task, job.attempt, time.perf_counter() - started)


@app.task(queue="reports", max_attempts=3, on_failure=alert)
def build_report(report_id: int) -> str:
    """A task that can fail; after its third failed attempt, alert() is called once."""
    if report_id < 0:
        raise ValueError(f"no report {report_id}")
    return f"report {report_id} built"
