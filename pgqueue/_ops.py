"""Inspecting and steering jobs: the functions behind ``app.get_job``, ``pgqueue jobs ...``.

Each takes the caller's connection (psycopg sync, or anything an adapter accepts) and never
commits, like ``enqueue``; the CLI opens a connection, calls one of these, and commits.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import _store
from pgqueue._connections import (
    AsyncConnection,
    SyncConnection,
    async_cursor,
    normalize_dsn,
    sync_cursor,
)
from pgqueue._errors import ConfigurationError, JobStateError, PgQueueError, first_line
from pgqueue._job import TERMINAL_STATES, Job, QueueStats, WorkerInfo
from pgqueue._options import (
    BIGINT_MAX,
    DECIMAL_NUMBER,
    RUN_AT_MAX,
    RUN_AT_MIN,
    check_count,
    check_job_id,
    check_queue,
    check_run_at,
    check_task_name,
)
from pgqueue._retention import check_age
from pgqueue._retry import MAX_DELAY
from pgqueue._schema import (
    arequire_schema_once,
    require_schema_once,
    schema_problem,
    schema_state,
)

if TYPE_CHECKING:
    from pgqueue._app import PgQueue

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
# How long a health check's statement may wait for a lock, and run, in seconds: with the 5 s
# to connect, it answers within the 10 s a probe is given in docs/operations.md. A lock waited
# for ends on the shorter one, whose error says so.
HEALTH_LOCK_TIMEOUT, HEALTH_TIMEOUT = 3.0, 4.0


@contextmanager
def _decodable(which: str) -> Iterator[None]:
    """Turn the RecursionError of a JSON value nested deeper than Python decodes (SQL can
    store deeper ones; Python's decoder stops near 1,000 levels) into an error that says so."""
    try:
        yield
    except RecursionError:
        raise PgQueueError(
            f"{which} has a JSON value (args, kwargs, meta or result) nested too deeply for "
            "Python to decode (more than about 1,000 levels); read it with SQL"
        ) from None


def _dates_readable(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Refuse, before reading, a connection whose timestamps psycopg could not read (its
    error named no way out)."""
    if not _store.dates_iso(conn):
        style = conn.info.parameter_status("DateStyle")
        raise ConfigurationError(
            f"this connection's DateStyle is {style!r}: psycopg reads timestamps only in the ISO"
            " style; run SET DateStyle = ISO on it (or ALTER ROLE ... SET DateStyle = ISO)"
        )


def get_job(conn: SyncConnection, job_id: int) -> Job | None:
    """The job ``job_id``, or ``None`` when there is none (never enqueued, or pruned)."""
    return read_job(conn, job_id, check_schema=True)


def read_job(conn: SyncConnection, job_id: int, check_schema: bool = False) -> Job | None:
    """:func:`get_job`, the schema's revision checked only with ``check_schema``: not for a
    job this process has just enqueued (an enqueue checks none), runs (its worker checked
    at its start) or waits for (as the shared waiter, which reads none), on a connection that
    may be new for each."""
    query = _store.jobs_read(check_job_id(job_id))
    with sync_cursor(conn) as cur, _decodable(f"job {job_id}"):
        if check_schema:
            require_schema_once(cur)
        _dates_readable(cur.connection)
        row = _store.run(cur, query)
    return Job(*row) if row else None


async def aget_job(conn: AsyncConnection, job_id: int) -> Job | None:
    """Async twin of :func:`get_job`."""
    return await aread_job(conn, job_id, check_schema=True)


async def aread_job(conn: AsyncConnection, job_id: int, check_schema: bool = False) -> Job | None:
    """Async twin of :func:`read_job`."""
    query = _store.jobs_read(check_job_id(job_id))
    async with async_cursor(conn) as cur:
        if check_schema:
            await arequire_schema_once(cur)
        _dates_readable(cur.connection)
        with _decodable(f"job {job_id}"):
            row = await _store.arun(cur, query)
    return Job(*row) if row else None


def list_jobs(
    conn: SyncConnection,
    *,
    state: str | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int = 50,
) -> list[Job]:
    """The newest ``limit`` jobs matching every filter given."""
    if state is not None and state not in STATES:
        raise ValueError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    if queue is not None:
        check_queue(queue)
    if task is not None:
        check_task_name(task)
    if limit is not None:  # None: no limit
        check_count(limit, "limit", 0, BIGINT_MAX)
    with sync_cursor(conn) as cur, _decodable("a job listed"):
        require_schema_once(cur)
        _dates_readable(cur.connection)
        rows = _store.run(cur, _store.jobs_list(state, queue, task, limit))
    return [Job(*row) for row in rows]


def retry_job(conn: SyncConnection, job_id: int) -> None:
    """Put a failed or cancelled job back in its queue; raises :class:`JobStateError` if not."""
    job_id = check_job_id(job_id)
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        # Refused, yet failed or cancelled: its key is held, or it finished after the retry
        # looked (it was running then), and the second try requeues it.
        refused = _retry_once(cur, job_id) and _retry_once(cur, job_id)
        if refused is None:
            return
        key = refused.unique_key
        holder = None if key is None else _store.run(cur, _store.jobs_find_unique(key))
    raise JobStateError(_why_not_retried(job_id, refused, holder))


def _retry_once(cur: psycopg.Cursor[Any], job_id: int) -> Job | None:
    """``None`` once the job is requeued; the job if it is failed or cancelled all the same;
    else :class:`JobStateError` saying why it cannot be retried."""
    if _store.run(cur, _store.jobs_retry([job_id])):
        return None
    _dates_readable(cur.connection)
    with _decodable(f"job {job_id}"):
        row = _store.run(cur, _store.jobs_read(job_id))
    job = Job(*row) if row else None
    if job is None or job.state not in ("failed", "cancelled"):
        raise JobStateError(_why_not_retried(job_id, job))
    return job


def _why_not_retried(job_id: int, job: Job | None, holder: int | None = None) -> str:
    if job is None:
        return f"there is no job {job_id}"
    if job.state not in ("failed", "cancelled"):
        return f"job {job_id} is {job.state}: only failed or cancelled jobs can be retried"
    if job.unique_key is None:  # only a row written by hand into both tables
        return f"job {job_id} is {job.state}, and an active job has its id: it cannot be retried"
    held_by = "an active job" if holder is None else f"active job {holder}"
    return (
        f"job {job_id}'s unique key {job.unique_key!r} is held by {held_by}: retry it once"
        " that job has finished"
    )


def retry_failed(conn: SyncConnection, task: str | None = None, batch: int | None = None) -> int:
    """Put every failed job (of ``task``, if given) back in its queue; returns how many.

    With ``batch``, in batches of that many jobs, in id order (see
    :func:`retry_failed_batches`): on an autocommit connection each batch commits on its own.
    """
    return sum(retry_failed_batches(conn, task, batch))


def retry_failed_batches(
    conn: SyncConnection, task: str | None = None, batch: int | None = 5000
) -> Iterator[int]:
    """Requeue the failed jobs (of ``task``) ``batch`` at a time (``None``: all in one
    statement), in id order, yielding how many each batch requeued. On an autocommit
    connection each batch commits on its own: stopped between two, the jobs requeued stay
    requeued, and a new run takes the rest."""
    if task is not None:
        check_task_name(task)
    if batch is not None:
        check_count(batch, "batch", 1, BIGINT_MAX)
    after: int | None = 0
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        while after is not None:
            count, after = _store.run(cur, _store.jobs_retry_failed(task, after, batch))
            if after is not None:
                yield count
            if batch is None:
                return


def count_retryable(conn: SyncConnection, task: str | None = None) -> int:
    """How many failed jobs (of ``task``) :func:`retry_failed` would requeue now: those whose
    unique key no queued or running job holds, one per key; requeues none
    (``pgqueue jobs retry --failed --dry-run``)."""
    if task is not None:
        check_task_name(task)
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        return _store.run(cur, _store.jobs_retry_failed_count(task))


def cancel_job(conn: SyncConnection, job_id: int) -> str:
    """Cancel a job: returns ``"cancelled"`` (it was queued) or ``"requested"`` (running).

    A running job is stopped by its worker at its next heartbeat. Raises
    :class:`JobStateError` when the job does not exist or has already finished.
    """
    job_id = check_job_id(job_id)
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        outcome = _store.run(cur, _store.jobs_cancel_call(job_id))
    return _cancel_outcome(job_id, outcome)


async def acancel_job(conn: AsyncConnection, job_id: int) -> str:
    """Async twin of :func:`cancel_job`."""
    job_id = check_job_id(job_id)
    async with async_cursor(conn) as cur:
        await arequire_schema_once(cur)
        outcome = await _store.arun(cur, _store.jobs_cancel_call(job_id))
    return _cancel_outcome(job_id, outcome)


def _cancel_outcome(job_id: int, outcome: str | None) -> str:
    if outcome is None:
        raise JobStateError(f"there is no job {job_id}")
    if outcome.startswith("already "):
        raise JobStateError(f"job {job_id} has already finished: it is {outcome[8:]}")
    return outcome


# How many of the history's pages `queue_stats(exact=False)` reads (of 8 kB: about 16 MB, and
# some 60,000 jobs): a history up to this size is counted exactly, a bigger one estimated.
SAMPLE_PAGES = 2000


def queue_stats(
    conn: SyncConnection, exact: bool = True, sample_pages: int = SAMPLE_PAGES
) -> list[QueueStats]:
    """One :class:`QueueStats` per queue that has jobs, by name.

    ``exact=False`` reads no more than ``sample_pages`` pages of the finished jobs' history:
    the active counts, the oldest runnable job and the jobs finished in the last five minutes
    stay exact; the finished counts of a bigger history are estimated from a sample of that
    many pages (``estimated`` is true), and a queue whose only jobs are finished ones none of
    the sample holds is left out. Not the failed ones: read on their index, the newest
    50,000 at most, they are counted exactly up to that many, never estimated below it."""
    check_count(sample_pages, "sample_pages", 1)
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        if exact:
            return [QueueStats(*row) for row in _store.run(cur, _store.queues_stats())]
        pages = _store.run(cur, _store.jobs_finished_pages())
        percent = min(100.0, 100.0 * sample_pages / pages) if pages else 100.0
        return [QueueStats(*row) for row in _store.run(cur, _store.queues_stats_sampled(percent))]


def live_workers(conn: SyncConnection, name: str | None = None) -> list[WorkerInfo]:
    """Workers seen within their last three heartbeats (only ``name``, if given)."""
    if name is not None:
        check_task_name(name, "worker name")
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        return _live_workers(cur, name)


def _live_workers(cur: psycopg.Cursor[Any], name: str | None) -> list[WorkerInfo]:
    """:func:`live_workers` read on ``cur``, its schema known to be one this code runs on."""
    _dates_readable(cur.connection)
    return [WorkerInfo(*row) for row in _store.run(cur, _store.workers_list(name))]


def prune(
    conn: SyncConnection,
    older_than: float | timedelta,
    states: Iterable[str] = TERMINAL_STATES,
    batch: int = 1000,
) -> int:
    """Delete finished jobs of ``states`` finished more than ``older_than`` ago; returns how many.

    Works in batches of ``batch`` rows per state. On an autocommit connection each batch
    commits on its own, so a big prune never holds many locks at once. Ages count from the
    database's clock when the call starts: jobs reaching their age meanwhile are left.
    """
    if isinstance(states, str):  # would be read as its letters
        raise ValueError(f"states must be a list of states, such as [{states!r}]")
    seconds = check_age(older_than, "older_than")
    return prune_by_state(conn, dict.fromkeys(sorted(states), seconds), batch)


def prune_by_state(conn: SyncConnection, ages: Mapping[str, float], batch: int = 1000) -> int:
    """Like :func:`prune`, with an age in seconds per state."""
    return sum(prune_batches(conn, ages, batch))


def prune_batches(
    conn: SyncConnection, ages: Mapping[str, float], batch: int = 1000
) -> Iterator[int]:
    """:func:`prune_by_state` a batch at a time, yielding how many jobs each deleted (on an
    autocommit connection, each batch is committed by then)."""
    ages = _checked_ages(ages)
    check_count(batch, "batch", 1, BIGINT_MAX)
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        # One instant for every batch: measured from each batch's own now(), jobs reaching
        # their age in between kept a prune of a busy queue going for ever.
        as_of = _store.run(cur, _store.clock_now_text())
        after: _store.Pruned = {}  # where each state's next batch reads on from
        while deleted := _store.run(cur, _store.jobs_prune(dict(ages), batch, as_of, after)):
            after |= deleted
            yield sum(count for count, _ in deleted.values())


def count_prunable(conn: SyncConnection, ages: Mapping[str, float]) -> dict[str, int]:
    """How many finished jobs :func:`prune_by_state` with ``ages`` would delete now, per
    state; deletes nothing (``pgqueue prune --dry-run``)."""
    ages = _checked_ages(ages)
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        return _store.run(cur, _store.jobs_prune_count(ages))


def _checked_ages(ages: Mapping[str, float]) -> dict[str, float]:
    """``ages`` in seconds per finished state, or ``ValueError`` naming what is wrong."""
    unknown = set(ages) - TERMINAL_STATES
    if unknown:
        raise ValueError(f"only finished jobs are pruned, not {', '.join(sorted(unknown))}")
    return {state: check_age(age, f"the age of {state!r} jobs") for state, age in ages.items()}


def health_problem(dsn: str, worker: str | None = None) -> str | None:
    """``None`` when the database answers, the schema is current and ``worker`` (if given)
    is heart-beating; else a one-line explanation. For container health probes: connecting
    and each statement give up after a few seconds (see ``HEALTH_TIMEOUT``), with an answer."""
    with psycopg.connect(normalize_dsn(dsn), autocommit=True, connect_timeout=5) as conn:
        _store.iso_dates(conn)
        try:
            with conn.transaction(), conn.cursor() as cur:
                _store.run(cur, _store.timeouts_set_local(HEALTH_LOCK_TIMEOUT, HEALTH_TIMEOUT))
                return _health_problem(conn, worker)
        except psycopg.errors.LockNotAvailable as exc:
            return _no_answer(HEALTH_LOCK_TIMEOUT, exc)
        except psycopg.errors.QueryCanceled as exc:
            return _no_answer(HEALTH_TIMEOUT, exc)


def _no_answer(seconds: float, exc: psycopg.Error) -> str:
    return (
        f"no answer within {seconds:g} s ({first_line(exc)}): a lock held on a pgqueue table"
        " (a migration, VACUUM FULL, LOCK TABLE) or a busy server"
    )


def _health_problem(conn: psycopg.Connection[Any], worker: str | None) -> str | None:
    problem = schema_problem(*schema_state(conn))
    if problem or worker is None:
        return problem
    check_task_name(worker, "worker name")
    with conn.cursor() as cur:  # the schema was read just now: not read again
        if _live_workers(cur, worker):
            return None
    return f"worker {worker!r} has not sent a heartbeat recently (or is not running)"


def as_dict(item: Any) -> dict[str, Any]:
    """A job, queue or worker as a plain dict (for JSON output)."""
    return {name: getattr(item, name) for name in item.__dataclass_fields__}


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_USE = "use seconds, or a number with a unit s, m, h, d or w (e.g. 90s, 15m, 12h, 7d, 2w)"


def parse_duration(text: str, *, unit_required: bool = False) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` → seconds; with
    ``unit_required``, a bare number (seconds) is refused, for an age whose mistake, days
    meant, cannot be undone."""
    value = text.strip().lower()  # whitespace around it, as float() takes: "7d\n", say
    unit = _UNITS.get(value[-1:])
    number = value[:-1] if unit else value
    if not DECIMAL_NUMBER.fullmatch(number):  # float() would read "1_0", "+5" and "١٢" too
        raise ValueError(f"invalid duration {text!r}: {_USE}")
    seconds = float(number) * (unit or 1.0)
    if not 0 <= seconds <= MAX_DELAY:
        raise ValueError(f"invalid duration {text!r}: must be from 0 to 1000 years")
    if unit is None and unit_required:
        raise ValueError(
            f"invalid duration {text!r}: write its unit, as {number}s for seconds or {number}d"
            " for days (s, m, h, d or w): what prune deletes is gone for good"
        )
    return seconds


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset (``2030-01-01T09:00:00+01:00``, ``...T08:00Z``)
    → an aware datetime; else ``ValueError``. One without an offset is refused, as ``run_at``
    is: which zone it meant is not to be guessed. RFC 3339's lower-case ``t`` and ``z`` are
    read as their capitals, which are all Python reads."""
    try:
        moment = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise ValueError(f"invalid time {text!r}: {_USE_TIME}") from None
    try:
        return check_run_at(moment)
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: must be from {RUN_AT_MIN.isoformat()} to"
            f" {RUN_AT_MAX.isoformat()}"
        ) from None


_USE_TIME = "use ISO 8601 with a UTC offset, e.g. 2030-01-01T09:00:00+01:00 or 2030-01-01T08:00Z"


def decode_json(text: str, kind: type[Any]) -> Any:
    """``text``, JSON of a ``kind`` (list: an array, dict: an object), decoded; else
    ``ValueError`` saying what is wrong with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(
            "nested too deeply for Python to decode (more than about 1,000 levels)"
        ) from None
    if not isinstance(value, kind):
        expected = "an array" if kind is list else "an object"
        raise ValueError(f"must be {expected} in JSON, got {reprlib.repr(text)}")
    return value


def enqueue_by_name(
    conn: SyncConnection, app: PgQueue, task: str, args: list[Any], kwargs: dict[str, Any],
    **options: Any,
) -> int:  # fmt: skip
    """Enqueue task ``task`` by name with ``options`` (queue, priority, delay...)."""
    options = {k: v for k, v in options.items() if v is not None}
    return app.using(task, **options).enqueue(conn, *args, **kwargs)
