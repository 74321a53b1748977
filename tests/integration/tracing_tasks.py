"""Tasks of the tracing tests that run in a process-pool child (importable: a child finds
them by name). This module imports no OpenTelemetry: what a child has of it, pgqueue's child
code imported."""

from __future__ import annotations

import sys
from typing import Any

import pgqueue

app = pgqueue.PgQueue()


def _span_in_child() -> dict[str, Any]:
    """Whether OpenTelemetry was imported in this child before the task ran; the trace id of
    a span the task makes (with a provider of its own, as a child's set-up would make) and its
    parent's span id, as hex."""
    imported = "opentelemetry" in sys.modules
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("child").start_as_current_span("in the child") as span:
        parent = span.parent
    return {
        "imported": imported,
        "trace": f"{span.get_span_context().trace_id:032x}",
        "parent": None if parent is None else f"{parent.span_id:016x}",
    }


@app.task(queue="cpu", executor="process")
def span_in_process() -> dict[str, Any]:
    """:func:`_span_in_child`, in the process pool."""
    return _span_in_child()


@app.task(queue="cpu")
def span_isolated() -> dict[str, Any]:
    """:func:`_span_in_child`, in a thread, or in a child once isolated after a crash."""
    return _span_in_child()
