"""``drain``: run every queued job now, with a real worker, and return what happened."""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import sys
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._app import PgQueue
from pgqueue._connections import watch_connections, watched_backends
from pgqueue._errors import Retry, SchemaError
from pgqueue._hooks import Middleware
from pgqueue._options import check_count, check_queue
from pgqueue._schema import aschema_state, schema_problem
from pgqueue._worker._context import JobContext
from pgqueue._worker._executor import asks_again
from pgqueue._worker._worker import WorkerStats

OUTCOMES = ("succeeded", "failed", "retried", "rescheduled", "cancelled")

# Seconds a drain waits for a job row another transaction holds before it says so: a worker's
# claim holds its rows for milliseconds, a test's own open transaction until it ends.
LOCK_WAIT = 10.0

# A job of another app's task committed while a round runs is not held (only those queued
# when it began are), and the round's worker may claim it: it then gives its attempt back and
# waits this long (a Retry), where the worker would have failed it as an unknown task.
STEP_ASIDE = 1.0

_ASYNCIO = os.path.dirname(asyncio.__file__) + os.sep

# drain() names a connection of this process idling in a transaction that wrote jobs: keep the
# connections pgqueue runs on from here on (a pytest run imports this with the plugin, first).
watch_connections()


def _queue_names(queues: Sequence[str] | str | None) -> list[str] | None:
    """``queues`` as valid queue names; a string is split at commas, as a worker's is."""
    if queues is None:
        return None
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    if not names:  # as a worker refuses it: draining nothing is never what a test meant
        raise ValueError("drain needs at least one queue: leave queues out (None) for all")
    return [check_queue(name.strip() if isinstance(name, str) else name) for name in names]


def _check_bounds(max_rounds: int, max_jobs: int) -> None:
    check_count(max_rounds, "max_rounds", 1)
    check_count(max_jobs, "max_jobs", 1)


async def _checked(conn: psycopg.AsyncConnection[Any]) -> None:
    async with conn.cursor() as cur:
        problem = schema_problem(*await aschema_state(lambda query: _store.arun(cur, query)))
    if problem:
        raise SchemaError(problem)


async def _waiting_at_most(cur: psycopg.AsyncCursor[Any], query: _store.Query[Any]) -> None:
    """Run ``query`` in a transaction of its own (a savepoint in an open one), waiting at most
    ``LOCK_WAIT`` for each job row another transaction holds; then raise, saying whose."""
    try:
        async with cur.connection.transaction():
            await _store.arun(cur, _store.locks_wait_at_most(LOCK_WAIT))
            await _store.arun(cur, query)
    except psycopg.errors.LockNotAvailable:
        raise RuntimeError(await _held_by(cur)) from None


def _sessions(rows: list[tuple[Any, ...]]) -> str:
    return "; ".join(
        f"pid {pid} ({name or 'no application_name'}, {state}, last statement: {text!r})"
        for pid, name, state, text in rows
    )


async def _held_by(cur: psycopg.AsyncCursor[Any]) -> str:
    async with cur.connection.transaction(force_rollback=True):
        named = _sessions(await _store.arun(cur, _store.locks_holders()))
    return (
        f"drain() waited {LOCK_WAIT:g} s for a job row locked by another transaction"
        f"{': ' + named if named else ''}. If it is your test's own connection, commit or roll "
        "back its transaction before calling drain()."
    )


def _stepping_aside(app: PgQueue, unrun: Callable[[], None]) -> PgQueue:
    """A copy of ``app`` for one round's worker, in which a job of a task ``app`` does not
    register steps aside (see ``STEP_ASIDE``), calling ``unrun``."""
    aside = PgQueue()

    @aside.task(name="pgqueue.testing.step_aside")
    async def step_aside(*args: Any, **kwargs: Any) -> None:
        unrun()
        raise Retry(STEP_ASIDE)

    drained = copy.copy(app)
    drained.get_task = lambda name: app.get_task(name) or step_aside  # type: ignore[method-assign]
    drained.hooks = copy.copy(app.hooks)
    drained.hooks.middleware = [_own_jobs_only(app, mw) for mw in app.hooks.middleware]
    return drained


def _own_jobs_only(app: PgQueue, middleware: Middleware) -> Middleware:
    """``middleware``, passed over for a stand-in attempt: the job is not ``app``'s, and a
    middleware counting, timing or logging ``app``'s attempts would count one it never ran.
    Not awaited here, but by the worker, which names ``middleware`` if it returned no
    awaitable (Python's own error, awaited here, named none)."""

    @functools.wraps(middleware)
    def own(job: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        if app.get_task(job.task) is None:
            return call_next()
        return middleware(job, call_next)

    return own


@dataclass
class _Retries:
    """How many times each job raised :class:`Retry` in one drain: ``limit`` times ends the
    drain, the job left queued. Retry gives its attempt back, so ``max_attempts`` never ends
    a task that always raises it: with no delay, one round's burst worker ran it forever."""

    limit: int
    counts: Counter[int] = field(default_factory=Counter)

    def enough(self) -> bool:
        """Whether a job has raised Retry ``limit`` times."""
        return any(n >= self.limit for n in self.counts.values())

    def counting(self, stop: Callable[[], None]) -> Middleware:
        """A middleware counting the Retry of each attempt, calling ``stop`` at the limit."""

        async def count(job: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
            try:
                return await call_next()
            except BaseException as exc:
                if asks_again(exc):  # as the worker reads it, a TaskGroup's too
                    self.counts[job.id] += 1
                    if self.counts[job.id] >= self.limit:
                        stop()
                raise

        return count


@dataclass
class _Attempts:
    """The attempts of ``app``'s jobs in one drain, by task: past ``limit`` of them, the drain
    stops, and the job claimed beyond it gives its attempt back, unrun. A task enqueuing a new
    job of its own at every run (due at once) kept one round's burst worker going for ever: no
    bound on a job's Retry sees a new job."""

    limit: int
    counts: Counter[str] = field(default_factory=Counter)
    refused: int = 0

    def counting(self, stop: Callable[[], None], unrun: Callable[[], None]) -> Middleware:
        """A middleware counting each attempt, refusing those past the limit (``stop``, and
        ``unrun`` for each attempt refused)."""

        async def count(job: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
            if self.counts.total() >= self.limit:
                self.refused += 1
                stop()
                unrun()
                raise Retry()
            self.counts[job.task] += 1
            return await call_next()

        return count

    def warning(self) -> str | None:
        """What to say when the limit stopped the drain: the task run most often."""
        if not self.refused:
            return None
        [(task, runs)] = self.counts.most_common(1)
        return (
            f"drain() stopped after max_jobs={self.limit} attempts with jobs still queued, "
            f"{runs} of them of task {task!r}: does it enqueue a new job at every run? Drain "
            "fewer queues, or pass a larger max_jobs if that many were meant"
        )


async def _unseen_writes(cur: psycopg.AsyncCursor[Any]) -> str | None:
    """A warning when another session of this process idles in a transaction that wrote jobs:
    most likely the test's own connection, whose enqueued jobs no drain can see until it
    commits. Only connections pgqueue ran on (enqueues, Django's and SQLAlchemy's too) are
    named: a transaction of another process, another pytest-xdist worker's test on a shared
    database, is no concern of the caller's, and the warning would fail its test under
    ``filterwarnings = error``; jobs written with SQL of one's own go unnamed."""
    writers = await _store.arun(cur, _store.locks_writers_idle())
    if writers:
        own = watched_backends()
        writers = [row for row in writers if row[0] in own]
    if not writers:
        return None
    return (
        f"drain() found no job to run, and {_sessions(writers)} has not committed the jobs its "
        "transaction wrote, which no worker can see: commit before calling drain() if those "
        "are the jobs you meant"
    )


def _warn(text: str | None) -> None:
    """Warn of ``text``, if any, at the line that called drain() or adrain(): raised inside
    the event loop, the warning named a line of asyncio's, and the caller's filters missed it."""
    if text is not None:
        warnings.warn(text, RuntimeWarning, stacklevel=_callers_level())


def _callers_level() -> int:
    """The ``stacklevel``, for :func:`_warn`, of the first line past drain() or adrain() that
    is not asyncio's: an adrain() run as a task of its own (``asyncio.run(adrain(...))``) is
    called by the event loop, and the line that started the loop is the one to name."""
    level, frame = 3, sys._getframe(3)  # 0 is this function, 1 _warn, 2 drain or adrain
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_ASYNCIO):
        level, frame = level + 1, frame.f_back
    return level


async def _drain(
    app: PgQueue,
    dsn: str | None,
    queues: Sequence[str] | None,
    with_scheduled: bool,
    max_rounds: int,
    max_jobs: int,
) -> tuple[dict[str, int], str | None]:
    """The rounds of a drain: the counts, and a warning: that the first round found cause for,
    or that ``max_jobs`` stopped it."""
    names = _queue_names(queues)
    _check_bounds(max_rounds, max_jobs)
    dsn = dsn or app._configured_dsn("pass drain(app, dsn=...) or PgQueue(dsn=...)")
    totals = dict.fromkeys(OUTCOMES, 0)
    unseen: list[str] = []
    bounds = _Retries(max_rounds), _Attempts(max_jobs)
    for done in range(max_rounds):
        stats = await _round(app, dsn, names, with_scheduled, None if done else unseen, bounds)
        if stats is None:
            break
        for outcome in OUTCOMES:
            totals[outcome] += getattr(stats, outcome)
        if bounds[0].enough() or bounds[1].refused:
            break
    return totals, next(iter(unseen), None) or bounds[1].warning()


async def _round(
    app: PgQueue,
    dsn: str,
    queues: list[str] | None,
    with_scheduled: bool,
    unseen: list[str] | None,
    bounds: tuple[_Retries, _Attempts],
) -> WorkerStats | None:
    """One burst worker over the queues holding jobs of ``app``'s tasks, while the queued jobs
    of other tasks (another app's, on a shared database) are row-locked so that it cannot
    claim them; ``None`` when no job of ``app`` is waiting (due now, without
    ``with_scheduled``), after adding to ``unseen`` (given to the first round) why none might
    be."""
    tasks = list(app.tasks)
    conn = await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name="pgqueue drain"
    )
    async with conn, conn.cursor() as cur:
        await _checked(conn)
        if with_scheduled:
            await _waiting_at_most(cur, _store.jobs_run_now(tasks, queues))
        # Without the scheduled jobs, the rounds go on while jobs are due: one a round's task
        # enqueued into a queue its worker did not take (the first round's only) was left.
        waiting = await _store.arun(cur, _store.jobs_queues_waiting(tasks, not with_scheduled))
        waiting = waiting if queues is None else [q for q in waiting if q in queues]
        if not waiting:
            if unseen is not None and (note := await _unseen_writes(cur)):
                unseen.append(note)
            return None
        # A row held by another transaction is stepped over by every claim, and the burst
        # worker ends beside it (burst_left_locked): the job would be left undrained, unsaid.
        await _waiting_at_most(cur, _store.jobs_probe(tasks, waiting))
        async with conn.transaction():
            await _store.arun(cur, _store.drains_lock())  # waits for other drains' rounds
            await _waiting_at_most(cur, _store.jobs_hold_others(tasks))

            def unrun() -> None:
                """Take back, before it is counted, the Retry() of an attempt that is no job's
                own (a stand-in's, one refused past max_jobs): a burst worker's stats are read
                once it has stopped, its worker_stopped line by then written."""
                worker.stats.rescheduled -= 1

            drained = _stepping_aside(app, unrun)
            # No scheduler: the ticks it fires (missed ones, one falling due meanwhile) would
            # make what a drain runs depend on the clock.
            worker = drained.worker(
                queues=waiting, dsn=dsn, burst=True, listen=False, poll_interval=0.01,
                scheduler=False,
            )  # fmt: skip
            # Outermost: they see what the worker sees; a refused attempt is no job's Retry.
            drained.hooks.middleware[:0] = [
                _own_jobs_only(app, bounds[1].counting(worker.stop, unrun)),
                _own_jobs_only(app, bounds[0].counting(worker.stop)),
            ]
            await worker.run()
    return worker.stats


async def adrain(
    app: PgQueue,
    *,
    dsn: str | None = None,
    queues: Sequence[str] | None = None,
    with_scheduled: bool = True,
    max_rounds: int = 20,
    max_jobs: int = 10_000,
) -> dict[str, int]:
    """Async twin of :func:`drain`."""
    totals, unseen = await _drain(app, dsn, queues, with_scheduled, max_rounds, max_jobs)
    _warn(unseen)
    return totals


def drain(
    app: PgQueue,
    *,
    dsn: str | None = None,
    queues: Sequence[str] | None = None,
    with_scheduled: bool = True,
    max_rounds: int = 20,
    max_jobs: int = 10_000,
) -> dict[str, int]:
    """Run every committed queued job of ``app``'s tasks (all queues, or ``queues``) until none
    is left; the jobs of other tasks (another app's, on a shared database) stay queued.

    With ``with_scheduled``, jobs scheduled for later, and retries waiting out their backoff,
    run now too (of ``queues`` only, when given); each round is a burst worker, at most
    ``max_rounds`` of them; a job that raises :class:`~pgqueue.Retry` ``max_rounds`` times
    ends the drain, and stays queued. At most ``max_jobs`` attempts run: past them the drain
    stops, with a ``RuntimeWarning`` naming the task run most often (one that enqueues a job of
    its own at every run would never let it end). Returns counts of
    ``succeeded``, ``failed``, ``retried`` (failed, to be retried), ``rescheduled`` (raised
    :class:`~pgqueue.Retry`) and ``cancelled`` attempts. Call :func:`adrain`
    from async code.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("drain() cannot run inside an event loop: await adrain() instead")
    totals, unseen = asyncio.run(_drain(app, dsn, queues, with_scheduled, max_rounds, max_jobs))
    _warn(unseen)
    return totals
