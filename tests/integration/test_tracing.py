"""pgqueue.tracing on a real worker: what each attempt's span says, as a trace backend gets it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pgqueue
from tests.helpers import run_worker_until, states

sdk = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
from opentelemetry.trace import StatusCode  # noqa: E402  # needs opentelemetry

from pgqueue import tracing  # noqa: E402  # needs opentelemetry


async def spans_of(dsn: str, conn: Any, app: pgqueue.PgQueue, ending: str) -> list[Any]:
    """Enqueue one job of the app's task "work", run a worker until the job is ``ending``, and
    return the finished spans of its attempts."""
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracing.instrument(app, tracer_provider=provider)
    app.using("work").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05)
    await run_worker_until(w, lambda: states(dsn) == {ending: 1})
    await asyncio.sleep(0)
    return [s for s in exporter.get_finished_spans() if s.name == "pgqueue.run work"]


def texts(span: Any) -> str:
    """Everything a backend receives of ``span`` as text: status, attributes, events."""
    events = [(e.name, dict(e.attributes)) for e in span.events]
    return repr((span.status.description, dict(span.attributes), events))


async def test_a_failed_attempts_span_has_the_error_redacted(dsn: str, conn: Any) -> None:
    """The span recorded the task's exception as raised: its message and traceback went to the
    trace backend with the secret the app's ``redact`` keeps out of the row and the logs. The
    span's error is now the redacted text, its status still an error."""
    app = pgqueue.PgQueue(dsn, redact=lambda text: text.replace("hunter2", "[redacted]"))

    @app.task(name="work", queue="q", max_attempts=1)
    def work() -> None:
        raise ValueError("login failed: password=hunter2")

    [span] = await spans_of(dsn, conn, app, "failed")
    assert span.status.status_code is StatusCode.ERROR
    assert "hunter2" not in texts(span)
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "login failed: password=[redacted]"
    assert "[redacted]" in event.attributes["exception.stacktrace"]
