"""OpenTelemetry for pgqueue (``pip install 'pgqueue[otel]'``).

``instrument(app)`` stores the current trace context in each job's ``meta`` at enqueue, and
makes one span per attempt on the worker, a child of the span that enqueued the job.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import context, propagate, trace
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:
    raise ImportError(
        "pgqueue.tracing needs OpenTelemetry's API: pip install 'pgqueue[otel]'",
        name=exc.name,
    ) from exc

from pgqueue._app import PgQueue
from pgqueue._errors import exception_text
from pgqueue._hooks import Ids, Sent
from pgqueue._worker import JobContext
from pgqueue._worker._executor import WITHHELD, decided, describe, redacted, stopped_by

META_KEY = "trace"
_installed: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()  # the hooks instrument made
# OpenTelemetry's semantic conventions for messaging: an attempt processes one message (job).
_MESSAGING = {
    "messaging.system": "pgqueue",
    "messaging.operation.type": "process",
    "messaging.operation.name": "run",
}
# How an attempt's context crosses to a process-pool child: W3C headers, whatever propagator
# the app set (the child may not have set the same one).
_W3C = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def instrument(app: PgQueue, tracer_provider: Any = None, *, enqueue_spans: bool = True) -> None:
    """Propagate trace context from enqueue to execution, and trace every attempt of ``app``;
    with ``enqueue_spans``, every enqueue (one span for a batch of ``enqueue_many``) too."""
    tracer = trace.get_tracer("pgqueue", tracer_provider=tracer_provider)

    def inject(meta: dict[str, Any]) -> dict[str, Any]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {**meta, META_KEY: carrier} if carrier else meta

    async def span(job: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        parent = propagate.extract(_carrier(job.meta))
        attributes: dict[str, str | int] = {
            **_MESSAGING, "messaging.destination.name": job.queue,
            "messaging.message.id": str(job.id),
            "pgqueue.job_id": job.id, "pgqueue.task": job.task, "pgqueue.queue": job.queue,
            "pgqueue.attempt": job.attempt,
        }  # fmt: skip
        with tracer.start_as_current_span(
            f"pgqueue.run {job.task}", context=parent, kind=trace.SpanKind.CONSUMER,
            attributes=attributes, record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            try:
                return await call_next()
            except BaseException as exc:
                _ended(span, exc, job, app.redact)
                raise

    # Where producer and worker are one process, each called this: the last call's hooks
    # replace the earlier ones, else every attempt had one span per call. New lists, not
    # edits: an attempt under way (or an enqueue) goes on with the list it started with.
    hooks = app.hooks
    hooks.enqueue_meta = [*(h for h in hooks.enqueue_meta if not _made_here(h)), inject]
    hooks.middleware = [span, *(m for m in hooks.middleware if not _made_here(m))]
    hooks.child_trace = _for_a_child
    hooks.enqueue_span = functools.partial(_sending, tracer) if enqueue_spans else None
    _installed.update((inject, span))


@contextmanager
def _sending(tracer: Any, task: str, queue: str, batch: bool) -> Iterator[Sent]:
    """A PRODUCER span around an enqueue (of a batch, if ``batch``), current within, so that
    the jobs' ``meta`` holds its context: their attempts' spans are its children. An enqueue
    that raises ends it an error, with the exception's type only (``error.type``): its
    message may hold the arguments, and the app's ``redact`` is for the errors of jobs."""
    operation = "enqueue_many" if batch else "enqueue"
    attributes = {
        **_MESSAGING, "messaging.operation.type": "send", "messaging.operation.name": operation,
        "messaging.destination.name": queue, "pgqueue.task": task, "pgqueue.queue": queue,
    }  # fmt: skip
    with tracer.start_as_current_span(
        f"pgqueue.{operation} {task}", kind=trace.SpanKind.PRODUCER, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        try:
            yield functools.partial(_sent, span)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(trace.StatusCode.ERROR)
            raise


def _sent(span: Any, ids: Ids, existing: bool | None = None, written: int | None = None) -> Ids:
    """Tell an enqueue's ``span`` the job (its id) or the batch (how many: ``written``, if
    given, else all) it sent, and for a unique enqueue whether the job is one it found holding
    the key (nothing sent)."""
    if existing is not None:
        span.set_attribute("pgqueue.unique.existing", existing)
    if isinstance(ids, int):
        span.set_attributes({"messaging.message.id": str(ids), "pgqueue.job_id": ids})
    else:
        span.set_attribute(
            "messaging.batch.message_count", len(ids) if written is None else written
        )
    return ids


def _for_a_child() -> dict[str, str]:
    """The current context (an attempt's span, where the executor asks) as W3C headers."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


@contextmanager
def _attached(carrier: dict[str, str]) -> Iterator[None]:
    """In a process-pool child: the context ``carrier`` holds (the attempt's span) current
    within, so that the spans the task makes are the attempt span's children."""
    token = context.attach(_W3C.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def _made_here(hook: object) -> bool:
    """Whether instrument() made ``hook``; by identity: ``hook in _installed`` hashes it, and
    an app's own hook may be unhashable (a dataclass with an async ``__call__``)."""
    return any(hook is made for made in _installed)


def _ended(span: Any, exc: BaseException, job: JobContext, redact: Callable[[str], object]) -> None:
    """Give ``span`` the status of an attempt that raised ``exc``, as its job's outcome has it.
    A timeout or the worker's cancellation raises CancelledError, which OpenTelemetry does not
    take for an error: such a span ended with no status, as a success looks; a ``Retry`` or
    ``Cancel`` (alone or in a TaskGroup's exception group), the task's decision and no
    failure, ended as an error."""
    why = stopped_by(job)
    if why == "timeout":  # whatever the task made of its timeout's cancellation: a failure
        span.set_status(trace.StatusCode.ERROR, "timed out")
    elif why is not None and isinstance(exc, asyncio.CancelledError):
        span.set_status(trace.StatusCode.ERROR, f"stopped: {why}")
    elif not (decided(exc) or isinstance(exc, GeneratorExit)):
        _record(span, exc, job.id, redact)


def _record(span: Any, exc: BaseException, job_id: int, redact: Callable[[str], object]) -> None:
    """Mark ``span`` failed by ``exc``, its texts through the app's ``redact`` as the job's row
    and log records have them: OpenTelemetry's own recording sent the secrets ``redact`` keeps
    out of those to the trace backend, in the message and the traceback."""
    status = redacted(redact, describe(exc), job_id)
    if status.startswith(WITHHELD):  # said once: the other texts are withheld alike, unsaid
        message = stacktrace = status
    else:
        message = redacted(redact, exception_text(exc, None), job_id)
        stacktrace = redacted(redact, "".join(traceback.format_exception(exc)), job_id)
    span.record_exception(exc, attributes={
        "exception.message": message, "exception.stacktrace": stacktrace,
    })  # fmt: skip
    span.set_status(trace.StatusCode.ERROR, status)


def _carrier(meta: dict[str, Any]) -> dict[str, str]:
    """The trace context stored in ``meta``, if it is one: text keys and values, as ``inject``
    writes it. SQL can store anything there, and the propagator raised on anything else (a
    list, a number), failing every attempt of the job before its task ran."""
    carrier = meta.get(META_KEY)
    if isinstance(carrier, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in carrier.items()
    ):
        return carrier
    return {}
