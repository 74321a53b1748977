"""Periodic tasks: a task plus a cron schedule, registered with ``@app.periodic(...)``.

The scheduler (``pgqueue._worker._scheduler``) turns their ticks into jobs; this module holds
what a schedule is, how it is declared, and what ``pgqueue cron list`` reports.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import _json, _store
from pgqueue._connections import normalize_dsn
from pgqueue._cron import CronSpec, next_tick
from pgqueue._options import MAX_NAME_LENGTH, check_given_name, check_queue
from pgqueue._retry import is_number, shown
from pgqueue._task import Task

if TYPE_CHECKING:
    from pgqueue._app import PgQueue

DEFAULT_CATCH_UP = timedelta(minutes=10)
"""Missed ticks younger than this are still enqueued after downtime; older ones are skipped."""

MAX_CATCH_UP = timedelta(days=7)

# The unique key of the jobs of a schedule that must not overlap: this and its name.
OVERLAP_KEY_PREFIX = "periodic:"

# Tick rows outlive the catch-up window by this much before pruning, so that a scheduler
# stalled for less than that cannot find a tick it may still fire already forgotten.
PRUNE_GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Periodic:
    """A task enqueued on every tick of a cron schedule. See ``@app.periodic``."""

    name: str
    task: Task[..., Any]
    cron: CronSpec
    kwargs: Mapping[str, Any]
    queue: str
    catch_up: timedelta
    overlap: bool = True
    coalesce: bool = False

    def __repr__(self) -> str:
        return f"<pgqueue.Periodic {self.name!r} {self.cron}>"

    @property
    def keep_seconds(self) -> float:
        """How long this schedule's tick rows are kept (and the oldest tick it may still fire)."""
        return (self.catch_up + PRUNE_GRACE).total_seconds()

    def tick_job(self) -> _store.TickJob:
        """The job each tick creates (the tick itself is added by the store)."""
        o = self.task.options
        return _store.TickJob(
            name=self.name, queue=self.queue, task=self.task.name,
            kwargs=_json.dumps(dict(self.kwargs)), priority=o.priority,
            max_attempts=o.max_attempts, timeout=o.timeout, meta=_json.dumps(o.meta or {}),
            unique_key=None if self.overlap else OVERLAP_KEY_PREFIX + self.name,
        )  # fmt: skip


def check_catch_up(catch_up: float | timedelta) -> timedelta:
    """``catch_up`` as a timedelta between 1 second and 7 days, else ``ValueError``."""
    if not (is_number(catch_up) or isinstance(catch_up, timedelta)):
        raise ValueError(f"catch_up must be seconds or a timedelta, got {catch_up!r}")
    seconds = catch_up.total_seconds() if isinstance(catch_up, timedelta) else catch_up
    # NaN fails the comparison too, so timedelta() never sees NaN or infinity, which it
    # refuses with errors of its own ("cannot convert float NaN to integer").
    if not 1 <= seconds <= MAX_CATCH_UP.total_seconds():
        raise ValueError(f"catch_up must be between 1 second and 7 days, got {shown(catch_up)}")
    return catch_up if isinstance(catch_up, timedelta) else timedelta(seconds=catch_up)


def _check_kwargs(task: Task[..., Any], kwargs: Mapping[str, Any]) -> None:
    try:
        _json.dumps_arguments(task.name, (), kwargs, task.app.max_payload_bytes)
    except TypeError as exc:  # bad kwargs of a schedule are a ValueError, as documented
        raise ValueError(str(exc)) from None
    if task.fn is not None:
        try:
            inspect.signature(task.fn).bind(**kwargs)
        except TypeError as exc:
            raise ValueError(
                f"kwargs {dict(kwargs)!r} do not fit task {task.name!r}: {exc}"
            ) from None


def decorator(
    app: PgQueue,
    expression: str,
    *,
    timezone: str,
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
    name: str | None,
    catch_up: float | timedelta,
    overlap: bool = True,
    coalesce: bool = False,
) -> Callable[[Any], Task[..., Any]]:
    """Validate a schedule now; the returned decorator registers the task and the schedule."""
    cron = CronSpec(expression, timezone)
    window = check_catch_up(catch_up)
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"kwargs must be a mapping of argument names to values, got {kwargs!r}")
    if queue is not None:
        check_queue(queue)
    if name is not None:
        check_given_name(name, "schedule name")
    for option, value in (("overlap", overlap), ("coalesce", coalesce)):
        if not isinstance(value, bool):
            raise ValueError(f"{option} must be True or False, got {value!r}")

    def register(target: Callable[..., Any] | Task[..., Any]) -> Task[..., Any]:
        if isinstance(target, Task) and target.app is not app:
            raise ValueError(f"task {target.name!r} is registered with another app")
        task = target if isinstance(target, Task) else app.task(queue=queue)(target)
        periodic = Periodic(
            name or task.name, task, cron, dict(kwargs or {}), queue or task.options.queue,
            window, overlap, coalesce,
        )  # fmt: skip
        _check_kwargs(task, periodic.kwargs)
        _check_overlap_key(periodic)
        _add(app, periodic)
        return task

    return register


def _check_overlap_key(periodic: Periodic) -> None:
    if not periodic.overlap and len(OVERLAP_KEY_PREFIX + periodic.name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"schedule name {periodic.name!r} is too long for overlap=False: its jobs' unique"
            f" key, {OVERLAP_KEY_PREFIX!r} and the name, takes 1-{MAX_NAME_LENGTH} characters"
        )


def _settings(p: Periodic) -> tuple[Any, ...]:
    return p.cron, p.task.fn, dict(p.kwargs), p.queue, p.catch_up, p.overlap, p.coalesce


def _add(app: PgQueue, periodic: Periodic) -> None:
    known = app.periodics.get(periodic.name)
    # Anything that changes the jobs counts: the same cron with other kwargs replaced silently.
    if known is not None and _settings(known) != _settings(periodic):
        raise ValueError(
            f"a different schedule is already registered as {periodic.name!r}: pass name=..."
        )
    app.periodics[periodic.name] = periodic


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """One line of ``pgqueue cron list``: a schedule, its last tick, its next tick, and its
    options ``coalesce``, ``overlap`` and ``catch_up``: ``None`` where unknown (a schedule
    the code does not define, or a status built without them)."""

    name: str
    schedule: str
    last_tick: datetime | None
    next_tick: datetime | None
    in_code: bool = True
    coalesce: bool | None = None
    overlap: bool | None = None
    catch_up: timedelta | None = None


def cron_list(app: PgQueue, dsn: str | None = None) -> list[ScheduleStatus]:
    """Every schedule of ``app`` with its last tick (from the database) and its next tick.

    Names that have ticks in the database but no schedule in ``app`` come last, with
    ``in_code=False``: they no longer fire. A schedule whose ticks were all pruned (by code
    that does not know it) shows its watermark, the latest tick pruned, where its scheduler
    goes on from.
    """
    dsn = normalize_dsn(dsn) if dsn else app.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        _store.iso_dates(conn)
        return cron_list_on(app, conn)


def cron_list_on(app: PgQueue, conn: psycopg.Connection[Any]) -> list[ScheduleStatus]:
    """:func:`cron_list`, read on ``conn`` (the CLI's, which checked the schema on it)."""
    with conn.cursor() as cur:
        now = _store.run(cur, _store.clock_now())
        last = _store.run(cur, _store.ticks_last())
        pruned = [name for name in app.periodics if name not in last]
        marks = _store.run(cur, _store.watermarks_get(pruned)) if pruned else {}
    statuses = [
        ScheduleStatus(
            p.name,
            str(p.cron),
            last.get(p.name) or marks.get(p.name),
            next_tick(p.cron, now),
            coalesce=p.coalesce,
            overlap=p.overlap,
            catch_up=p.catch_up,
        )
        for p in sorted(app.periodics.values(), key=lambda p: p.name)
    ]
    gone = sorted(set(last) - set(app.periodics))
    return statuses + [ScheduleStatus(n, "-", last[n], None, in_code=False) for n in gone]


Periodic.__module__ = "pgqueue"
ScheduleStatus.__module__ = "pgqueue"
