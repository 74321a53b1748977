"""pgqueue jobs as Django ``TaskResult`` objects: statuses, errors, timestamps."""

from __future__ import annotations

from typing import Any

from pgqueue._job import Job
from pgqueue.contrib.django import _compat as dt

# pgqueue's states onto Django's statuses. Django has no "cancelled": it is a failure there.
STATUSES = {
    "queued": "READY",
    "running": "RUNNING",
    "succeeded": "SUCCESSFUL",
    "failed": "FAILED",
    "cancelled": "FAILED",
}


def exception_class_path(traceback: str | None) -> str:
    """The dotted class of the exception a formatted traceback was raised with.

    ``traceback.format_exception`` writes ``module.Class: message`` (without the module for
    built-in exceptions) as the first unindented line after the last ``Traceback`` header:
    the lines after it belong to the message or its notes. An exception group's block is
    drawn indented (``  + Exception Group Traceback ...``, then ``  | module.Class: ...``).
    Without a traceback (a lost worker), ``Exception``.
    """
    lines = (traceback or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line in _HEADERS]
    after = lines[starts[-1] + 1 :] if starts else lines
    group = bool(starts) and lines[starts[-1]] == _GROUP_HEADER
    if group:  # the group's own lines start "  | "; its members' are indented further
        heads = [line[4:] for line in after if line.startswith("  | ") and line[4:5] != " "]
    else:
        heads = [line for line in after if line and line[0] != " "]
    if not heads:
        return "builtins.Exception"
    name = heads[0].split(":", 1)[0].strip()
    if not name.replace(".", "").replace("_", "").isalnum():
        return "builtins.Exception"
    return name if "." in name else f"builtins.{name}"


_TRACEBACK_HEADER = "Traceback (most recent call last):"
_GROUP_HEADER = "  + Exception Group Traceback (most recent call last):"
_HEADERS = (_TRACEBACK_HEADER, _GROUP_HEADER)


def task_errors(job: Job) -> list[Any]:
    """One ``TaskError`` per entry of the job's ``errors`` (a failed attempt), oldest first."""
    return [
        dt.TaskError(
            exception_class_path=exception_class_path(e.get("traceback")),
            traceback=e.get("traceback") or e.get("error") or "",
        )
        for e in job.errors
    ]


def task_result(task: Any, job: Job, backend: str) -> Any:
    """The ``TaskResult`` of ``task`` that ``job`` describes.

    pgqueue keeps the id of the last worker only: ``worker_ids`` repeats it once per attempt,
    so that ``TaskResult.attempts`` is right. A job waiting for its next attempt (a retry, a
    rescue, a shutdown's put-back) names no worker: its entries are ``""``.
    """
    result = dt.TaskResult(
        task=task,
        id=str(job.id),
        status=dt.TaskResultStatus[STATUSES[job.state]],
        enqueued_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_attempted_at=job.started_at,
        args=job.args,
        kwargs=job.kwargs,
        backend=backend,
        errors=task_errors(job),
        worker_ids=[job.worker_id or ""] * job.attempts,
    )
    if job.state == "succeeded":
        object.__setattr__(result, "_return_value", job.result)
    return result
