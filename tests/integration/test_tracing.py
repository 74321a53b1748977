"""pgqueue.tracing on a real worker: what each attempt's span says, as a trace backend gets it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import query, run_worker_until, states, stop_with_one_asked_to_cancel

sdk = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
from opentelemetry import trace  # noqa: E402  # needs opentelemetry
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from pgqueue import tracing  # noqa: E402  # needs opentelemetry
from pgqueue._hooks import AppHooks, call_through  # noqa: E402
from tests.integration import tracing_tasks  # noqa: E402


def traced(app: pgqueue.PgQueue) -> Any:
    """Instrument ``app``; returns the exporter that holds its finished spans."""
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracing.instrument(app, tracer_provider=provider)
    return exporter


async def spans_of(dsn: str, conn: Any, app: pgqueue.PgQueue, ending: str) -> list[Any]:
    """Enqueue one job of the app's task "work", run a worker until the job is ``ending``, and
    return the finished spans of its attempts."""
    exporter = traced(app)
    app.using("work").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05)
    await run_worker_until(w, lambda: states(dsn) == {ending: 1})
    await asyncio.sleep(0)
    return [s for s in exporter.get_finished_spans() if s.name == "pgqueue.run work"]


def kind_of(exporter: Any, kind: Any) -> list[Any]:
    """The finished spans of ``kind`` that ``exporter`` holds."""
    return [s for s in exporter.get_finished_spans() if s.kind is kind]


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


async def test_a_span_withholds_the_error_a_raising_redact_could_not_clean(
    dsn: str, conn: Any
) -> None:
    """A ``redact`` that raises withholds the text from the span too, as from the job's row."""

    def redact(text: str) -> str:
        raise RuntimeError("broken redact")

    app = pgqueue.PgQueue(dsn, redact=redact)

    @app.task(name="work", queue="q", max_attempts=1)
    def work() -> None:
        raise ValueError("password=hunter2")

    [span] = await spans_of(dsn, conn, app, "failed")
    assert "hunter2" not in texts(span)
    withheld = "[withheld: the app's redact function raised RuntimeError]"
    assert span.status.description == withheld


async def test_a_timed_out_attempts_span_is_an_error(dsn: str, conn: Any) -> None:
    """A timeout stops the attempt with a CancelledError, which OpenTelemetry does not count as
    an error: the span of an attempt that failed on its timeout ended with no status at all,
    as a success looks. Its status is now an error that says it timed out."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="work", queue="q", max_attempts=1, timeout=0.1)
    async def work() -> None:
        await asyncio.sleep(30)

    [span] = await spans_of(dsn, conn, app, "failed")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "timed out"


async def test_a_retry_the_task_asks_for_is_not_an_error(dsn: str, conn: Any) -> None:
    """``raise pgqueue.Retry(...)`` (and ``Cancel``) is the task's decision, logged at INFO and
    counted as no failure: its span was marked an error with the exception recorded, which an
    error-rate panel on spans counted as failures."""
    app = pgqueue.PgQueue(dsn)

    calls: list[None] = []

    @app.task(name="work", queue="q", max_attempts=3)
    def work() -> None:
        calls.append(None)
        if len(calls) == 1:
            raise pgqueue.Retry(0.01)
        raise pgqueue.Cancel("not needed any more")

    spans = await spans_of(dsn, conn, app, "cancelled")
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET] * 2
    assert [e.name for s in spans for e in s.events] == []


async def test_an_attempt_the_worker_stops_has_a_span_that_says_so(dsn: str, conn: Any) -> None:
    """An attempt a shutdown stops ended with a span of no status, as a success looks: it is
    an error that names why the worker stopped it."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="work", queue="q")
    async def work() -> None:
        await asyncio.sleep(60)

    exporter = traced(app)
    await stop_with_one_asked_to_cancel(dsn, conn, app, "work")
    spans = kind_of(exporter, SpanKind.CONSUMER)
    assert [(s.status.status_code, s.status.description) for s in spans] == [
        (StatusCode.ERROR, "stopped: shutdown")
    ] * 2


async def test_spans_carry_the_messaging_semantic_conventions(dsn: str, conn: Any) -> None:
    """A span had only pgqueue's own attributes: a backend's messaging views (and queries written
    for every queue system alike) group consumer spans by the OpenTelemetry messaging attributes,
    which now name the system, the operation, the queue and the job."""
    app = pgqueue.PgQueue(dsn)
    app.task(name="work", queue="q")(lambda: None)
    [span] = await spans_of(dsn, conn, app, "succeeded")
    assert {k: v for k, v in span.attributes.items() if k.startswith("messaging.")} == {
        "messaging.system": "pgqueue",
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.destination.name": "q",
        "messaging.message.id": "1",
    }
    assert span.attributes["pgqueue.task"] == "work"


async def test_instrumenting_an_app_twice_makes_one_span_per_attempt(dsn: str, conn: Any) -> None:
    """``instrument(app)`` runs "in the producer and in the worker": where both are one process
    (a web app that runs its worker, a module imported by both), each call added its own
    middleware, and every attempt had two nested spans, each counted in the backend's rates.
    A later call on the same app replaces the earlier one's hooks (its tracer provider too)."""
    app = pgqueue.PgQueue(dsn)
    app.task(name="work", queue="q")(lambda: None)
    tracing.instrument(app)
    assert len(await spans_of(dsn, conn, app, "succeeded")) == 1
    assert len(app.hooks.middleware) == len(app.hooks.enqueue_meta) == 1


async def test_a_task_groups_retry_or_cancel_is_not_an_error(dsn: str, conn: Any) -> None:
    """An asyncio.TaskGroup raises its tasks' Retry or Cancel in an exception group, which the
    worker takes for the Retry or Cancel (no failure); the span was marked an error, the group
    recorded, as if the attempt had failed."""
    app = pgqueue.PgQueue(dsn)
    calls: list[None] = []

    async def decide() -> None:
        calls.append(None)
        if len(calls) == 1:
            raise pgqueue.Retry(0.01)
        raise pgqueue.Cancel("not needed any more")

    @app.task(name="work", queue="q", max_attempts=3)
    async def work() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(decide())

    spans = await spans_of(dsn, conn, app, "cancelled")
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET] * 2
    assert [e.name for s in spans for e in s.events] == []


def test_instrument_keeps_an_unhashable_middleware_and_hook() -> None:
    """Looking for the hooks an earlier call made, instrument() hashed every hook of the app:
    a middleware or enqueue_meta hook that is an unhashable object (a dataclass with an
    ``async __call__``) made instrument() raise TypeError."""

    @dataclasses.dataclass
    class Timing:
        name: str = "timing"

        async def __call__(self, job: Any, call_next: Any) -> Any:
            return await call_next()

    app = pgqueue.PgQueue()
    timing = Timing()
    app.middleware(timing)
    app.hooks.enqueue_meta.append(timing)
    tracing.instrument(app)
    tracing.instrument(app)
    assert app.hooks.middleware[1:] == [timing]
    assert len(app.hooks.middleware) == 2
    assert app.hooks.enqueue_meta[0] is timing and len(app.hooks.enqueue_meta) == 2


async def test_a_raising_redact_is_logged_once_more_for_the_span(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The span's three texts (status, exception message, stacktrace) each went through the
    failing ``redact``, each logging a redact_error record: three more per failed attempt,
    where the operations page says one more. The span's texts are withheld alike, said once."""

    def redact(text: str) -> str:
        raise RuntimeError("broken redact")

    app = pgqueue.PgQueue(dsn, redact=redact)

    @app.task(name="work", queue="q", max_attempts=1)
    def work() -> None:
        raise ValueError("password=hunter2")

    with caplog.at_level(logging.ERROR, logger="pgqueue.worker"):
        [span] = await spans_of(dsn, conn, app, "failed")
    records = [r for r in caplog.records if getattr(r, "action", None) == "redact_error"]
    assert len(records) == 3  # the row's error and traceback, and the span
    withheld = "[withheld: the app's redact function raised RuntimeError]"
    [event] = span.events
    assert event.attributes["exception.message"] == withheld
    assert event.attributes["exception.stacktrace"] == withheld


def test_instrument_while_an_attempt_runs_neither_skips_nor_repeats_a_middleware() -> None:
    """instrument() edited ``app.hooks.middleware`` in place, and an attempt under way reads
    that list one middleware at a time: called between two of them (here, by the first), it
    shifted the list under the attempt, which ran the first middleware again. An attempt now
    runs the middleware it started with, each once."""
    app = pgqueue.PgQueue()
    ran: list[str] = []

    @app.middleware
    async def first(job: Any, call_next: Any) -> Any:
        ran.append("first")
        tracing.instrument(app)  # as a producer thread of the same process might, meanwhile
        return await call_next()

    @app.middleware
    async def second(job: Any, call_next: Any) -> Any:
        ran.append("second")
        return await call_next()

    async def call() -> str:
        return "done"

    job = pgqueue.JobContext(1, "work", "q", 1, 3, {})
    result = asyncio.run(call_through(app.hooks.middleware, job, call))
    assert (result, ran) == ("done", ["first", "second"])
    assert app.hooks.middleware[1:] == [first, second]  # the next attempt is traced


def test_a_middleware_registered_while_an_attempt_runs_waits_for_the_next_attempt() -> None:
    """``app.middleware`` appended to the list an attempt under way reads lazily: that attempt
    ran, innermost, a middleware registered after it had started."""
    app = pgqueue.PgQueue()
    ran: list[str] = []

    async def late(job: Any, call_next: Any) -> Any:
        ran.append("late")
        return await call_next()

    @app.middleware
    async def first(job: Any, call_next: Any) -> Any:
        ran.append("first")
        app.middleware(late)
        return await call_next()

    @app.middleware
    async def second(job: Any, call_next: Any) -> Any:
        ran.append("second")
        return await call_next()

    async def call() -> None:
        ran.append("call")

    job = pgqueue.JobContext(1, "work", "q", 1, 3, {})
    asyncio.run(call_through(app.hooks.middleware, job, call))
    assert ran == ["first", "second", "call"]
    assert app.hooks.middleware == [first, second, late]


async def run_in_child(dsn: str, conn: Any, task: Any, isolated: bool) -> dict[str, Any]:
    """Run one job of ``task`` (of tracing_tasks, in a process-pool child: isolated after a
    crash, if ``isolated``) on a worker, and return its result."""
    job_id = task.enqueue(conn)
    conn.commit()
    if isolated:  # as the rescue leaves a job whose worker died
        query(dsn, "UPDATE pgqueue.active_jobs SET attempts = 1, last_error = 'worker lost'")
    worker = tracing_tasks.app.worker(dsn=dsn, queues=["cpu"], poll_interval=0.05, processes=1)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 1}, timeout=60)
    [(result,)] = query(dsn, "SELECT result FROM pgqueue.jobs WHERE id = %s", [job_id])
    return dict(result)


@pytest.mark.parametrize("isolated", [False, True], ids=["process", "isolated"])
async def test_a_span_made_in_a_process_pool_child_is_a_child_of_the_attempts_span(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, isolated: bool
) -> None:
    """A task run in a child process (``executor="process"``, or isolated after a crash) made
    spans of no parent, traces of their own: the attempt's span, in the worker, was not made
    current in the child. It is now, so a span the task makes there is its child."""
    monkeypatch.setattr(tracing_tasks.app, "hooks", AppHooks())
    exporter = traced(tracing_tasks.app)
    task = tracing_tasks.span_isolated if isolated else tracing_tasks.span_in_process
    made = await run_in_child(dsn, conn, task, isolated)
    [attempt] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    context = attempt.get_span_context()
    assert made == {
        "imported": True, "trace": f"{context.trace_id:032x}", "parent": f"{context.span_id:016x}"
    }  # fmt: skip


async def test_an_uninstrumented_apps_child_imports_no_opentelemetry(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passing the trace context to a child costs an app that is not instrumented nothing:
    its children do not import OpenTelemetry."""
    monkeypatch.setattr(tracing_tasks.app, "hooks", AppHooks())
    made = await run_in_child(dsn, conn, tracing_tasks.span_in_process, isolated=False)
    assert (made["imported"], made["parent"]) == (False, None)


async def test_an_enqueue_has_a_producer_span_that_the_attempts_span_is_a_child_of(
    dsn: str, conn: Any
) -> None:
    """An enqueue made no span: an attempt's span was a child of whatever span enqueued it (a
    request's), and a trace showed no enqueue, as OpenTelemetry's messaging conventions (and
    Celery's and Sidekiq's instrumentations) have one. Each enqueue is a PRODUCER span, a
    child of the caller's, and the attempt's span is the enqueue span's child."""
    app = pgqueue.PgQueue(dsn)
    app.task(name="work", queue="q")(lambda: None)
    exporter = traced(app)
    tracer = sdk.TracerProvider().get_tracer("caller")
    with tracer.start_as_current_span("request") as request:
        job_id = app.using("work").enqueue(conn)
    conn.commit()
    worker = app.worker(queues=["q"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 1})
    [enqueue] = kind_of(exporter, SpanKind.PRODUCER)
    [attempt] = kind_of(exporter, SpanKind.CONSUMER)
    assert enqueue.name == "pgqueue.enqueue work"
    assert enqueue.parent.span_id == request.get_span_context().span_id
    assert attempt.parent.span_id == enqueue.context.span_id
    assert {k: v for k, v in enqueue.attributes.items() if k.startswith("messaging.")} == {
        "messaging.system": "pgqueue",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": "q",
        "messaging.message.id": str(job_id),
    }
    assert enqueue.status.status_code is StatusCode.UNSET


async def test_enqueue_many_has_one_producer_span_for_its_batch(dsn: str, aconn: Any) -> None:
    """A batch of jobs has one span, not one per job (a batch may be 100,000 jobs): each job's
    ``meta`` holds its context, and it counts the jobs as the conventions' batches do."""
    app = pgqueue.PgQueue(dsn)
    app.task(name="work", queue="q")(lambda: None)
    exporter = traced(app)
    await app.using("work").aenqueue_many(aconn, [((), {})] * 3)
    await aconn.commit()
    [enqueue] = kind_of(exporter, SpanKind.PRODUCER)
    assert enqueue.name == "pgqueue.enqueue_many work"
    assert enqueue.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in enqueue.attributes
    parents = query(
        dsn, "SELECT DISTINCT left(meta->'trace'->>'traceparent', 52) FROM pgqueue.jobs"
    )
    assert parents == [(f"00-{enqueue.context.trace_id:032x}-{enqueue.context.span_id:016x}",)]


async def test_a_keyed_batch_counts_the_jobs_it_wrote(aconn: Any) -> None:
    """A batch with unique_keys counted every place, held keys' and repeats' too: a batch
    whose every key was held looked like a send of as many jobs. It counts the jobs written,
    as a unique enqueue's span says it wrote none."""
    app = pgqueue.PgQueue()
    app.task(name="work", queue="q")(lambda: None)
    exporter = traced(app)
    work = app.using("work")
    await work.using(unique_key="h").aenqueue(aconn)
    await work.aenqueue_many(aconn, [((), {})] * 4, unique_keys=["h", "a", "a", None])
    await work.aenqueue_many(aconn, [((), {})] * 2, unique_keys=["a", "h"])
    counts = [
        s.attributes.get("messaging.batch.message_count")
        for s in kind_of(exporter, SpanKind.PRODUCER)
    ]
    assert counts == [None, 2, 0]


def test_a_failed_enqueues_span_is_an_error_that_says_only_its_type(conn: Any) -> None:
    """An enqueue that raises ends its span as an error, with the exception's type and not its
    message, which may hold the arguments (and the app's ``redact`` is for job errors)."""
    app = pgqueue.PgQueue()
    app.task(name="work", queue="q")(lambda secret: None)
    exporter = traced(app)
    with pytest.raises(TypeError):
        app.using("work").enqueue(conn, {"password": b"hunter2"})
    [enqueue] = kind_of(exporter, SpanKind.PRODUCER)
    assert enqueue.status.status_code is StatusCode.ERROR
    assert enqueue.attributes["error.type"] == "TypeError"
    assert "hunter2" not in texts(enqueue)


async def test_a_unique_enqueue_says_whether_it_found_the_keys_job(aconn: Any) -> None:
    """A unique enqueue that found a job holding its key returns that job's id and writes
    nothing: its span says so (``pgqueue.unique.existing``), where it looked like a send."""
    app = pgqueue.PgQueue()
    app.task(name="work", queue="q")(lambda: None)
    exporter = traced(app)
    unique = app.using("work").using(unique_key="k")
    first = await unique.aenqueue(aconn)
    assert await unique.aenqueue(aconn) == first
    await app.using("work").aenqueue(aconn)
    found = [
        s.attributes.get("pgqueue.unique.existing") for s in kind_of(exporter, SpanKind.PRODUCER)
    ]
    assert found == [False, True, None]
    assert {s.attributes["pgqueue.job_id"] for s in kind_of(exporter, SpanKind.PRODUCER)[:2]} == {
        first
    }


def test_enqueue_spans_can_be_switched_off(conn: Any) -> None:
    """``instrument(app, enqueue_spans=False)``: no span per enqueue; the job's ``meta`` holds
    the caller's context, its attempts' spans are the caller's span's children."""
    app = pgqueue.PgQueue()
    app.task(name="work", queue="q")(lambda: None)
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracing.instrument(app, tracer_provider=provider, enqueue_spans=False)
    with provider.get_tracer("caller").start_as_current_span("request") as request:
        job_id = app.using("work").enqueue(conn)
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]
    sql = "SELECT meta->'trace'->>'traceparent' FROM pgqueue.jobs WHERE id = %s"
    [(parent,)] = conn.execute(sql, [job_id]).fetchall()
    assert f"-{request.get_span_context().span_id:016x}-" in parent


async def test_a_cancelled_aenqueue_ends_its_span_and_leaves_no_context_behind(
    dsn: str, aconn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The enqueue span is a sync context manager held across the awaits of ``aenqueue``:
    cancelled while its INSERT waits (for a lock here), the span still ends, as an error of
    type ``CancelledError``, and the context is detached in the task that attached it
    (OpenTelemetry logs "Failed to detach context" otherwise)."""
    app = pgqueue.PgQueue(dsn)
    app.task(name="work", queue="q")(lambda: None)
    exporter = traced(app)
    with psycopg.connect(dsn) as locker, caplog.at_level(logging.DEBUG):
        locker.execute("LOCK TABLE pgqueue.jobs IN ACCESS EXCLUSIVE MODE")
        sending = asyncio.create_task(app.using("work").aenqueue(aconn))
        await asyncio.sleep(0.2)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
    [enqueue] = kind_of(exporter, SpanKind.PRODUCER)
    assert enqueue.end_time is not None
    assert enqueue.status.status_code is StatusCode.ERROR  # the caller's send did not complete
    assert enqueue.attributes["error.type"] == "CancelledError"
    assert not trace.get_current_span().get_span_context().is_valid
    assert not [r.getMessage() for r in caplog.records if "detach" in r.getMessage()]


async def test_concurrent_aenqueues_each_name_their_own_span(dsn: str) -> None:
    """Enqueues interleaving on one event loop (one task each, as ``gather`` makes): each
    job's ``meta`` holds its own enqueue's span, and no span is another's parent."""
    app = pgqueue.PgQueue(dsn)
    app.task(name="work", queue="q")(lambda: None)
    exporter = traced(app)
    conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(4)]
    try:
        await asyncio.gather(*[app.using("work").aenqueue(c) for c in conns])
    finally:
        for c in conns:
            await c.close()
    spans = {s.attributes["pgqueue.job_id"]: s for s in kind_of(exporter, SpanKind.PRODUCER)}
    rows = query(dsn, "SELECT id, meta->'trace'->>'traceparent' FROM pgqueue.jobs")
    assert len(rows) == len(spans) == 4
    for job_id, parent in rows:
        assert f"-{spans[job_id].context.span_id:016x}-" in parent
        assert spans[job_id].parent is None


async def test_each_replaced_childs_spans_are_children_of_their_own_attempt(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``max_tasks_per_child=1`` every job runs in a new child: each is sent its own
    attempt's context, and a span it makes is that attempt span's child."""
    monkeypatch.setattr(tracing_tasks.app, "hooks", AppHooks())
    exporter = traced(tracing_tasks.app)
    ids = [tracing_tasks.span_in_process.enqueue(conn) for _ in range(3)]
    conn.commit()
    worker = tracing_tasks.app.worker(
        dsn=dsn, queues=["cpu"], poll_interval=0.05, processes=1, max_tasks_per_child=1
    )
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 3}, timeout=90)
    attempts = {s.attributes["pgqueue.job_id"]: s for s in kind_of(exporter, SpanKind.CONSUMER)}
    results = dict(query(dsn, "SELECT id, result->>'parent' FROM pgqueue.jobs"))
    assert results == {i: f"{attempts[i].context.span_id:016x}" for i in ids}


async def test_a_periodic_jobs_attempt_starts_a_trace_of_its_own(dsn: str) -> None:
    """A periodic task's job has no caller to take a trace from (the scheduler enqueues it
    with a statement of its own, making no producer span): each attempt's span is a root, and
    the job's meta names its schedule and tick, not a trace."""
    app = pgqueue.PgQueue(dsn)

    @app.periodic("* * * * * *", name="beat")
    async def beat() -> str:
        return str(sorted(pgqueue.current_job().meta))

    exporter = traced(app)
    await run_worker_until(app.worker(poll_interval=0.05), lambda: states(dsn).get("succeeded"))
    await asyncio.sleep(0)
    runs = [s for s in exporter.get_finished_spans() if s.name.startswith("pgqueue.run")]
    assert runs and all(s.parent is None for s in runs)
    assert kind_of(exporter, SpanKind.PRODUCER) == []
    results = {
        r
        for (r,) in query(dsn, "SELECT result #>> '{}' FROM pgqueue.jobs WHERE result IS NOT NULL")
    }
    assert results == {str(["periodic", "tick"])}
