"""Worker events: job log records, the summary line, task callbacks, middleware, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._logging import JsonFormatter
from tests.helpers import query, run_worker_until, states, stop_with_one_asked_to_cancel

JOB_FIELDS = {"job_id", "task", "queue", "attempt", "duration_ms", "action"}


def make_app(dsn: str, **task_options: Any) -> pgqueue.PgQueue:
    """An app whose task "work" returns its argument, or raises when it is negative."""
    app = pgqueue.PgQueue(dsn, retry=pgqueue.RetryPolicy(base=0.01, cap=0.02))

    @app.task(name="work", queue="q", max_attempts=2, **task_options)
    async def work(n: int) -> int:
        if n < 0:
            raise ValueError(f"negative: {n}")
        return n

    return app


async def run_jobs(dsn: str, conn: Any, app: pgqueue.PgQueue, *ns: int, **options: Any) -> None:
    """Enqueue work(n) for each n and run a worker until all have finished."""
    for n in ns:
        app.using("work").enqueue(conn, n)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, **options)
    await run_worker_until(w, lambda: sum(states(dsn).get(s, 0) for s in ("succeeded", "failed"))
                           == len(ns))  # fmt: skip


async def test_job_records_carry_the_job_fields(dsn: str, conn: Any, caplog: Any) -> None:
    """Every record about a job has job_id, task, queue, attempt, duration_ms and action."""
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    await run_jobs(dsn, conn, make_app(dsn), 1, -1)
    records = [r for r in caplog.records if str(getattr(r, "action", "")).startswith("job_")]
    actions = sorted(r.action for r in records)  # type: ignore[attr-defined]
    assert actions == sorted(["job_failed", "job_retrying", "job_succeeded"] + ["job_started"] * 3)
    finished = [r for r in records if r.action != "job_started"]  # type: ignore[attr-defined]
    assert all(set(vars(r)) >= JOB_FIELDS for r in finished)
    formatted = json.loads(JsonFormatter().format(finished[0]))
    assert set(formatted) >= JOB_FIELDS and formatted["task"] == "work"


async def test_worker_logs_a_startup_line_and_periodic_summaries(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The startup line hides the password; a summary line counts finished jobs."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = make_app(dsn)
    app.using("work").enqueue(conn, 5)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, summary_interval=0.05,
                   dsn=dsn + " password=s3cret")  # fmt: skip

    def summarized() -> bool:
        return any(getattr(r, "action", "") == "worker_summary" and r.succeeded == 1  # type: ignore[attr-defined]
                   for r in caplog.records)  # fmt: skip

    await run_worker_until(w, summarized)
    [started] = [r for r in caplog.records if getattr(r, "action", "") == "worker_started"]
    assert "s3cret" not in started.getMessage() and "concurrency 10" in started.getMessage()


async def test_the_summary_counts_retry_requests_apart_as_the_metrics_do(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """worker_summary's `retried` counted a task's Retry (no failure) with the failures that
    will be retried; the metrics count those apart (pgqueue_jobs_rescheduled_total), and now
    so does the summary, as `rescheduled`. No field is ever negative."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = make_app(dsn)

    runs: list[int] = []

    @app.task(name="later", queue="q")
    async def later() -> None:
        runs.append(1)
        if len(runs) == 1:  # a Retry gives its attempt back: the attempt number stays 1
            raise pgqueue.Retry(0)

    later.enqueue(conn)
    app.using("work").enqueue(conn, 5)
    app.using("work").enqueue(conn, -1)
    conn.commit()
    fields = ("succeeded", "failed", "cancelled", "retried", "rescheduled")

    def summed() -> dict[str, int]:
        summaries = [r for r in caplog.records if getattr(r, "action", "") == "worker_summary"]
        return {f: sum(getattr(r, f, 0) for r in summaries) for f in fields}

    w = app.worker(queues=["q"], poll_interval=0.05, summary_interval=0.05)
    await run_worker_until(w, lambda: summed()["succeeded"] + summed()["failed"] == 3)
    summaries = [r for r in caplog.records if getattr(r, "action", "") == "worker_summary"]
    assert summed() == {"succeeded": 2, "failed": 1, "cancelled": 0, "retried": 1, "rescheduled": 1}
    assert all(getattr(r, f) >= 0 for r in summaries for f in fields)


async def test_the_startup_line_hides_the_ssl_key_password_too(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """A DSN's sslpassword (the passphrase of the client's SSL key) was logged in clear in the
    worker_started line and its dsn field: only password was hidden."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    secret_dsn = psycopg.conninfo.make_conninfo(dsn, password="s3cret", sslpassword="hunter2")
    w = make_app(dsn).worker(queues=["q"], poll_interval=0.05, dsn=secret_dsn)

    def started() -> bool:
        return any(getattr(r, "action", "") == "worker_started" for r in caplog.records)

    await run_worker_until(w, started)
    [record] = [r for r in caplog.records if getattr(r, "action", "") == "worker_started"]
    line = JsonFormatter().format(record)
    assert "hunter2" not in line and "s3cret" not in line
    assert "sslpassword=***" in record.dsn  # type: ignore[attr-defined]


async def test_callbacks_run_once_on_success_and_on_final_failure(dsn: str, conn: Any) -> None:
    """on_success gets the result; on_failure runs once, after the last attempt only."""
    seen: list[tuple[str, Any, Any]] = []

    async def succeeded(event: pgqueue.JobEvent) -> None:
        seen.append(("success", event.job.id, event.result))

    def failed(event: pgqueue.JobEvent) -> None:  # sync: runs in a thread
        seen.append(("failure", event.job.attempt, event.error))

    app = make_app(dsn, on_success=succeeded, on_failure=failed)
    await run_jobs(dsn, conn, app, 7, -1)
    assert sorted(seen, key=str) == sorted(
        [("success", 1, 7), ("failure", 2, "ValueError: negative: -1")], key=str
    )


async def test_a_callback_object_with_an_async_call_is_awaited(dsn: str, conn: Any) -> None:
    """An on_failure that is an object whose ``__call__`` is a coroutine function (an alerting
    client's), or a plain function returning a coroutine: ``inspect`` takes neither for a
    coroutine function, so it was called in a thread and its coroutine never awaited, the alert
    never sent (a RuntimeWarning its only trace). What a callback returns is now awaited when
    it can be."""
    seen: list[tuple[str, int]] = []

    class Alert:
        async def __call__(self, event: pgqueue.JobEvent) -> None:
            seen.append(("failure", event.job.attempt))

    async def succeeded(event: pgqueue.JobEvent) -> None:
        seen.append(("success", event.job.id))

    app = make_app(dsn, on_failure=Alert(), on_success=lambda event: succeeded(event))
    await run_jobs(dsn, conn, app, 7, -1)
    await asyncio.sleep(0.1)  # the callbacks run after the outcomes are handed over
    assert sorted(seen) == [("failure", 2), ("success", 1)]


async def test_job_ended_hooks_hear_of_each_jobs_end_once_it_is_written(
    dsn: str, conn: Any
) -> None:
    """An app's job_ended hooks run once per job, off the loop, after its end is written:
    the row they read is the one the event describes; a retry is not an end."""
    seen: list[tuple[str, int, Any, list[Any]]] = []

    def ended(event: pgqueue.JobEvent) -> None:
        with psycopg.connect(dsn) as other:
            row = other.execute(
                "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s", [event.job.id]
            ).fetchall()
        seen.append((event.state, event.job.attempt, event.result, row))

    app = make_app(dsn)
    app.hooks.job_ended["work"] = ended
    await run_jobs(dsn, conn, app, 7, -1)
    assert sorted(seen, key=str) == sorted(
        [("succeeded", 1, 7, [("succeeded", 1)]), ("failed", 2, None, [("failed", 2)])],
        key=str,
    )


async def test_callbacks_slower_than_the_jobs_do_not_pile_up_without_end(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """A sync on_success slower than the jobs it follows: each waits for one of the loop's
    few default threads, and they used to pile up, one task and event per finished job, as
    many as jobs ran (with every one still queued for those threads when a program's loop
    closes). The worker claims no more while ack_backlog (max(ack_batch, concurrency)) wait,
    and says so once."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = make_app(dsn, on_success=lambda event: time.sleep(0.02))
    for n in range(200):
        app.using("work").enqueue(conn, n)
    conn.commit()
    w = app.worker(queues={"q": 10}, poll_interval=0.05, ack_batch=20, shutdown_timeout=10)
    most: list[int] = [0]
    pending = w.events._callbacks
    w.events.listeners.append(lambda event: most.__setitem__(0, max(most[0], len(pending))))
    await run_worker_until(w, lambda: states(dsn) == {"succeeded": 200}, timeout=60)
    assert most[0] <= 20 + 10  # the backlog, and the jobs already claimed when it was reached
    assert not pending
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions.count("callbacks_behind") == 1


async def test_a_burst_worker_behind_callbacks_that_never_return_ends_when_idle(
    dsn: str, conn: Any
) -> None:
    """A burst worker whose ack backlog (max(ack_batch, concurrency): 1 here, 200 by default)
    of on_success callbacks never return, and no job is left: it must end, as it does when
    fewer callbacks hang (shutdown gives them shutdown_timeout), not wait for a callback to
    end before it looks whether anything is left."""
    gate = asyncio.Event()

    async def on_success(event: pgqueue.JobEvent) -> None:
        await gate.wait()

    app = make_app(dsn, on_success=on_success)
    app.using("work").enqueue(conn, 1)
    conn.commit()
    w = app.worker(queues={"q": 1}, ack_batch=1, burst=True, poll_interval=0.05,
                   shutdown_timeout=0.2)  # fmt: skip
    runner = asyncio.create_task(w.run())
    try:
        ended, _ = await asyncio.wait([runner], timeout=10)
        assert ended, "the burst worker waits for a callback that never returns"
        assert states(dsn) == {"succeeded": 1}
    finally:
        w.stop()
        gate.set()
        await runner


@pytest.mark.parametrize("callback", ["on_success", "job_ended"])
async def test_callbacks_left_running_at_shutdown_are_logged(
    dsn: str, conn: Any, caplog: Any, callback: str
) -> None:
    """A sync on_success, or a job_ended hook (Django's task_finished), that has not returned
    when the time shutdown gives callbacks is up: the worker stops without it (its thread
    abandoned, callbacks not yet started dropped). It must say so in a callbacks_abandoned
    record counting them, as it logs the jobs it abandons; it used to stop without a word of
    the callbacks that never ended, and then spoke of on_success and on_failure callbacks only,
    to a worker whose tasks have neither."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    gate = threading.Event()
    if callback == "on_success":
        app = make_app(dsn, on_success=lambda event: gate.wait())
    else:
        app = make_app(dsn)
        app.hooks.job_ended["work"] = lambda event: gate.wait()
    app.using("work").enqueue(conn, 1)
    conn.commit()
    w = app.worker(queues=["q"], burst=True, poll_interval=0.05, shutdown_timeout=0.2)
    try:
        await asyncio.wait_for(w.run(), 15)
    finally:
        gate.set()
    [left] = [r for r in caplog.records if getattr(r, "action", None) == "callbacks_abandoned"]
    assert (left.levelno, left.callbacks) == (logging.WARNING, 1)  # type: ignore[attr-defined]
    assert "task_finished" in left.getMessage()


class _Forever:
    """An awaitable that never completes: its coroutine stays suspended until closed."""

    def __await__(self) -> Any:
        while True:
            yield


def test_a_callback_closed_unfinished_is_not_logged_as_raising(caplog: Any) -> None:
    """An async callback still running when its coroutine is closed (its task destroyed
    pending, as with a loop closed without cancelling it) stops there: the GeneratorExit
    that closes it was caught as the callback's own error and logged as callback_error."""
    from types import SimpleNamespace

    from pgqueue._events import WorkerEvents

    async def waits(event: Any) -> None:
        await _Forever()

    event = SimpleNamespace(job=SimpleNamespace(id=7, task="t", queue="q", attempt=1), duration=0)
    call = WorkerEvents(SimpleNamespace())._run_callback(waits, event)  # type: ignore[arg-type]
    call.send(None)
    call.close()
    assert [r for r in caplog.records if getattr(r, "action", None) == "callback_error"] == []


def test_a_sync_callback_that_never_returns_does_not_hold_run_worker(dsn: str, conn: Any) -> None:
    """A sync on_success that never returns: app.run_worker() gives control back after the
    time shutdown gives callbacks, as it does after a thread task it abandoned, and
    abandoned_threads() counts it. It used to run in the loop's default executor, whose
    shutdown, as the loop closed, waited for that thread forever."""
    gate = threading.Event()
    app = make_app(dsn, on_success=lambda event: gate.wait())
    app.using("work").enqueue(conn, 1)
    conn.commit()
    options = {"queues": ["q"], "burst": True, "poll_interval": 0.05, "shutdown_timeout": 0.2}
    runner = threading.Thread(target=app.run_worker, kwargs=options)
    try:
        runner.start()
        runner.join(15)
        assert not runner.is_alive(), "app.run_worker() waits for the callback's thread"
        assert pgqueue.Worker(app).abandoned_threads() == 1
    finally:
        gate.set()
        runner.join(15)


async def test_a_raising_listener_keeps_callbacks_and_other_listeners(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """A listener that raises is logged; the job's log line, its on_failure callback and the
    listeners after it still run (the exception used to escape the attempt's task, skipping
    them all, and surface as "Task exception was never retrieved")."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    failures: list[int] = []
    app = make_app(dsn, on_failure=lambda event: failures.append(event.job.attempt))
    w = app.worker(queues=["q"], poll_interval=0.05)
    seen: list[str] = []
    w.events.listeners += [lambda event: 1 / 0, lambda event: seen.append(event.state)]
    app.using("work").enqueue(conn, -1)
    conn.commit()
    await run_worker_until(w, lambda: failures == [2])
    assert seen == ["retrying", "failed"]
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions.count("listener_error") == 2
    assert "job_failed" in actions


async def test_a_service_that_fails_is_logged_at_once(dsn: str, caplog: Any) -> None:
    """A service ending with an error is logged as it ends, naming it (a metrics port in use
    used to leave no trace until shutdown, which gathered the error silently)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")

    async def broken(worker: pgqueue.Worker) -> None:
        raise OSError("address already in use")

    w = make_app(dsn).worker(queues=["q"], poll_interval=0.05, services=[broken])

    def logged() -> bool:
        return any(getattr(r, "action", None) == "service_error" for r in caplog.records)

    await run_worker_until(w, logged, timeout=10)
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "service_error"]
    assert record.getMessage().endswith("broken stopped: OSError: address already in use")


async def test_middleware_wraps_every_attempt_outermost_first(dsn: str, conn: Any) -> None:
    """Middleware runs around each attempt in registration order and may change the result."""
    calls: list[str] = []
    app = make_app(dsn)

    @app.middleware
    async def outer(job: pgqueue.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        calls.append(f"outer {job.task}")
        return await call_next()

    @app.middleware
    async def double(job: pgqueue.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        calls.append("inner")
        return 2 * await call_next()

    await run_jobs(dsn, conn, app, 21)
    job = app.get_job(conn, 1)
    assert job is not None and job.result == 42
    assert calls == ["outer work", "inner"]


async def test_metrics_endpoint_serves_job_counters_histograms_and_gauges(
    dsn: str, conn: Any
) -> None:
    """/metrics: finished per task/queue/state, retries, duration, latency, depth, running."""
    parser = pytest.importorskip("prometheus_client.parser")
    app = make_app(dsn)
    for n in (1, 2, -1):
        app.using("work").enqueue(conn, n)
    app.using("work", delay=3600).enqueue(conn, 3)  # not runnable: stays out of the depth
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, metrics_port=0)
    scraped: list[str] = []
    await run_worker_until(w, lambda: scrape_when_done(w, dsn, scraped))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in parser.text_string_to_metric_families(scraped[-1])
               for s in family.samples}  # fmt: skip
    q, task = ("queue", "q"), ("task", "work")
    finished = "pgqueue_jobs_finished_total"
    assert samples[(finished, (q, ("state", "succeeded"), task))] == 2
    assert samples[(finished, (q, ("state", "failed"), task))] == 1
    assert samples[("pgqueue_job_retries_total", (q, task))] == 1
    assert samples[("pgqueue_job_duration_seconds_count", (q, task))] == 4
    assert samples[("pgqueue_job_start_latency_seconds_count", (q,))] == 4
    assert samples[("pgqueue_queue_depth", (q,))] == 0
    assert ("pgqueue_jobs_running", ()) in samples
    assert ("pgqueue_active_jobs_estimate", ()) in samples


def scrape_when_done(w: pgqueue.Worker, dsn: str, scraped: list[str]) -> bool:
    """Scrape once every runnable job is final; true when the queue depth was published."""
    if w.events.metrics_port is None or states(dsn).get("queued", 0) != 1:
        return False
    if sum(states(dsn).get(s, 0) for s in ("succeeded", "failed")) != 3:
        return False
    url = f"http://127.0.0.1:{w.events.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    scraped.append(text)
    return 'pgqueue_queue_depth{queue="q"} 0.0' in text


async def test_jobs_of_tasks_the_app_does_not_register_share_one_metrics_label(
    dsn: str, conn: Any
) -> None:
    """The task label was whatever the row said: each name a producer wrote that the worker
    does not know (a typo, jobs enqueued by SQL with a name made per call) made series of its
    own, without bound. They are now counted under the one label task="(unregistered)"."""
    parser = pytest.importorskip("prometheus_client.parser")
    app = make_app(dsn)
    for n in range(3):
        conn.execute("SELECT pgqueue.enqueue(%s, queue => 'q', max_attempts => 1)", [f"gone.{n}"])
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, metrics_port=0)
    scraped = await _scrape_once(w, dsn, {"failed": 3}, "pgqueue_jobs_finished_total")
    finished = {tuple(sorted(s.labels.items())): s.value
                for family in parser.text_string_to_metric_families(scraped[-1])
                for s in family.samples if s.name == "pgqueue_jobs_finished_total"}  # fmt: skip
    labels = (("queue", "q"), ("state", "failed"), ("task", "(unregistered)"))
    assert {key: value for key, value in finished.items() if value} == {labels: 3}
    assert {dict(key)["task"] for key in finished} == {"(unregistered)", *app.tasks}  # at 0


async def test_jobs_rescued_from_lost_workers_are_counted(dsn: str, conn: Any) -> None:
    """A job whose worker was lost (killed, or its lease run out) and that the rescue ended
    failed, out of attempts, was counted by no metric: only the worker that ran an attempt
    counts it, and that one is gone, so a task that kills its worker never showed in the
    failure ratio. The rescuing worker now counts what it requeued and what it ended."""
    parser = pytest.importorskip("prometheus_client.parser")
    app = make_app(dsn)  # "work": 2 attempts
    for _ in range(2):
        app.using("work").enqueue(conn, 1)
    conn.commit()
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'running', attempts = id::int,"
               " worker_id = 'gone', started_at = now(),"
               " lease_expires_at = now() - interval '1 s'")  # fmt: skip
    w = app.worker(queues=["q"], poll_interval=0.05, metrics_port=0)
    scraped = await _scrape_once(
        w, dsn, {"succeeded": 1, "failed": 1}, "pgqueue_jobs_rescued_total"
    )
    rescued = {s.labels["outcome"]: s.value
               for family in parser.text_string_to_metric_families(scraped[-1])
               for s in family.samples if s.name == "pgqueue_jobs_rescued_total"}  # fmt: skip
    assert rescued == {"requeued": 1, "ended": 1}


async def test_the_multiprocess_running_gauge_drops_as_an_attempt_ends_without_finishing(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """In multiprocess mode the running gauge was set as an attempt started and finished (and
    every 10 s): an attempt stopped by a lost lease, or given up at the stop, finishes no
    event, and the host's pgqueue_jobs_running counted it on until the next read. The gauge
    is set as every attempt stops running, however it ended."""
    from pgqueue import _metrics

    # Multiprocess mode as the gauge sees it: fed by the worker's events, not read at scrapes.
    monkeypatch.setattr(_metrics, "multiprocess_dir", lambda: str(tmp_path))
    app = pgqueue.PgQueue(dsn)

    @app.task(name="long", queue="q")
    async def long() -> None:
        await asyncio.sleep(3600)

    lost = app.using("long").enqueue(conn)
    app.using("long").enqueue(conn)
    conn.commit()
    w = app.worker(queues={"q": 2}, poll_interval=0.05, listen=False, shutdown_timeout=0.1,
                   metrics_port=0, metrics_addr="127.0.0.1")  # fmt: skip
    assert w._metrics is not None
    w._metrics.interval = 3600  # no read but the first: only the events move the gauge
    running = w._metrics.metrics.running
    runner = asyncio.create_task(w.run())
    try:
        await until(lambda: running._value.get() == 2)
        await asyncio.to_thread(query, dsn, PUT_BACK_ONE, [lost])
        w._cancel_hint(None)  # a heartbeat now: it finds the lease lost
        await until(lambda: w.running == 1)
        assert running._value.get() == 1
    finally:
        w.stop()
        await asyncio.wait_for(runner, 30)
    assert running._value.get() == 0  # the other given up at the stop (jobs_released)


# What the rescue of an expired lease does to a running job: another worker may claim it now.
PUT_BACK_ONE = """
UPDATE pgqueue.active_jobs SET state = 'queued', worker_id = NULL, lease_expires_at = NULL,
       run_at = now() + interval '1 hour'
 WHERE id = %s
"""


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait, on the loop, until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never"
        await asyncio.sleep(0.02)


async def test_tracing_links_the_attempt_span_to_the_enqueueing_trace(dsn: str, conn: Any) -> None:
    """pgqueue.tracing: the enqueue's span, a child of the caller's, goes into meta, and each
    attempt gets a span that is its child, in the caller's trace."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    from pgqueue import tracing

    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    app = make_app(dsn)
    tracing.instrument(app, tracer_provider=provider)
    with provider.get_tracer("test").start_as_current_span("request") as parent:
        app.using("work").enqueue(conn, 1)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05)
    await run_worker_until(w, lambda: states(dsn) == {"succeeded": 1})
    await asyncio.sleep(0)
    [span] = [s for s in exporter.get_finished_spans() if s.name == "pgqueue.run work"]
    [enqueue] = [s for s in exporter.get_finished_spans() if s.name == "pgqueue.enqueue work"]
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert enqueue.parent.span_id == parent.get_span_context().span_id
    assert span.parent.span_id == enqueue.context.span_id
    assert span.attributes["pgqueue.job_id"] == 1


async def test_a_raising_start_listener_is_logged_and_the_job_still_runs(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """A start listener (metrics observe claims with one) that raises is logged like a finish
    listener; the job runs and ends (the exception used to leave it in the worker's running
    set for good, its slot taken and its lease extended by every heartbeat)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = make_app(dsn)
    w = app.worker(queues=["q"], poll_interval=0.05)
    w.events.start_listeners.append(lambda job: 1 / 0)
    app.using("work").enqueue(conn, 7)
    conn.commit()
    await run_worker_until(w, lambda: states(dsn) == {"succeeded": 1}, timeout=5)
    assert w.running == 0
    assert [getattr(r, "action", None) for r in caplog.records].count("listener_error") == 1


@pytest.mark.parametrize("ending", ["error", "snooze"])
async def test_a_retry_the_database_ends_cancelled_is_reported_cancelled(
    dsn: str, conn: Any, caplog: Any, ending: str
) -> None:
    """A job asked to cancel while it runs, whose attempt fails (or snoozes) before a heartbeat
    tells its worker: the ack ends it cancelled, and the log line, the listeners and the
    summary counts say cancelled, not retrying."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)

    @app.task(name="work", queue="q", max_attempts=3)
    async def work() -> None:
        with psycopg.connect(dsn, autocommit=True) as other:  # blocks the loop: no heartbeat
            other.execute("SELECT pgqueue.cancel(%s)", [pgqueue.current_job().id])
        raise ValueError("boom") if ending == "error" else pgqueue.Retry(60)

    w = app.worker(queues=["q"], poll_interval=0.05)
    seen: list[str] = []
    w.events.listeners.append(lambda event: seen.append(event.state))
    app.using("work").enqueue(conn)
    conn.commit()
    await run_worker_until(w, lambda: states(dsn) == {"cancelled": 1} and bool(seen))
    assert seen == ["cancelled"]
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert "job_cancelled" in actions and "job_retrying" not in actions
    assert (w.stats.cancelled, w.stats.retried, w.stats.rescheduled) == (1, 0, 0)


async def test_a_job_a_workers_stop_ends_cancelled_is_reported_cancelled(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """A job asked to cancel while it runs, before its worker learns of it (no hint: a
    heartbeat's news), then stopped by the worker's shutdown, which ends it cancelled instead
    of putting it back: the log line, the listeners and the counts say cancelled, as for any
    other cancelled job; of the job put back, nothing. They said nothing of it."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)

    @app.task(name="sleeps", queue="q")
    async def sleeps() -> None:
        await asyncio.sleep(60)

    seen: list[tuple[int, str]] = []

    def listening(w: pgqueue.Worker) -> None:
        w.events.listeners.append(lambda event: seen.append((event.job.id, event.state)))

    w, doomed, _ = await stop_with_one_asked_to_cancel(dsn, conn, app, "sleeps", listening)
    assert seen == [(doomed, "cancelled")]
    logged = [(r.job_id, r.levelname) for r in caplog.records
              if getattr(r, "action", None) == "job_cancelled"]  # fmt: skip
    assert logged == [(doomed, "INFO")]
    assert (w.stats.cancelled, w.stats.retried, w.stats.failed) == (1, 0, 0)


async def _scrape_once(w: Any, dsn: str, settled: dict[str, int], metric: str) -> list[str]:
    """Run worker ``w`` until the jobs' states are ``settled`` and its ``/metrics`` shows
    ``metric``; returns what it scraped, the last scrape last."""
    scraped: list[str] = []

    def shown() -> bool:
        if w.events.metrics_port is None or states(dsn) != settled:
            return False
        url = f"http://127.0.0.1:{w.events.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            scraped.append(response.read().decode())
        return metric + "{" in scraped[-1]

    await run_worker_until(w, shown)
    return scraped
