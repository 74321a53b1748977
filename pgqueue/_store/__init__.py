"""The store: the only part of pgqueue that runs SQL.

Each function returns a :class:`Query` (statement, parameters, and how to read the rows); the
thin runners :func:`run` and :func:`arun` execute one on a sync or async cursor. The query
builders hold no I/O, so the sync and async paths share them.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, LiteralString, NamedTuple, TypeVar

import psycopg
from psycopg import sql

from pgqueue._store import _queries as q

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """One statement, its bound parameters, and the function that reads its rows; with
    ``binary``, the rows come in binary (:func:`arun`): a worker's claims and acks, whose
    numbers psycopg parses from text otherwise."""

    sql: LiteralString
    params: Sequence[Any] | dict[str, Any] | None
    read: Callable[[list[Row]], T]
    binary: bool = False


# Whether a statement returned rows is read from its result's field count: cur.description
# builds a Column object per field on every access (2.5 µs for one field). On a connection in
# the caller's pipeline (conn.pipeline()) a statement has no result until the pipeline is
# synced: read as no rows, it made an enqueue's id an IndexError, enqueue_many's ids [].


def run(cur: psycopg.Cursor[Any], query: Query[T]) -> T:
    """Execute ``query`` on a sync cursor; never commits."""
    cur.execute(query.sql, query.params, binary=query.binary)
    if (result := cur.pgresult) is None and cur.connection.pgconn.pipeline_status:
        with cur.connection.pipeline() as pipeline:
            pipeline.sync()
        result = cur.pgresult
    return query.read(cur.fetchall() if result is not None and result.nfields else [])


async def arun(cur: psycopg.AsyncCursor[Any], query: Query[T]) -> T:
    """Execute ``query`` on an async cursor; never commits."""
    await cur.execute(query.sql, query.params, binary=query.binary)
    if (result := cur.pgresult) is None and cur.connection.pgconn.pipeline_status:
        async with cur.connection.pipeline() as pipeline:
            await pipeline.sync()
        result = cur.pgresult
    return query.read(await cur.fetchall() if result is not None and result.nfields else [])


def run_sqlalchemy(bind: Any, query: Query[T]) -> T:
    """Execute ``query`` on a sync SQLAlchemy connection (alembic's, even under its async
    template, whose psycopg connection only SQLAlchemy's sync facade can drive); never commits."""
    params = tuple(query.params) if isinstance(query.params, list) else query.params
    result = bind.exec_driver_sql(query.sql, params)
    return query.read([tuple(row) for row in result] if result.returns_rows else [])


@dataclass(frozen=True, slots=True)
class Together(Generic[T]):
    """Two statements run in one transaction (three with ``after``); ``then``'s rows are read.

    ``then`` takes its snapshot once ``first`` has finished, and locks ``first`` takes are
    held until the transaction ends. A ``then`` that is a query is sent with ``first`` in one
    round trip; one built from ``first``'s result costs a round trip of its own. ``after``
    runs last, sees what ``then`` wrote, and goes in the same round trip as ``then``."""

    first: Query[Any]
    then: Query[T] | Callable[[Any], Query[T]]
    after: Query[Any] | None = None


def run_together(conn: psycopg.Connection[Any], together: Together[T]) -> T:
    """Execute ``together`` on a sync connection; commits only if ``conn`` is in autocommit."""
    if isinstance(together.then, Query):
        with conn.cursor() as first, conn.cursor() as then:
            with conn.pipeline():  # one sync: one round trip, one (implicit) transaction
                first.execute(together.first.sql, together.first.params)
                then.execute(together.then.sql, together.then.params)
                if together.after is not None:  # the first cursor's rows are never read
                    first.execute(together.after.sql, together.after.params)
            result = then.pgresult
            return together.then.read(
                then.fetchall() if result is not None and result.nfields else []
            )
    # Outside autocommit, in the caller's transaction: transaction() would commit it.
    with conn.transaction() if conn.autocommit else nullcontext(), conn.cursor() as cur:
        rows = run(cur, together.then(run(cur, together.first)))
        if together.after is not None:
            run(cur, together.after)
        return rows


@dataclass(frozen=True, slots=True)
class RolledBack(Generic[T]):
    """One statement run in a transaction that is then rolled back: its rows, or the error
    the database raises for it, and nothing written."""

    query: Query[T]


async def arun_rolled_back(conn: psycopg.AsyncConnection[Any], rolled: RolledBack[T]) -> T:
    """Execute ``rolled`` on an async connection in a transaction of its own, rolled back."""
    async with conn.transaction(force_rollback=True), conn.cursor() as cur:
        return await arun(cur, rolled.query)


async def arun_together(conn: psycopg.AsyncConnection[Any], together: Together[T]) -> T:
    """Execute ``together`` on an async connection; commits only if ``conn`` is in autocommit."""
    if isinstance(together.then, Query):
        async with conn.cursor() as first, conn.cursor() as then:
            async with conn.pipeline():  # one sync: one round trip, one (implicit) transaction
                await first.execute(together.first.sql, together.first.params)
                await then.execute(together.then.sql, together.then.params)
                if together.after is not None:  # the first cursor's rows are never read
                    await first.execute(together.after.sql, together.after.params)
            result = then.pgresult
            return together.then.read(
                await then.fetchall() if result is not None and result.nfields else []
            )
    async with conn.transaction() if conn.autocommit else nullcontext(), conn.cursor() as cur:
        rows = await arun(cur, together.then(await arun(cur, together.first)))
        if together.after is not None:
            await arun(cur, together.after)
        return rows


def _nothing(rows: list[Row]) -> None:
    return None


def _first_column(rows: list[Row]) -> list[Any]:
    return [r[0] for r in rows]


Pruned = dict[str, tuple[int, str | None]]
"""Per state, the jobs one prune batch deleted and the last ``finished_at`` among them."""


def _one(rows: list[Row]) -> Any:
    return rows[0][0]


def _rows(rows: list[Row]) -> list[Row]:
    return rows


def _first_row(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


class NewJob(NamedTuple):
    """The column values of a job to insert; arguments already encoded as JSON text.

    A named tuple, not a frozen dataclass: one is built per enqueue, and a frozen dataclass's
    eleven ``object.__setattr__`` calls cost 3 µs more."""

    queue: str
    task: str
    args: str
    kwargs: str
    priority: int = 0
    max_attempts: int = 3
    run_at: datetime | None = None
    delay: float | None = None
    timeout: float | None = None
    unique_key: str | None = None
    meta: str = "{}"


def jobs_insert(job: NewJob) -> Query[int]:
    """Insert one job without a unique key; returns its id."""
    if job.run_at is None and not job.delay:
        now = (job.queue, job.task, job.args, job.kwargs, job.priority, job.max_attempts,
               job.timeout, job.meta)  # fmt: skip
        return Query(q.JOBS_INSERT_NOW, now, _one)
    params = (
        job.queue, job.task, job.args, job.kwargs, job.priority, job.max_attempts,
        job.run_at, job.delay or 0.0, job.timeout, job.unique_key, job.meta,
    )  # fmt: skip
    return Query(q.JOBS_INSERT, params, _one)


def jobs_insert_many(
    template: NewJob, args: Sequence[str], kwargs: Sequence[str]
) -> Query[list[int]]:
    """Insert one job per (args, kwargs) pair sharing ``template``'s options; ids in input order."""
    params = (
        template.queue, template.task, template.priority, template.max_attempts,
        template.run_at, template.delay or 0.0, template.timeout, template.meta,
        list(args), list(kwargs),
    )  # fmt: skip
    return Query(q.JOBS_INSERT_MANY, params, lambda rows: sorted(r[0] for r in rows))


PAYLOAD_CHECK = "active_jobs_payload_check"

# The context PostgreSQL gives an error raised by a row of a COPY (English messages only).
_COPY_LINE = re.compile(r"^COPY active_jobs, line (\d+)")


def payload_refused(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is the table refusing a job whose stored arguments are over its limit."""
    diag = exc.diag  # a constraint's name is only unique on its table
    return isinstance(exc, psycopg.errors.CheckViolation) and (
        (diag.schema_name, diag.table_name, diag.constraint_name)
        == ("pgqueue", "active_jobs", PAYLOAD_CHECK)
    )


def copy_row(exc: psycopg.Error) -> int | None:
    """The index of the row of :func:`jobs_copy` that ``exc`` names, if its context says."""
    line = _COPY_LINE.match(exc.diag.context or "")
    return int(line[1]) - 1 if line else None


@dataclass(frozen=True, slots=True)
class ClaimPoint:
    """Where a queue's last claim ended, in claim order (priority descending, then run_at, id).

    The next claim of that queue may resume there instead of at the head of the queue."""

    priority: int
    id: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim's rows (the worker's ``ClaimedJob`` fields, JSON decoded); per queue that
    returned any, the point where its claim ended; and how many entries of the claim index
    it read beyond the rows it took (0 when it did not count, or took no row to carry it);
    whether it carried that count; and how many pages of the claim index it read (0 when
    it did not count), which also holds the entries of jobs not yet due that it stepped over
    (see ``q.JOBS_CLAIM_ONE_SKIP``)."""

    rows: list[Row]
    ends: dict[str, ClaimPoint]
    walked: int = 0
    counted: bool = False
    pages: int = 0


def jobs_claim(
    worker: str,
    wanted: dict[str, int],
    lease: float,
    after: Mapping[str, ClaimPoint] | None = None,
    count: bool = True,
    idle: Mapping[str, float] | None = None,
    skip: bool = False,
    look: bool = False,
    pages: bool = True,
) -> Query[Claim]:
    """Claim up to ``wanted[queue]`` runnable jobs per queue for ``worker``, in claim order.

    ``after`` holds where earlier claims ended: a queue with a point resumes there (taking
    every runnable job of a higher priority first, and reading from the head only to fill
    what lies after the point leaves short); one without is read from its head. A queue in
    ``idle`` as well never reads from the head: it resumes that many seconds of ``run_at``
    before its point, then takes lower priorities, and counts nothing when it is the only
    queue (see ``q.JOBS_CLAIM_AFTER``). Without
    ``count``, a claim of one queue does not count the index entries it read (``walked``
    is then 0): that saves an idle worker 0.03 ms per claim. With ``skip`` and no point, the
    claim reads each priority's due jobs only, stepping over none scheduled for later, and
    counts nothing (see ``q.JOBS_CLAIM_ONE_SKIP``). With ``look`` (and ``count``, no point and
    no ``skip``), a claim that takes nothing still returns its counts (``q.JOBS_CLAIM_LOOK``):
    for a worker without a backlog, which counts about once a second. Without ``pages``, a
    counted claim of one queue counts the entries it read but not the pages (0): counting
    them costs it 0.05 ms (``q.JOBS_CLAIM_ONE_PAGES``)."""
    points = [after.get(queue) for queue in wanted] if after else []
    if len(points) == 1 and (point := points[0]) and idle:
        [(queue, limit)] = wanted.items()
        if queue in idle:  # one idle queue: the statement that costs no more than the head's
            one = {"queue": queue, "limit": limit, "lease": lease, "worker": worker,
                   "priority": point.priority, "id": point.id, "back": idle[queue]}  # fmt: skip
            return _claim(q.JOBS_CLAIM_ONE_AFTER, one)
    if any(points):
        backs = [idle.get(queue, 0.0) for queue in wanted] if idle else [0.0] * len(wanted)
        params = {
            "queues": list(wanted), "limits": list(wanted.values()),
            "lease": lease, "worker": worker,
            "priorities": [p and p.priority for p in points], "ids": [p and p.id for p in points],
            "backs": backs,
        }  # fmt: skip
        return _claim(q.JOBS_CLAIM_AFTER, params)
    if look and count and not skip:
        params = {
            "queues": list(wanted), "limits": list(wanted.values()), "lease": lease,
            "worker": worker,
        }  # fmt: skip
        return _claim(q.JOBS_CLAIM_LOOK, params)
    if len(wanted) == 1:
        [(queue, limit)] = wanted.items()
        one = {"queue": queue, "limit": limit, "lease": lease, "worker": worker}
        if skip:
            return _claim(q.JOBS_CLAIM_ONE_SKIP, one)
        if count:
            return _claim(q.JOBS_CLAIM_ONE_PAGES if pages else q.JOBS_CLAIM_ONE, one)
        return _claim(q.JOBS_CLAIM_ONE_IDLE, one)
    params = {
        "queues": list(wanted), "limits": list(wanted.values()), "lease": lease, "worker": worker,
    }  # fmt: skip
    return _claim(q.JOBS_CLAIM_SKIP if skip else q.JOBS_CLAIM, params)


def _claim(sql: LiteralString, params: dict[str, Any]) -> Query[Claim]:
    # Binary rows: psycopg parses each number of a text row from its digits.
    return Query(sql, params, _claimed, binary=True)


def jobs_claim_probe(queue: str, limit: int) -> Query[tuple[int, int]]:
    """The pages (of the claim index and the table) a claim of ``limit`` jobs of ``queue``
    reads from the head, and those a claim that skips the jobs not yet due reads (see
    ``q.JOBS_CLAIM_PROBE``)."""
    return Query(q.JOBS_CLAIM_PROBE, {"queue": queue, "limit": limit}, _pair)


def jobs_claim_descent() -> Query[int]:
    """The claim-index pages one descent from its root to a leaf reads (0 if the plan did not
    read the claim index), see ``q.JOBS_CLAIM_DESCENT``."""
    return Query(q.JOBS_CLAIM_DESCENT, None, _one)


def _pair(rows: list[Row]) -> tuple[int, int]:
    return rows[0][0], rows[0][1]


def jobs_behind_point(queue: str, point: ClaimPoint, back: float) -> Query[bool]:
    """Whether ``queue`` has a runnable job that its idle resumed claims, stepping ``back``
    seconds before ``point``, would not read (see ``q.JOBS_BEHIND_POINT``)."""
    params = {"queue": queue, "priority": point.priority, "id": point.id, "back": back}
    return Query(q.JOBS_BEHIND_POINT, params, _one)


def _claimed(rows: list[Row]) -> Claim:
    """Decode a claim's JSON columns (args, kwargs, meta; selected as text), and find where
    it ended per queue."""
    if rows and rows[0][0] is None:  # took nothing, and says what it read (JOBS_CLAIM_LOOK)
        return Claim([], {}, rows[0][12], True, rows[0][13])
    try:
        jobs = _decoded(rows)
    except Exception:  # a row Python cannot decode: the claim is committed, so go on
        jobs = [_claimed_row(r) for r in rows]
    if not rows:
        return Claim(jobs, {})
    queues = set(map(_QUEUE, rows))
    groups = [rows] if len(queues) == 1 else [[r for r in rows if r[1] == q] for q in queues]
    first = rows[0]
    read, pages = first[12], first[13] if len(first) > 13 else None  # NULL: not counted
    walked = 0 if read is None else read - len(rows)
    ends = dict(_end(group) for group in groups)
    return Claim(jobs, ends, walked, read is not None, pages or 0)


def _decoded(rows: list[Row]) -> list[Row]:
    """Claimed rows with their JSON columns decoded (the worker's ``ClaimedJob`` fields)."""
    d = decode_json
    return [(r[0], r[1], r[2], d(r[3]), d(r[4]), r[5], r[6], r[7], d(r[8]), r[9], r[10])
            for r in rows]  # fmt: skip


def _claimed_row(r: Row) -> Row:
    """One claimed row, decoded on its own: a row whose JSON Python cannot decode (nested
    deeper than its recursion limit, say; PostgreSQL accepts more) comes back with empty
    arguments and, as a twelfth field, why, so that its job fails instead of the claim."""
    try:
        return _decoded([r])[0]
    except Exception as exc:  # reported as the job's error
        why = f"pgqueue could not decode this job's args, kwargs or meta: {exc!r}"
        return (r[0], r[1], r[2], [], {}, r[5], r[6], r[7], {}, r[9], r[10], why)


_QUEUE = operator.itemgetter(1)
_WAITED = operator.itemgetter(9)
_PRIORITY = operator.itemgetter(11)


def _end(rows: list[Row]) -> tuple[str, ClaimPoint]:
    """The last of one queue's claimed rows in claim order (lowest priority, then latest
    run_at, which is the shortest wait, then highest id), by C-level passes over the rows: a
    Python key per row cost the worker 0.2 µs per job."""
    low = min(map(_PRIORITY, rows))
    if low != max(map(_PRIORITY, rows)):
        rows = [r for r in rows if r[11] == low]
    waits = list(map(_WAITED, rows))
    latest = min(waits)
    if waits.count(latest) == 1:
        last = rows[waits.index(latest)][0]
    else:  # jobs enqueued by one statement share their run_at
        last = max(r[0] for r in rows if r[9] == latest)
    return rows[0][1], ClaimPoint(low, last)


# json.loads() spends most of its time on checks that PostgreSQL's own output never needs
# (byte order marks, surrounding white space): its C scanner alone is five times faster.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode_json(text: str) -> Any:
    """Decode a jsonb value PostgreSQL wrote as text; empty objects and arrays skip the parser."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        end = -1
    return value if end == len(text) else json.loads(text)  # json.loads() raises the error


@dataclass(slots=True)  # not frozen: frozen, building one cost each job 8,000 instructions more
class Outcome:
    """How one attempt ended. ``state`` is the job's next state; ``queued`` means retry (treat
    as read-only: the acker writes it as it was made)."""

    job_id: int
    attempt: int
    state: str
    result: str | None = None
    error: str | None = None
    traceback: str | None = None
    delay: float = 0.0

    @property
    def claim(self) -> tuple[int, int]:
        """The claim it ends: (job id, attempt)."""
        return self.job_id, self.attempt

    @property
    def gives_back(self) -> bool:
        """Whether writing it gives its attempt back (a Retry without an error): the job's
        next claim is then of the same attempt."""
        return self.state == "queued" and self.error is None


class Acked(NamedTuple):
    """What an ack wrote: ``ids`` whose lease still held, ``cancelled``, those of them that
    asked for a retry but were ended cancelled, as a cancel was requested meanwhile, and
    ``attempts``, the attempt written of each of ``ids``."""

    ids: list[int]
    cancelled: list[int]
    attempts: list[int]

    def applied(self) -> set[tuple[int, int]]:
        """The (id, attempt) of each outcome written: a stale attempt of a job is not written
        though its next attempt, in the same batch, is."""
        return set(zip(self.ids, self.attempts, strict=True))

    def plus(self, other: Acked) -> Acked:
        """What this ack and ``other`` wrote together."""
        return Acked(
            self.ids + other.ids, self.cancelled + other.cancelled, self.attempts + other.attempts
        )


_job_id = operator.attrgetter("job_id")


def jobs_ack(outcomes: Sequence[Outcome]) -> Query[Acked]:
    """Record a batch of outcomes in one statement; says which it wrote (see :class:`Acked`).

    Error texts pass through :func:`pg_text`; ``result`` must already be storable JSON.
    The outcomes are sent in the order of their jobs' ids, in which the statement locks
    their rows (see ``q.JOBS_ACK``)."""
    ordered = sorted(outcomes, key=_job_id)
    rows: list[Any]
    if list(map(_ack_kind, ordered)).count(_SUCCESS) == len(ordered):  # most batches
        rows = list(map(_ack_success, ordered))
    else:
        rows = [_ack_success(o) if _ack_kind(o) == _SUCCESS else _ack_row(o) for o in ordered]
    return Query(q.JOBS_ACK, {"outcomes": json.dumps(rows)}, _acked, binary=True)


def jobs_ack_again(outcomes: Sequence[Outcome], worker: str) -> Together[Acked]:
    """Write again ``outcomes`` sent before in a statement that failed (it may have committed):
    their jobs' rows are locked first, so that no claim takes one meanwhile (an outcome that
    gives its attempt back could end it), and only an outcome whose job is still ``worker``'s
    claim of that attempt is written (see ``q.JOBS_LOCK_CLAIMS``). Returns what that wrote,
    with the outcomes found written before (see :func:`_written_before`)."""
    ids = sorted({o.job_id for o in outcomes})
    lock = Query(q.JOBS_LOCK_CLAIMS, {"ids": ids}, lambda rows: {r[0]: r[1:] for r in rows})

    def then(rows: dict[int, Row]) -> Query[Acked]:
        ours: list[Outcome] = []
        before = Acked([], [], [])
        for o in outcomes:
            attempts, state, holder = rows.get(o.job_id, (None, None, None))
            if state == "running" and attempts == o.attempt and holder == worker:
                ours.append(o)
            elif (written := _written_before(o, worker, attempts, state, holder)) is not None:
                before = before.plus(written)
        ack = jobs_ack(ours)
        return Query(ack.sql, ack.params, lambda r: ack.read(r).plus(before), ack.binary)

    return Together(lock, then)


def _written_before(
    o: Outcome, worker: str, attempts: int | None, state: str | None, holder: str | None
) -> Acked | None:
    """What ``o`` wrote, if its job's row (active or finished) says it was written. An outcome
    that ends the attempt: its job finished so, by ``worker``, at that attempt (a failure may
    also be the rescue's, the lease having expired meanwhile: failed all the same). A retry
    with an error is not told from its job's rescue, and is not found. An outcome that gives
    its attempt back: the job queued again with it, or ended cancelled by it, as asked while
    it ran, or that attempt claimed again by another worker (after a rescue, a claim has the
    next attempt)."""
    if not o.gives_back:
        ended = "cancelled" if o.state == "queued" else o.state
        if state == ended and attempts == o.attempt and holder == worker:
            return Acked([o.job_id], [o.job_id] if o.state == "queued" else [], [o.attempt])
        return None
    if state not in (None, "running") and attempts == o.attempt - 1:
        cancelled = [o.job_id] if state == "cancelled" and holder == worker else []
        return Acked([o.job_id], cancelled, [o.attempt])
    if attempts == o.attempt and holder not in (None, worker):
        return Acked([o.job_id], [], [o.attempt])
    return None


def _acked(rows: list[Row]) -> Acked:
    return Acked(*rows[0])


# A success without an error travels as [id, attempt, result], read in C (see q.JOBS_ACK):
# the seven fields of every outcome, listed in Python and encoded, cost the worker about 1,500
# instructions per job more (docs/performance.md).
_ack_kind = operator.attrgetter("state", "error", "traceback")
_ack_success = operator.attrgetter("job_id", "attempt", "result")
_SUCCESS = ("succeeded", None, None)


def _ack_row(o: Outcome) -> list[Any]:
    return [o.job_id, o.attempt, o.result, o.state, pg_text(o.error), pg_text(o.traceback), o.delay]


def pg_text(text: str | None) -> str | None:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates become backslash escapes.

    An exception's message is whatever the task put in it, and either character would make the
    database refuse the whole batch of outcomes it travels in."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode()
    return text


UNCOUNTABLE_ERROR = (
    "pgqueue cannot count another attempt of this job: its attempts column holds"
    " 2147483647, the largest integer (written by SQL, not by pgqueue)"
)


def jobs_fail_uncountable(queues: Sequence[str]) -> Query[list[int]]:
    """Fail the queued jobs of ``queues`` whose ``attempts`` cannot be counted up (a claim of
    one fails on integer overflow); returns their ids."""
    params = {"queues": list(queues), "error": UNCOUNTABLE_ERROR}
    return Query(q.JOBS_FAIL_UNCOUNTABLE, params, _one)


Identity = tuple[str, int, str | None, int | None]
"""A worker process as its row names it: hostname, pid, host key, process start."""


class Beat(NamedTuple):
    """What a heartbeat found: ``{(job_id, attempt): cancel_requested}`` for the leases that
    still hold, and the process the worker's row names (``None`` if the row is gone)."""

    leases: dict[tuple[int, int], bool]
    holder: Identity | None


def _beat(rows: list[Row]) -> Beat:
    leases = {(r[0], r[1]): r[2] for r in rows if r[0] is not None}
    holder = next(((r[3], r[4], r[5], r[6]) for r in rows if r[0] is None), None)
    return Beat(leases, holder)


def leases_extend(worker: str, lease: float, held: Sequence[tuple[int, int]]) -> Query[Beat]:
    """Extend the leases of ``held`` (id, attempt) pairs and mark the worker seen."""
    params = {
        "worker": worker, "lease": lease,
        "ids": [h[0] for h in held], "attempts": [h[1] for h in held],
    }  # fmt: skip
    return Query(q.LEASES_EXTEND, params, _beat)


def _identity(me: Identity) -> dict[str, Any]:
    return dict(zip(("hostname", "pid", "host_key", "started"), me, strict=True))


def leases_release(held: Sequence[tuple[int, int]]) -> Query[tuple[int, list[int]]]:
    """Put unfinished jobs back to queued without counting the attempt; returns how many,
    and the ids of those it ended instead: a job asked to cancel meanwhile is not put back,
    it ends cancelled."""
    params = {"ids": [h[0] for h in held], "attempts": [h[1] for h in held]}
    return Query(q.LEASES_RELEASE, params, lambda rows: (rows[0][0], rows[0][1]))


def leases_read(worker: str, me: Identity) -> Query[list[tuple[int, int]]]:
    """The (id, attempt) of the running jobs leased to ``worker``, their leases unexpired;
    none while the worker's row names a process other than ``me``."""
    params = {"worker": worker, **_identity(me)}
    return Query(q.LEASES_READ, params, lambda rows: [(r[0], r[1]) for r in rows])


def leases_rescue(
    dead: Sequence[tuple[str, int, int]] = (), limit: int = 1000
) -> Query[tuple[int, int, int, int]]:
    """Rescue jobs whose lease expired, and the jobs of the ``dead`` workers (``(id, pid,
    process_started)`` as registered; their rows go too, once none of their jobs is left
    running). Returns (requeued, ended failed, ended cancelled, dead workers removed)."""
    params = {
        "dead": [d[0] for d in dead], "dead_pids": [d[1] for d in dead],
        "dead_started": [d[2] for d in dead], "limit": limit,
    }  # fmt: skip
    return Query(
        q.LEASES_RESCUE, params, lambda rows: (rows[0][0], rows[0][1], rows[0][2], rows[0][3])
    )


def workers_register(
    worker: str, hostname: str, pid: int, queues: str, version: str, heartbeat: float,
    host_key: str | None = None, started: int | None = None, missing_only: bool = False,
) -> Query[bool]:  # fmt: skip
    """Register (or refresh) a worker process; with ``missing_only``, only if no row holds
    its name. Returns whether a row was inserted (always ``False`` without ``missing_only``)."""
    params = {
        "id": worker, "hostname": hostname, "pid": pid, "queues": queues,
        "version": version, "heartbeat": heartbeat, "host_key": host_key, "started": started,
    }  # fmt: skip
    if missing_only:
        return Query(q.WORKERS_REGISTER_MISSING, params, bool)
    return Query(q.WORKERS_REGISTER, params, bool)


def workers_read(worker: str) -> Query[Row | None]:
    """``(hostname, pid, host_key, process_started, seconds since seen, heartbeat, when seen
    as epoch seconds)`` of the worker registered as ``worker``, or ``None``."""
    return Query(q.WORKERS_READ, {"id": worker}, _first_row)


def workers_on_host(host_key: str) -> Query[list[Row]]:
    """``(id, pid, process_started)`` of the workers registered with ``host_key``."""
    return Query(q.WORKERS_ON_HOST, {"host_key": host_key}, _rows)


def workers_delete(worker: str, me: Identity) -> Query[None]:
    """Remove a worker process that is shutting down, if its row still names ``me``."""
    return Query(q.WORKERS_DELETE, {"id": worker, **_identity(me)}, _nothing)


def workers_prune() -> Query[None]:
    """Remove worker rows that stopped heart-beating long ago."""
    return Query(q.WORKERS_PRUNE, None, _nothing)


def schema_exists() -> Query[bool]:
    """Whether pgqueue's schema version table exists."""
    return Query(q.SCHEMA_EXISTS, None, _one)


def schema_revision_get() -> Query[str | None]:
    """The schema revision recorded in the database."""
    return Query(q.SCHEMA_REVISION_GET, None, lambda rows: rows[0][0] if rows else None)


def table_schema_get(name: str) -> Query[str | None]:
    """The schema of the table the unqualified ``name`` resolves to on the search_path."""
    return Query(q.TABLE_SCHEMA_GET, (name,), _first_or_none)


def schema_compatible_since_callable() -> Query[bool]:
    """Whether pgqueue.compatible_since() exists (revision 0007 on) and this role may call it."""
    return Query(q.SCHEMA_COMPATIBLE_SINCE_CALLABLE, None, _one)


def schema_compatible_since() -> Query[str | None]:
    """The oldest revision code may need and still run on this schema."""
    return Query(q.SCHEMA_COMPATIBLE_SINCE, None, _one)


def jobs_count_runnable(queues: Sequence[str], tasks: Sequence[str]) -> Query[tuple[int, int]]:
    """How many jobs of ``tasks`` in ``queues`` a claim could take right now (those no other
    transaction holds locked), and how many are runnable now, locked or not."""
    return Query(q.JOBS_COUNT_RUNNABLE, {"queues": list(queues), "tasks": list(tasks)}, _pair)


def jobs_count_by_state() -> Query[dict[str, int]]:
    """Number of retained jobs per state."""
    return Query(q.JOBS_COUNT_BY_STATE, None, lambda rows: {r[0]: r[1] for r in rows})


def listen_jobs() -> Query[None]:
    """Subscribe the connection to job wake-ups."""
    return Query(q.LISTEN_JOBS, None, _nothing)


def ping() -> Query[None]:
    """A round trip that proves the connection is alive."""
    return Query(q.PING, None, _nothing)


Backend = tuple[int, datetime]
"""A server session: its pid and when it started."""


def backend_self() -> Query[Backend]:
    """This session's :data:`Backend`."""
    return Query(q.BACKEND_SELF, None, lambda rows: (rows[0][0], rows[0][1]))


def backend_end(backend: Backend, application: str) -> Query[bool]:
    """End ``backend`` if it still runs under this role and ``application``'s name; returns
    whether it was found (see ``q.BACKEND_END``)."""
    params = {"pid": backend[0], "started": backend[1], "application": application}
    return Query(q.BACKEND_END, params, lambda rows: bool(rows[0][0]))


def backend_alive(backend: Backend) -> Query[bool]:
    """Whether ``backend`` is still there."""
    return Query(q.BACKEND_ALIVE, {"pid": backend[0], "started": backend[1]}, _one)


# -- bulk enqueue (issue 7) -------------------------------------------------------------------

COPY_THRESHOLD = 1000
"""enqueue_many loads at least this many jobs with COPY rather than INSERT ... unnest."""


def copy_usable(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], jobs: int) -> bool:
    """Whether to load ``jobs`` jobs with COPY: a batch that big, on a connection outside
    pipeline mode (the caller's ``conn.pipeline()``), where COPY raises NotSupportedError."""
    return jobs >= COPY_THRESHOLD and not conn.pgconn.pipeline_status


def jobs_delete_new(ids: Sequence[int]) -> Query[None]:
    """Delete the jobs of ``ids`` an enqueue_many just inserted in this transaction."""
    return Query(q.JOBS_DELETE_NEW, (list(ids),), _nothing)


def jobs_ids_reserve(n: int) -> Query[list[int]]:
    """Take ``n`` ids from the jobs' identity sequence, in increasing order."""
    return Query(q.JOBS_IDS_RESERVE, (n,), _id_range)


def _id_range(rows: list[Row]) -> list[int]:
    low, high, scattered = rows[0]
    return sorted(scattered) if scattered is not None else list(range(low, high + 1))


def run_at_after(job: NewJob) -> Query[datetime]:
    """When a job with ``job``'s run_at/delay becomes runnable, by the database clock."""
    return Query(q.RUN_AT_AFTER, (job.run_at, job.delay or 0.0), _one)


def _copy_field(value: object) -> str:
    """One field in COPY's text format: NULL is \\N; backslash, tab and newlines are escaped."""
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_blocks(
    template: NewJob, run_at: datetime, ids: Sequence[int], args: Sequence[str],
    kwargs: Sequence[str], rows: int = 5000,
) -> Iterator[str]:  # fmt: skip
    """COPY text for the jobs, a block of ``rows`` lines at a time.

    Formatting the text here costs a fraction of formatting it value by value; only the
    arguments differ from row to row, the rest of each line is formatted once.
    """
    t = template
    tail = "\t".join(_copy_field(v) for v in (
        t.queue, t.task, t.priority, t.max_attempts, run_at.isoformat(), t.timeout, t.meta,
    ))  # fmt: skip
    for start in range(0, len(ids), rows):
        chunk = zip(ids[start : start + rows], args[start : start + rows],
                    kwargs[start : start + rows], strict=True)  # fmt: skip
        yield "".join(f"{i}\t{_copy_field(a)}\t{_copy_field(k)}\t{tail}\n" for i, a, k in chunk)


def jobs_copy(
    cur: psycopg.Cursor[Any], template: NewJob, args: Sequence[str], kwargs: Sequence[str]
) -> tuple[list[int], int]:
    """Load many jobs sharing ``template``'s options with one COPY; ids in input order, and
    how many rows went in (fewer if a BEFORE INSERT trigger dropped some: COPY's count)."""
    ids = run(cur, jobs_ids_reserve(len(args)))
    run_at = run(cur, run_at_after(template))
    with cur.copy(q.JOBS_COPY) as copy:
        for block in _copy_blocks(template, run_at, ids, args, kwargs):
            copy.write(block)
    return ids, cur.rowcount


async def ajobs_copy(
    cur: psycopg.AsyncCursor[Any], template: NewJob, args: Sequence[str], kwargs: Sequence[str]
) -> tuple[list[int], int]:
    """Async twin of :func:`jobs_copy`."""
    ids = await arun(cur, jobs_ids_reserve(len(args)))
    run_at = await arun(cur, run_at_after(template))
    async with cur.copy(q.JOBS_COPY) as copy:
        for block in _copy_blocks(template, run_at, ids, args, kwargs):
            await copy.write(block)
    return ids, cur.rowcount


# -- worker sessions (issue 7) ----------------------------------------------------------------


def timeouts_set_local(lock: float, statement: float) -> Query[None]:
    """Bound, until the transaction ends, each statement's wait for a lock and its run (s)."""
    return _timeouts_set(lock, statement, local=True)


def _timeouts_set(lock: float, statement: float, local: bool) -> Query[None]:
    ms = {"lock": _ms(lock), "run": _ms(statement), "local": local}
    return Query(q.TIMEOUTS_SET, ms, _nothing)


def _ms(seconds: float) -> str:
    """``seconds`` as a timeout setting: milliseconds, from 1 (0 is no timeout at all) up to
    PostgreSQL's largest (24.8 days; past it, the setting is refused)."""
    return str(min(max(round(seconds * 1000), 1), 2**31 - 1))


def session_async_commit() -> Query[None]:
    """Let this session's commits return before the WAL is flushed."""
    return Query(q.SESSION_ASYNC_COMMIT, None, _nothing)


def session_durable_commit() -> Query[None]:
    """Make this session's commits wait for the local WAL flush if the default is 'off'."""
    return Query(q.SESSION_DURABLE_COMMIT, None, _nothing)


def session_commit_setting() -> Query[str]:
    """This session's synchronous_commit."""
    return Query(q.SESSION_COMMIT_SETTING, None, _one)


def dates_iso(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn``'s server writes timestamps in the ISO style: psycopg reads
    timestamptz text in no other (a database or role may set ``DateStyle = 'SQL, DMY'``)."""
    return (conn.info.parameter_status("DateStyle") or "ISO").startswith("ISO")


def iso_dates(conn: psycopg.Connection[Any]) -> None:
    """Make ``conn``, one of pgqueue's own, write timestamps in the ISO style, if it does not
    already (no round trip then)."""
    if not dates_iso(conn):
        conn.execute(q.SESSION_ISO_DATES)


async def aiso_dates(conn: psycopg.AsyncConnection[Any]) -> None:
    """Async twin of :func:`iso_dates`."""
    if not dates_iso(conn):
        await conn.execute(q.SESSION_ISO_DATES)


# -- claim-path hygiene (issue 7) -------------------------------------------------------------


def active_dead_tuples() -> Query[tuple[int, int, float]]:
    """(dead, live) row versions in active_jobs, as the statistics last saw them, and the
    seconds since its last vacuum ended (infinity if it never ran)."""
    return Query(q.ACTIVE_DEAD_TUPLES, None, lambda rows: rows[0])


def active_vacuum_permitted() -> Query[bool]:
    """Whether this role may vacuum active_jobs (PostgreSQL skips the vacuum otherwise)."""
    return Query(q.ACTIVE_VACUUM_PERMITTED, None, _one)


def active_vacuum() -> Query[None]:
    """Vacuum active_jobs now, unless someone else already is."""
    return Query(q.ACTIVE_VACUUM, None, _nothing)


@dataclass(frozen=True, slots=True)
class HorizonHolder:
    """Something that keeps the queue's dead row versions from being removed: an open or a
    prepared transaction, a replication slot, or a standby connected without one."""

    kind: str  # "transaction", "prepared", "slot" or "standby"
    pid: int | None  # the backend's; a standby's walsender, or a slot's while one uses it
    name: str | None  # a prepared transaction's gid, a slot's name
    database: str | None
    user: str | None
    application: str | None  # for a slot or a standby: its walsender's, the standby's name
    client: str | None
    state: str | None
    started_at: datetime | None  # when the transaction began or was prepared
    open_seconds: float | None  # since started_at
    xmin: int | None  # the oldest transaction a slot or standby still needs
    xmin_age: int | None  # how many transactions ago that was
    every_database: bool  # holds back the cleanup of every database, not only the queue's
    seen_at: datetime  # the database's clock when read

    @property
    def key(self) -> tuple[str, object, object]:
        """The same while it holds the horizon at the same point: a transaction's pid or gid
        and start, a slot's name or a standby's walsender with the xmin it holds."""
        who = self.name if self.name is not None else self.pid
        return self.kind, who, self.started_at if self.started_at is not None else self.xmin


def horizon_holders(older_than: float) -> Query[list[HorizonHolder]]:
    """What holds back the cleanup of this database's tables: transactions open and prepared
    for more than ``older_than`` seconds, oldest first, then every replication slot and
    standby whose xmin lags (see ``q.HORIZON_HOLDERS``)."""
    return Query(q.HORIZON_HOLDERS, {"older_than": older_than}, _horizon_holders)


def _horizon_holders(rows: list[Row]) -> list[HorizonHolder]:
    return [HorizonHolder(*r) for r in rows]


# -- demo: `pgqueue demo` -----------------------------------------------------------------------


def demo_schema_create() -> Query[None]:
    """Create the schema that holds the demo's own table."""
    return Query(q.DEMO_SCHEMA_CREATE, None, _nothing)


def demo_orders_create() -> Query[None]:
    """Create the demo's orders table if it is missing."""
    return Query(q.DEMO_ORDERS_CREATE, None, _nothing)


def demo_orders_insert(customer: str, total_cents: int) -> Query[int]:
    """Insert one demo order; returns its id."""
    return Query(q.DEMO_ORDERS_INSERT, (customer, total_cents), _one)


def demo_orders_count(ids: Sequence[int]) -> Query[int]:
    """How many of the demo orders ``ids`` exist."""
    return Query(q.DEMO_ORDERS_COUNT, {"ids": list(ids)}, _one)


def demo_jobs_count(ids: Sequence[int]) -> Query[int]:
    """How many of the jobs ``ids`` exist in ``pgqueue.jobs``."""
    return Query(q.DEMO_JOBS_COUNT, {"ids": list(ids)}, _one)


def demo_jobs_unfinished(first: int, last: int, tasks: Sequence[str]) -> Query[int]:
    """How many of a demo run's jobs are still queued or running."""
    params = {"first": first, "last": last, "tasks": list(tasks)}
    return Query(q.DEMO_JOBS_UNFINISHED, params, _one)


def demo_jobs_by_state(first: int, last: int, tasks: Sequence[str]) -> Query[list[Row]]:
    """A demo run's jobs per (task, state): count, most attempts, one error."""
    params = {"first": first, "last": last, "tasks": list(tasks)}
    return Query(q.DEMO_JOBS_BY_STATE, params, _rows)


# -- periodic tasks and unique jobs (issue 3) -----------------------------------------------


def clock_now() -> Query[datetime]:
    """The database's ``now()``: the only clock schedules are computed from."""
    return Query(q.CLOCK_NOW, None, _one)


def clock_now_text() -> Query[str]:
    """The database's ``now()`` as ISO 8601 text in UTC, to send back to the database as it is
    (see :func:`jobs_prune`): it goes through no DateStyle, time zone or timestamp loader."""
    return Query(q.CLOCK_NOW_TEXT, None, _one)


@dataclass(frozen=True, slots=True)
class TickJob:
    """What the job of a periodic tick looks like; arguments already encoded as JSON text."""

    name: str
    queue: str
    task: str
    kwargs: str
    priority: int = 0
    max_attempts: int = 3
    timeout: float | None = None
    meta: str = "{}"
    unique_key: str | None = None


TicksWon = list[tuple[int | None, str]]


def ticks_insert(
    job: TickJob, ticks: Sequence[datetime], horizon: float, jobless_through: datetime | None = None
) -> Together[TicksWon]:
    """Record ``ticks`` of one schedule and enqueue a job for each tick this call won.

    Returns ``(job_id, tick)`` for the ticks won, oldest first; ticks another scheduler already
    recorded, older than ``horizon`` seconds, or pruned (at or below the name's watermark) are
    left alone. A job whose ``unique_key`` an active job holds is not enqueued: its tick comes
    with a ``None`` id, and its row's ``job_id`` is NULL. Ticks at or before
    ``jobless_through`` (coalesced ones) are recorded without a job, alike. The insert runs
    under the name's lock, taken shared by a statement of its own before it.
    """
    lock = Query(q.TICKS_LOCK_SHARED, {"name": job.name}, _nothing)
    unlink = Query(q.TICKS_UNLINK, {"name": job.name, "ticks": list(ticks)}, _nothing)
    insert = _ticks_insert(job, ticks, horizon, jobless_through)
    return Together(lock, insert, unlink if job.unique_key else None)


def ticks_try(job: TickJob, tick: datetime, horizon: float) -> RolledBack[TicksWon]:
    """The insert of :func:`ticks_insert` for ``tick``, rolled back: raises what the database
    would raise for the job of any tick (a check constraint its arguments fail, say). A
    ``tick`` already recorded or pruned tries nothing."""
    return RolledBack(_ticks_insert(job, [tick], horizon))


def _ticks_insert(
    job: TickJob, ticks: Sequence[datetime], horizon: float, jobless_through: datetime | None = None
) -> Query[TicksWon]:
    params = {
        "name": job.name, "ticks": list(ticks), "horizon": horizon,
        "jobless_through": jobless_through, "queue": job.queue,
        "task": job.task, "kwargs": job.kwargs, "priority": job.priority,
        "max_attempts": job.max_attempts, "timeout": job.timeout, "meta": job.meta,
        "unique_key": job.unique_key,
    }  # fmt: skip
    return Query(q.TICKS_INSERT, params, lambda rows: [(r[0], r[1]) for r in rows])


def ticks_last() -> Query[dict[str, datetime]]:
    """The latest recorded tick of every schedule name in the database."""
    return Query(q.TICKS_LAST, None, lambda rows: {r[0]: r[1] for r in rows})


def watermarks_get(names: Sequence[str]) -> Query[dict[str, datetime]]:
    """The latest tick pruning deleted of each of ``names`` that has one, up to now."""
    return Query(q.WATERMARKS_GET, {"names": list(names)}, lambda rows: dict(rows))


def ticks_prune(
    keep: dict[str, float], default_keep: float, forget: float, limit: int = 500
) -> Together[int]:
    """Delete up to ``limit`` tick rows older than their name's ``keep`` seconds; returns how many.

    Names missing from ``keep`` use ``default_keep``; the latest tick of each name in ``keep``
    always stays. Each name's watermark rises to the latest tick deleted; that of a name
    missing from ``keep`` with no tick left goes once older than ``forget`` seconds. The
    names that may lose ticks or a watermark are locked first, exclusively, at most ``limit``
    of them (the delete cannot reach more), and the delete touches no other name.
    """
    params = {
        "names": list(keep), "keeps": list(keep.values()), "default_keep": default_keep,
        "forget": forget, "limit": limit,
    }  # fmt: skip

    def delete(locked: list[str]) -> Query[int]:
        return Query(q.TICKS_PRUNE, {**params, "locked": locked}, len)

    return Together(Query(q.TICKS_PRUNE_LOCK, params, _first_column), delete)


def _first_or_none(rows: list[Row]) -> Any:
    return rows[0][0] if rows else None


def jobs_insert_unique(job: NewJob) -> Query[int | None]:
    """Insert one job unless an active job holds its unique key; returns its id or ``None``."""
    params = (
        job.queue, job.task, job.args, job.kwargs, job.priority, job.max_attempts,
        job.run_at, job.delay or 0.0, job.timeout, job.unique_key, job.meta,
    )  # fmt: skip
    return Query(q.JOBS_INSERT_UNIQUE, params, _first_or_none)


def jobs_find_unique(key: str) -> Query[int | None]:
    """The id of the active (queued or running) job holding ``key``, or ``None``."""
    return Query(q.JOBS_FIND_UNIQUE, {"key": key}, _first_or_none)


def jobs_insert_many_unique(
    template: NewJob, args: Sequence[str], kwargs: Sequence[str], keys: Sequence[str | None]
) -> Query[list[Row]]:
    """Insert one job per (args, kwargs, key) sharing ``template``'s options, but those whose
    key an active job holds; no key may come twice. Returns ``(id, key)`` per job inserted;
    ids increase in input order."""
    t = template
    params = {
        "queue": t.queue, "task": t.task, "priority": t.priority, "max_attempts": t.max_attempts,
        "run_at": t.run_at, "delay": t.delay or 0.0, "timeout": t.timeout, "meta": t.meta,
        "args": list(args), "kwargs": list(kwargs), "keys": list(keys),
    }  # fmt: skip
    return Query(q.JOBS_INSERT_MANY_UNIQUE, params, _rows)


def jobs_find_unique_many(keys: Sequence[str]) -> Query[dict[str, int]]:
    """The ids of the active jobs holding ``keys``, by key; a key none holds is left out."""
    return Query(q.JOBS_FIND_UNIQUE_MANY, {"keys": list(keys)}, _by_key)


def _by_key(rows: list[Row]) -> dict[str, int]:
    return {key: job_id for key, job_id in rows}


def savepoint_set() -> Query[None]:
    """Mark where :func:`savepoint_rollback` goes back to, in the caller's transaction."""
    return Query(q.SAVEPOINT_SET, None, _nothing)


def savepoint_rollback() -> Query[None]:
    """Take back what was written since :func:`savepoint_set` (the savepoint stays)."""
    return Query(q.SAVEPOINT_ROLLBACK, None, _nothing)


def savepoint_release() -> Query[None]:
    """Forget the savepoint, keeping what was written since."""
    return Query(q.SAVEPOINT_RELEASE, None, _nothing)


def savepoint_abandon() -> Query[None]:
    """Take back what was written since :func:`savepoint_set` and forget the savepoint, in
    one round trip."""
    return Query(q.SAVEPOINT_ABANDON, None, _nothing)


# -- Cancellation (issue 4) --------------------------------------------------------------------


def jobs_cancel(job_id: int) -> Query[str | None]:
    """Cancel a queued job now, or ask the worker of a running one to stop it.

    Returns ``"cancelled"``, ``"requested"``, or ``None`` when the job is not active."""
    return Query(q.JOBS_CANCEL, {"id": job_id}, _one)


def listen_cancel() -> Query[None]:
    """Subscribe the connection to cancel hints (their payload is a worker id)."""
    return Query(q.LISTEN_CANCEL, None, _nothing)


# -- issue 6: integrations (Django admin actions, django.tasks results, embedded migrations,
# -- pgqueue.testing). Kept together at the end of the file to ease merging.


def jobs_retry(ids: Sequence[int]) -> Query[list[int]]:
    """Queue failed or cancelled jobs again under their ids (``pgqueue.retry()``); returns the
    ids requeued, in id order. Each is locked once, in id order, as JOBS_RETRY_FAILED does:
    in the order given, two retries of the same jobs could each hold one the other waits for."""
    return Query(q.JOBS_RETRY, {"ids": sorted(set(ids))}, _first_column)


def schema_lock() -> Query[None]:
    """Serialise schema installs (held until the transaction ends)."""
    return Query(q.SCHEMA_LOCK, None, _nothing)


def schema_client_check() -> Query[None]:
    """End the migration's transaction, and let go of its locks, once its client is gone."""
    return Query(q.SCHEMA_CLIENT_CHECK, None, _nothing)


def schema_revision_assert(revision: str) -> str:
    """The statement that fails unless the schema is at ``revision``, as text to print: the
    revision is a literal in it, for SQL run later by other tooling."""
    statement = sql.SQL(q.SCHEMA_REVISION_ASSERT).format(revision=sql.Literal(revision))
    return statement.as_string()


def schema_create() -> Query[None]:
    """Create the ``pgqueue`` schema if missing."""
    return Query(q.SCHEMA_CREATE, None, _nothing)


def schema_version_table_create() -> Query[None]:
    """Create the schema's version table (alembic's layout) if missing."""
    return Query(q.SCHEMA_VERSION_TABLE_CREATE, None, _nothing)


def schema_revision_clear() -> Query[None]:
    """Forget the recorded schema revision (before recording a new one)."""
    return Query(q.SCHEMA_REVISION_CLEAR, None, _nothing)


def schema_revision_insert(revision: str) -> Query[None]:
    """Record ``revision`` as the installed schema revision."""
    return Query(q.SCHEMA_REVISION_INSERT, {"revision": revision}, _nothing)


def jobs_list_queued(task: str) -> Query[list[Row]]:
    """(id, queue, args, kwargs) of the queued jobs of ``task``, JSON as text, oldest first."""
    return Query(q.JOBS_LIST_QUEUED, {"task": task}, _rows)


def jobs_queues_waiting(tasks: list[str], due: bool = False) -> Query[list[str]]:
    """The queues that hold queued jobs of ``tasks`` (with ``due``, jobs due now only)."""
    return Query(q.JOBS_QUEUES_WAITING, {"tasks": tasks, "due": due}, _first_column)


def jobs_run_now(tasks: list[str], queues: list[str] | None = None) -> Query[None]:
    """Make every scheduled job of ``tasks`` (in ``queues``, or in every queue) runnable now."""
    return Query(q.JOBS_RUN_NOW, {"tasks": tasks, "queues": queues}, _nothing)


def drains_lock() -> Query[None]:
    """Wait for the other drain rounds on this database to end; held to the transaction's end."""
    return Query(q.DRAINS_LOCK, None, _nothing)


def locks_wait_at_most(seconds: float) -> Query[None]:
    """Let this transaction's statements wait at most ``seconds`` for a lock, then fail with
    ``LockNotAvailable``."""
    return Query(q.LOCKS_WAIT_AT_MOST, {"wait": f"{round(seconds * 1000)}ms"}, _nothing)


def jobs_probe(tasks: list[str], queues: list[str]) -> Query[int]:
    """Row-lock (FOR NO KEY UPDATE) the queued jobs of ``tasks`` in ``queues`` until the
    transaction ends, waiting for those another transaction holds (but another drain's
    FOR KEY SHARE hold); returns how many."""
    return Query(q.JOBS_PROBE, {"tasks": tasks, "queues": queues}, _one)


def locks_holders() -> Query[list[Row]]:
    """(pid, application_name, state, query) of the other sessions whose open transaction
    holds a lock on the jobs table, oldest first."""
    return Query(q.LOCKS_HOLDERS, None, _rows)


def locks_writers_idle() -> Query[list[Row]]:
    """(pid, application_name, state, query) of the other sessions idle in a transaction that
    wrote to the jobs table, oldest first."""
    return Query(q.LOCKS_WRITERS_IDLE, None, _rows)


def jobs_hold_others(tasks: list[str]) -> Query[int]:
    """Row-lock the queued jobs of every task not in ``tasks`` until the transaction ends, so
    that no claim takes them meanwhile; returns how many."""
    return Query(q.JOBS_HOLD_OTHERS, {"tasks": tasks}, _one)


# -- operations: inspecting and steering jobs, retention, metrics (issue 5) ----------------------


def jobs_read(job_id: int) -> Query[Row | None]:
    """One job, active or finished, as a row of ``pgqueue.jobs`` (JSON decoded); ``None`` when
    unknown. The columns are those of :class:`pgqueue.Job`."""
    return Query(q.JOBS_READ, {"id": job_id}, lambda rows: _job_row(rows[0]) if rows else None)


def jobs_read_many(ids: Sequence[int]) -> Query[list[Row]]:
    """The jobs of ``ids`` that exist, active or finished, as rows of ``pgqueue.jobs`` with
    their JSON columns still text: decode each with :func:`job_row_decoded`, so that one job
    Python cannot decode does not stop the others being read."""
    return Query(q.JOBS_READ_MANY, {"ids": list(ids)}, _rows)


def job_row_decoded(row: Row) -> Row:
    """A row of :func:`jobs_read_many` with its JSON columns decoded, as :func:`jobs_read`'s."""
    return _job_row(row)


def jobs_list(
    state: str | None = None, queue: str | None = None, task: str | None = None, limit: int = 50
) -> Query[list[Row]]:
    """The newest jobs matching every given filter."""
    params = {"state": state, "queue": queue, "task": task, "limit": limit}
    return Query(q.JOBS_LIST, params, lambda rows: [_job_row(r) for r in rows])


_JOB_JSON_COLUMNS = (4, 5, 13, 15, 17)  # args, kwargs, result, errors, meta in JOBS_READ/LIST


def _job_row(row: Row) -> Row:
    """Decode the JSON columns of a JOBS_READ / JOBS_LIST row (selected as text)."""
    values = list(row)
    for index in _JOB_JSON_COLUMNS:
        if values[index] is not None:
            values[index] = _read_json(values[index])
    return tuple(values)


def _read_json(text: str) -> Any:
    """A JSON column for a reader. An integer of more digits than Python converts (4,300;
    PostgreSQL keeps 131,072) reads as a :class:`~decimal.Decimal`: one such job made
    ``int()`` raise, and with it every listing that held the job."""
    try:
        return json.loads(text)
    except ValueError:  # RecursionError (nested too deep) is left to the caller to name
        return json.loads(text, parse_int=_whole)


def _whole(digits: str) -> int | Decimal:
    """An integer of JSON text: an int, or a Decimal when too long for one (the others of its
    document were Decimals too, which the CLI wrote as strings)."""
    try:
        return int(digits)
    except ValueError:
        return Decimal(digits)


def jobs_retry_failed(
    task: str | None = None, after: int = 0, limit: int | None = None
) -> Query[tuple[int, int | None]]:
    """Requeue the first ``limit`` (``None``: every) failed jobs (of ``task``) after id
    ``after``, in id order; returns how many were requeued and the last id looked at
    (``None`` when there was none)."""
    params = {"task": task, "after": after, "limit": limit}
    return Query(q.JOBS_RETRY_FAILED, params, lambda rows: (rows[0][0], rows[0][1]))


def jobs_retry_failed_count(task: str | None = None) -> Query[int]:
    """How many failed jobs (of ``task``) :func:`jobs_retry_failed` would requeue now."""
    return Query(q.JOBS_RETRY_FAILED_COUNT, {"task": task}, _one)


def jobs_cancel_call(job_id: int) -> Query[str | None]:
    """Cancel a job with ``pgqueue.cancel()``: ``cancelled``, ``requested``, ``already <state>``,
    or ``None`` if unknown."""
    return Query(q.JOBS_CANCEL_CALL, {"id": job_id}, _one)


def jobs_prune(
    ages: dict[str, float], limit: int, as_of: str | None = None, after: Pruned | None = None
) -> Query[Pruned]:
    """Delete up to ``limit`` finished jobs per state older than ``ages[state]`` seconds at
    ``as_of`` (the database's clock, from :func:`clock_now_text`), or now, reading each state
    on from its entry in ``after`` (what the batch before returned). Returns, per state it
    deleted jobs of, how many and the last ``finished_at`` deleted, as text."""
    starts = [(after or {}).get(state, (0, None))[1] for state in ages]
    params = {"states": list(ages), "ages": list(ages.values()), "after": starts, "limit": limit,
              "as_of": as_of}  # fmt: skip
    return Query(q.JOBS_PRUNE, params, lambda rows: {r[0]: (r[1], r[2]) for r in rows})


def jobs_prune_count(ages: dict[str, float]) -> Query[dict[str, int]]:
    """How many finished jobs per state are older than ``ages[state]`` seconds now: what
    :func:`jobs_prune`'s batches would delete."""
    params = {"states": list(ages), "ages": list(ages.values())}
    return Query(q.JOBS_PRUNE_COUNT, params, lambda rows: {r[0]: r[1] for r in rows})


def queues_stats() -> Query[list[Row]]:
    """Every row of ``pgqueue.queue_stats``, ages and rates as floats."""
    return Query(q.QUEUES_STATS, None, _rows)


def queues_stats_sampled(percent: float, failed_cap: int = 50_000) -> Query[list[Row]]:
    """Rows as :func:`queues_stats` gives, the finished jobs counted from ``percent`` of the
    history's pages and scaled (100: exactly), the jobs finished recently on their index, the
    failed ones on it too, exactly up to ``failed_cap`` of them; with a last column saying
    whether the counts are estimates."""
    params = {"percent": percent, "failed_cap": failed_cap}
    return Query(q.QUEUES_STATS_SAMPLED, params, _rows)


def jobs_finished_pages() -> Query[int]:
    """The size of the history (``pgqueue.finished_jobs``) in pages."""
    return Query(q.JOBS_FINISHED_PAGES, None, _one)


def queues_depth(queues: Sequence[str], cap: int) -> Query[dict[str, int]]:
    """Runnable jobs per queue, each count capped at ``cap``."""
    params = {"queues": list(queues), "cap": cap}
    return Query(q.QUEUES_DEPTH, params, lambda rows: {r[0]: r[1] for r in rows})


def workers_list(worker: str | None = None) -> Query[list[Row]]:
    """Live workers (or the one named ``worker``) from ``pgqueue.workers``."""
    return Query(q.WORKERS_LIST, {"id": worker}, _worker_rows)


def _worker_rows(rows: list[Row]) -> list[Row]:
    return [(*r[:3], _read_json(r[3]), *r[4:]) for r in rows]


def jobs_estimate_active() -> Query[int]:
    """The planner's estimate of queued + running jobs (from pg_class; no scan)."""
    return Query(q.JOBS_ESTIMATE_ACTIVE, None, _one)


def listen_finished() -> Query[None]:
    """Register the connection as a waiter and subscribe it to job-finished notifications
    (for a connection of its own: the registration lasts as long as the session)."""
    return Query(q.LISTEN_FINISHED, None, _nothing)
