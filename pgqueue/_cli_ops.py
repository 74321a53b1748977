"""Operations commands: ``pgqueue jobs ...``, ``stats``, ``workers``, ``enqueue``, ``prune``,
``healthcheck``. Each parses its options, calls one function of ``pgqueue._ops`` and prints
the answer as a table (or JSON with ``--json``)."""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import re
import signal
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

import click
import psycopg
from click.core import ParameterSource

from pgqueue import _ops, _store
from pgqueue._cli import NO_APP, Choice, Seconds, Text, Whole, friendly_errors
from pgqueue._errors import DuplicateJob
from pgqueue._job import TERMINAL_STATES
from pgqueue._logging import json_logging
from pgqueue._options import (
    BIGINT_MAX,
    MAX_ATTEMPTS_LIMIT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    check_given_name,
    check_queue,
    check_task_name,
)
from pgqueue._schema import require_schema

if TYPE_CHECKING:
    from pgqueue._cli import State
    from pgqueue._job import Job, QueueStats
    from pgqueue._periodic import ScheduleStatus


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.4 on
    """A duration such as ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds,
    unless ``unit_required``), converted to seconds; one that does not parse or is out of
    range is a usage error."""

    name = "duration"

    def __init__(self, unit_required: bool = False) -> None:
        self.unit_required = unit_required

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The seconds, or a usage error (exit 2) saying what to write."""
        try:
            return _ops.parse_duration(value, unit_required=self.unit_required)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class JobId(Whole):
    """A job id: a whole number from 1 to the largest bigint, as pgqueue gives them."""

    name = "job id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The int, or a usage error naming the value and the range of ids."""
        job_id = super().convert(value, param, ctx)
        if not 1 <= job_id <= BIGINT_MAX:
            self.fail(f"invalid job id {job_id}: job ids are whole numbers from 1 to"
                      f" {BIGINT_MAX}", param, ctx)  # fmt: skip
        return job_id


NEGATIVE = re.compile(r"-[0-9].*", re.DOTALL)  # -5, and a mistyped id such as -5x, not an option


class JobIdCommand(click.Command):
    """A command of a JOB_ID, which refuses ``-5`` as the job id it is: click took it for
    options and said "No such option: -5" (after ``--`` it was read as an id)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """The arguments parsed, or the usage error of a negative job id among them."""
        given = list(args)  # the parser consumes args
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            options = given[: given.index("--")] if "--" in given else given
            ids = [a for a in options if NEGATIVE.fullmatch(a) and a[:2] == exc.option_name]
            job_id = next(p for p in self.params if p.name == "job_id")
            for text in ids:
                job_id.type.convert(text, job_id, ctx)  # a usage error naming it
            raise


class Json(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.4 on
    """JSON text of an array (``kind`` list) or an object (``kind`` dict), decoded."""

    def __init__(self, kind: type[list[Any]] | type[dict[str, Any]]) -> None:
        self.kind = kind
        self.name = "array" if kind is list else "object"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The list or dict, or a usage error saying what is wrong with the text."""
        if isinstance(value, self.kind):
            return value
        if isinstance(value, str) and not value.strip():  # --args "$ARGS", ARGS unset, say
            example = "an array, e.g. '[]'" if self.kind is list else "an object, e.g. '{}'"
            self.fail(f"{value!r} is empty: give {example}, or leave the option out", param, ctx)
        try:
            return _ops.decode_json(value, self.kind)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Name(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.4 on
    """A queue or task name (or a unique key, or a time), checked (and converted) by
    ``check`` as the Python API checks it: one it refuses (empty, too long, not UTF-8) is a
    usage error (exit 2), as a bad ``--state`` is, not a failure (exit 1) after connecting.
    ``strip``: whitespace around it is ignored, as around :class:`Text` (for a queue, whose
    name cannot hold any)."""

    def __init__(self, name: str, check: Callable[[str], Any], strip: bool = False) -> None:
        self.name, self.check, self.strip = name, check, strip

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The name, or a usage error saying what is wrong with it."""
        if not isinstance(value, str):
            return value
        try:
            return self.check(value.strip() if self.strip else value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


QUEUE = Name("queue", check_queue, strip=True)
TASK = Name("task", check_task_name)  # a filter: it finds jobs SQL enqueued under any name
UNIQUE_KEY = Name("key", functools.partial(check_task_name, what="unique_key"))
RUN_AT = Name("time", _ops.parse_moment)
STATES = Choice(_ops.STATES, case_sensitive=False)
CELL_WIDTH = 60
log = logging.getLogger("pgqueue.cli")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@contextmanager
def _connect(state: State, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    # Nothing prepared: behind a transaction-mode pooler the statement psycopg prepares on its
    # sixth run (prune's batches, stats --watch) is run by name on another server connection.
    # The schema is checked first, as a worker checks it: on an older one, a command answered
    # as if it were current (or failed on a missing column), without saying to migrate.
    with psycopg.connect(state.dsn, autocommit=autocommit, prepare_threshold=None) as conn:
        _store.iso_dates(conn)
        require_schema(conn)
        yield conn


def _dumps(value: Any, indent: int | None = None) -> str:
    """JSON of ``value`` (one line without ``indent``): a datetime as ISO text, and an integer
    too long for ``int()`` (read as a Decimal) as the number it is, all its digits, as SQL
    shows it; json writes no number it cannot convert, so it goes in as a string that a
    random token names, unquoted afterwards in one pass over the text (one search of the whole
    text for each took a minute over ten jobs of 240 such integers each, and half an hour
    over the fifty `jobs list --json` shows). Before, it was a string, and so was every other
    integer of its document, which the reader had read as Decimals too."""
    token, numbers = uuid.uuid4().hex, list[str]()

    def default(item: Any) -> Any:
        if isinstance(item, datetime):
            return item.isoformat()
        if isinstance(item, Decimal) and item.is_finite():
            numbers.append(str(item))
            return f"{token}{len(numbers) - 1}"
        return str(item)

    text = json.dumps(value, default=default, indent=indent)
    if not numbers:
        return text
    return re.sub(f'"{token}([0-9]+)"', lambda found: numbers[int(found[1])], text)


def _print_json(value: Any) -> None:
    click.echo(_indented(value))


def _indented(value: Any) -> str:
    return _dumps(value, indent=2)


# Control characters (C0, DEL, C1) as escapes: a task's error text, traceback or name, which
# anyone able to enqueue can shape, must not drive the operator's terminal (retitle it, clear
# it, ring it) nor, with a tab, push a table's columns out of line. Lines stay lines in `show`.
# So are the bidirectional controls, which a terminal that applies them lets reorder the rest
# of the line: a task name holding U+202E (right-to-left override) reversed its row's columns.
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))} | {9: "\\t", 13: "\\r"}
_ESCAPES |= {c: f"\\u{c:04x}" for c in _BIDI}
_SHOWN = {c: e for c, e in _ESCAPES.items() if c != 10}


def _printable(text: str, keep_lines: bool = False) -> str:
    """``text`` with its control characters escaped (newlines kept with ``keep_lines``)."""
    return text.translate(_SHOWN if keep_lines else _ESCAPES)


def _char_width(char: str) -> int:
    """The columns a terminal gives ``char``: 2 for a wide one (CJK, most emoji), 0 for a
    combining mark or a format character (a zero-width joiner, a variation selector)."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _width(text: str) -> int:
    """The columns ``text`` takes on a terminal (``len`` counts a CJK character as one)."""
    return len(text) if text.isascii() else sum(map(_char_width, text))


def _clip(text: str, width: int) -> str:
    """The longest start of ``text`` that takes at most ``width`` columns."""
    used = 0
    for end, char in enumerate(text):
        used += _char_width(char)
        if used > width:
            return text[:end]
    return text


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.1f}"
    text = _dumps(value) if isinstance(value, list | dict) else str(value)
    raw = text.splitlines()[0] if text else text
    first = _printable(raw)
    # A table stays readable whatever an error message holds; `jobs show` has the full text.
    if _width(first) <= CELL_WIDTH and raw == text:
        return first
    return _clip(first, CELL_WIDTH - 3) + "..."


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    return _aligned([[c.upper() for c in columns], *cells])


def _aligned(lines: Sequence[Sequence[str]]) -> str:
    """``lines`` of cells as text columns, padded to the columns a terminal gives them."""
    widths = [max(_width(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(v + " " * (w - _width(v)) for v, w in zip(line, widths, strict=True)
                               ).rstrip() for line in lines)  # fmt: skip


def cron_table(statuses: Sequence[ScheduleStatus], app_given: bool = True) -> str:
    """``cron_list`` as an aligned text table (times in UTC, names' control characters
    escaped), or a line saying there are no schedules. Without ``app_given`` (the CLI
    without ``--app``) there is no code to tell whether a schedule still fires."""
    if not statuses:
        if app_given:
            return "no schedules: the app declares none (@app.periodic) and no ticks are stored"
        return "no schedules with ticks in the database"
    gone = "not in code: no longer fires" if app_given else "unknown: no app given"
    lines = [["NAME", "SCHEDULE", "LAST TICK (UTC)", "NEXT TICK (UTC)"]]
    for s in statuses:
        upcoming = _utc(s.next_tick) if s.in_code else gone
        lines.append([_printable(s.name), s.schedule, _utc(s.last_tick), upcoming])
    if app_given:  # without the code, the schedules' options are unknown: no columns
        lines[0] += ["OVERLAP", "CATCH-UP", "MISSED TICKS"]
        for line, s in zip(lines[1:], statuses, strict=True):
            line += _options_cells(s)
    return _aligned(lines)


def _options_cells(s: ScheduleStatus) -> list[str]:
    """A schedule's OVERLAP, CATCH-UP (in seconds, as ``catch_up`` takes it) and MISSED TICKS
    cells; ``-`` for each option unknown."""
    overlap = "-" if s.overlap is None else "yes" if s.overlap else "no"
    catch_up = "-" if s.catch_up is None else f"{_seconds(s.catch_up)} s"
    missed = "-" if s.coalesce is None else "latest only" if s.coalesce else "each"
    return [overlap, catch_up, missed]


def _seconds(span: timedelta) -> float:
    """``span`` in seconds: a whole number as an int (600, not 600.0)."""
    seconds = span.total_seconds()
    return int(seconds) if seconds.is_integer() else seconds


def cron_json(statuses: Sequence[ScheduleStatus], app_given: bool = True) -> str:
    """``cron_list`` as a JSON array of objects, ``catch_up`` in seconds; without
    ``app_given`` whether a schedule is in code is unknown: ``in_code`` is null. A schedule
    the code does not define has none: ``schedule`` is null (the table's ``-`` would read as
    an expression to a script)."""
    rows = [
        _ops.as_dict(s)
        | {"catch_up": None if s.catch_up is None else _seconds(s.catch_up)}
        | ({} if s.in_code else {"schedule": None})
        | ({} if app_given else {"in_code": None})
        for s in statuses
    ]
    return _indented(rows)


def _utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _show(items: Sequence[Any], columns: Sequence[str], as_json: bool, empty: str) -> None:
    rows = [item if isinstance(item, dict) else _ops.as_dict(item) for item in items]
    if as_json:
        _print_json(rows)
    elif rows:
        click.echo(_table(rows, columns))
    else:
        click.echo(empty)


@click.group()
def jobs() -> None:
    """Inspect and steer jobs."""


JOB_COLUMNS = (
    "id",
    "task",
    "queue",
    "state",
    "attempts",
    "created_at",
    "finished_at",
    "last_error",
)


@jobs.command("list")
@click.option("--state", type=STATES, help="Only jobs in this state.")
@click.option("--queue", type=QUEUE, help="Only jobs of this queue.")
@click.option("--task", type=TASK, help="Only jobs of this task.")
@click.option("--limit", type=Whole(1, BIGINT_MAX), default=50, show_default=True)
@JSON_OPTION
@click.pass_obj
@friendly_errors
def jobs_list(state: State, /, as_json: bool, limit: int, **filters: str | None) -> None:
    """List the newest jobs, newest first."""
    with _connect(state, autocommit=True) as conn:
        found = _ops.list_jobs(conn, limit=limit, **filters)
    _show(found, JOB_COLUMNS, as_json, "no jobs")


@jobs.command("show", cls=JobIdCommand)
@click.argument("job_id", type=JobId())
@JSON_OPTION
@click.pass_obj
@friendly_errors
def jobs_show(state: State, job_id: int, as_json: bool) -> None:
    """Show one job: arguments, result, and every attempt's error and traceback."""
    with _connect(state, autocommit=True) as conn:
        job = _ops.get_job(conn, job_id)
    if job is None:
        raise click.ClickException(f"there is no job {job_id}")
    if as_json:
        _print_json(_ops.as_dict(job))
    else:
        click.echo(_printable(_describe(job), keep_lines=True))


def _describe(job: Job) -> str:
    asked = ", asked to cancel" if job.cancel_requested else ""  # stopped at its next heartbeat
    lines = [
        f"job {job.id}: {job.task} on queue {job.queue}, {job.state}{asked}",
        f"  attempts      {job.attempts}/{job.max_attempts}   priority {job.priority}",
        f"  args          {_dumps(job.args)}",
        f"  kwargs        {_dumps(job.kwargs)}",
        f"  result        {_dumps(job.result)}",
    ]
    for name in ("created_at", "run_at", "started_at", "finished_at"):
        lines.append(f"  {name:<13} {_cell(getattr(job, name))}")
    if job.worker_id:
        lines.append(f"  worker        {job.worker_id}")
    if job.unique_key is not None:
        lines.append(f"  unique key    {_dumps(job.unique_key)}")
    if not isinstance(job.errors, list):
        lines.append(f"errors (not an array): {_dumps(job.errors)}")
    else:
        for error in job.errors:
            lines += _describe_error(error)
    return "\n".join(lines)


def _describe_error(error: Any) -> list[str]:
    """The lines of one entry of ``errors``. pgqueue writes objects with a text traceback;
    SQL can write anything, which is shown as it is."""
    if not isinstance(error, dict):
        return [f"errors entry (not an object): {_dumps(error)}"]
    dropped = error.get("dropped")  # entries left out before this one: errors keeps ten
    gap = [f"[... {_dumps(dropped)} entries not kept ...]"] if dropped is not None else []
    if gap and error.keys() == {"dropped"}:  # the count alone: it took a non-object's place
        return gap
    head = f"attempt {error.get('attempt')} failed at {error.get('at')}: {error.get('error')}"
    tb = error.get("traceback")
    text = tb if isinstance(tb, str) else "" if tb is None else _dumps(tb)
    return [*gap, head, *("    " + line for line in text.rstrip().splitlines())]


@jobs.command("retry", cls=JobIdCommand)
@click.argument("job_id", type=JobId(), required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@click.option("--task", type=TASK, help="With --failed: only jobs of this task.")
@click.option(
    "--batch-size",
    type=Whole(1, BIGINT_MAX),
    help="With --failed: jobs requeued per transaction, in id order.  [default: 5000]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --failed: say how many jobs it would requeue; requeue none.",
)
@click.pass_obj
@friendly_errors
def jobs_retry(state: State, job_id: int | None, all_failed: bool, task: str | None,
               batch_size: int | None, dry_run: bool) -> None:  # fmt: skip
    """Put a failed or cancelled job (or with --failed, every failed job) back in its queue."""
    if (job_id is None) == (not all_failed):
        raise click.UsageError("give either a JOB_ID or --failed")
    # Refused rather than ignored: `retry ID --task T` requeued job ID whatever its task.
    for name, value in (("--task", task), ("--batch-size", batch_size), ("--dry-run", dry_run)):
        if value not in (None, False) and not all_failed:
            raise click.UsageError(f"{name} only goes with --failed")
    if dry_run:
        _count_retryable(state, task)
        return
    if all_failed:
        _retry_failed(state, task, batch_size or RETRY_BATCH)
        return
    with _connect(state) as conn:
        _ops.retry_job(conn, job_id)  # type: ignore[arg-type]
    click.echo(f"job {job_id} requeued")


def _count_retryable(state: State, task: str | None) -> None:
    """Say how many failed jobs :func:`_retry_failed` would requeue now, as prune's dry run
    says what it would delete."""
    with _connect(state, autocommit=True) as conn:
        count = _ops.count_retryable(conn, task)
    click.echo(f"would requeue {_jobs(count, 'failed')}")
    _note("dry run: nothing was requeued", "dry_run")


RETRY_BATCH = 5000  # a batch takes about a second on a laptop: Ctrl-C waits for no more


def _retry_failed(state: State, task: str | None, batch: int) -> None:
    """Requeue the failed jobs a committed batch at a time, saying on stderr how many so far."""
    _in_batches(state, lambda conn: _ops.retry_failed_batches(conn, task, batch), _REQUEUED)


class _Words(NamedTuple):
    """What a command changing jobs a committed batch at a time says it did."""

    done: str  # "requeued"
    kind: str  # "failed": of "1 failed job", "2 failed jobs"
    again: str  # what a new run does


_REQUEUED = _Words("requeued", "failed", "run the command again to requeue the rest")
_DELETED = _Words("deleted", "finished", "run the command again to delete the rest")


def _in_batches(
    state: State, batches: Callable[[psycopg.Connection[Any]], Iterator[int]], words: _Words
) -> None:
    """Run ``batches`` (each yields how many jobs it changed, committed) on an autocommit
    connection and say how many jobs they changed, so far on stderr after each batch (a prune
    of millions said nothing for minutes); a first Ctrl-C stops after the batch running, a
    second cancels it (rolled back); on an error, say what stays done."""
    progress = _Progress()
    done, outcome, stop = 0, "interrupted", _StopAfterBatch(progress)
    try:
        with _connect(state, autocommit=True) as conn, stop(conn):
            for count in batches(conn):
                done += count
                progress.say(f"{words.done} {_jobs(done, words.kind)} so far")
                if stop.asked:
                    break
            else:
                outcome = "done"
    except KeyboardInterrupt:
        outcome = "broken"
    except Exception as exc:  # what is committed, then (friendly_errors) what went wrong
        if not (stop.cancelled and isinstance(exc, psycopg.errors.QueryCanceled)):
            progress.end()
            if done:  # none: the error alone (a missing schema, an unreachable database)
                _alert(f"{words.done} {_jobs(done, words.kind)} (they stay {words.done});"
                   f" {words.again}", "batches_stopped")  # fmt: skip
            raise
        outcome = "abandoned"
    progress.end()
    click.echo(f"{words.done} {_jobs(done, words.kind)}")
    if outcome != "done":
        _alert(_STOPPED[outcome].format(done=words.done, again=words.again), "batches_stopped")
        sys.exit(130)  # as a shell reports a command SIGINT ended


_STOPPED = {
    "interrupted": "interrupted after a batch, whose jobs stay {done}: {again}",
    "abandoned": "interrupted: the batch running was rolled back, the jobs {done} before it"
    " stay {done}; {again}",
    "broken": "interrupted while a batch ran, which may have ended before it: the jobs {done}"
    " before it stay {done}; {again}",
}


class _StopAfterBatch:
    """While entered, a first SIGINT (Ctrl-C) only sets ``asked``; a second cancels the
    statement running on the connection (``cancelled``), so that one the server ended already
    is counted, not said rolled back; a third raises ``KeyboardInterrupt`` as usual (the
    cancel went unanswered)."""

    def __init__(self, progress: _Progress) -> None:
        self.asked = self.cancelled = False
        self.previous: Any = None
        self.progress = progress

    def __call__(self, conn: psycopg.Connection[Any]) -> _StopAfterBatch:
        self.conn = conn
        return self

    def __enter__(self) -> _StopAfterBatch:
        # Only the main thread may set a handler (call_command may run in another). An ignored
        # SIGINT (`cmd &` in a script) stays ignored, and one not handled from Python (None:
        # an embedding application's) stays its own, which Python could not put back.
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous not in (signal.SIG_IGN, None):
                self.previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _interrupt(self, signum: int, frame: object) -> None:
        if self.cancelled:
            raise KeyboardInterrupt
        if self.asked:
            self.cancelled = True
            with contextlib.suppress(psycopg.Error):  # then a third Ctrl-C stops at once
                self.conn.cancel_safe()
            return
        self.asked = True
        self.progress.end()
        _alert("stopping after the batch running (Ctrl-C again to abandon it)", "batches_stopping")


def _jobs(count: int, kind: str) -> str:
    """``"1 failed job"``, ``"2 failed jobs"``: it said "requeued 1 failed jobs"."""
    return f"{count} {kind} job{'' if count == 1 else 's'}"


def _note(text: str, action: str) -> None:
    """Say ``text`` on stderr: a line, or with JSON logs an INFO record of ``action`` in the
    stream, which a log pipeline reads (a line of text there was no JSON)."""
    if json_logging():
        log.info("%s", text, extra={"action": action})
    else:
        click.echo(text, err=True)


def _alert(text: str, action: str) -> None:
    """:func:`_note` as a WARNING record."""
    if json_logging():
        log.warning("%s", text, extra={"action": action})
    else:
        click.echo(text, err=True)


PROGRESS_EVERY = 5.0  # seconds between progress lines on a pipe (one per batch: 10,000 lines)


class _Progress:
    """How many jobs so far, on stderr: on a terminal one line rewritten in place after each
    batch; on a pipe (a log) a line of its own (with JSON logs, a record: a terminal's progress
    line is no log, a pipe's line is), the first at once, then at most one every
    :data:`PROGRESS_EVERY` seconds, the count held back said by :meth:`end`, so the last line
    is the exact total."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.open = False  # a terminal's line, to end
        self.said_at: float | None = None
        self.said: str | None = None  # the last line on a pipe
        self.held: str | None = None  # the count not said yet on a pipe

    def say(self, text: str) -> None:
        """Say ``text``, or on a pipe hold it back if a line was said less than
        :data:`PROGRESS_EVERY` seconds ago; a count said already (a batch that changed no
        job) is not said again."""
        if sys.stderr.isatty():
            click.echo(f"\r{text}\x1b[K", err=True, nl=False)
            self.open = True
            return
        now = self.clock()
        if text == self.said:
            return
        if self.said_at is not None and now - self.said_at < PROGRESS_EVERY:
            self.held = text
            return
        self.said_at, self.held, self.said = now, None, text
        _note(text, "batch_committed")

    def end(self) -> None:
        """End a terminal's line, or say the count held back, before anything else is said."""
        if self.open:
            click.echo("", err=True)
            self.open = False
        if self.held is not None:
            _note(self.held, "batch_committed")
            self.said, self.held = self.held, None


@jobs.command("cancel", cls=JobIdCommand)
@click.argument("job_id", type=JobId())
@click.pass_obj
@friendly_errors
def jobs_cancel(state: State, job_id: int) -> None:
    """Cancel a queued job, or ask the worker running it to stop."""
    with _connect(state) as conn:
        outcome = _ops.cancel_job(conn, job_id)
    if outcome == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id} is running: its worker will stop it at its next heartbeat")


STATS_COLUMNS = ("queue", "queued", "scheduled", "running", "succeeded", "failed", "cancelled",
                 "oldest_runnable_age", "finished_per_minute")  # fmt: skip


@click.command()
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--interval", type=Seconds(0.1, 86400.0), default=2.0, show_default=True)
@click.option(
    "--exact",
    is_flag=True,
    help="Count the finished jobs of a big history exactly (reads all of it), not estimated.",
)
@JSON_OPTION
@click.pass_obj
@friendly_errors
def stats(state: State, watch: bool, interval: float, exact: bool, as_json: bool) -> None:
    """Jobs per queue and state, the oldest runnable job's age (s), and throughput."""
    with _connect(state, autocommit=True) as conn:
        try:
            while True:
                found = _ops.queue_stats(conn, exact=exact)
                if watch and as_json:  # a stream: one line per refresh, for line readers
                    click.echo(_dumps([_ops.as_dict(row) for row in found]))
                else:
                    if watch:
                        click.clear()
                    shown = found if as_json else [_approximate(row) for row in found]
                    _show(shown, STATS_COLUMNS, as_json, "no jobs")
                if not watch:
                    return
                sys.stdout.flush()
                time.sleep(interval)
        except KeyboardInterrupt:
            return


def _approximate(row: QueueStats) -> dict[str, Any]:
    """A row of the table, with its estimated counts marked ``~``."""
    shown = _ops.as_dict(row)
    if row.estimated:
        for name in ("succeeded", "failed", "cancelled"):
            shown[name] = f"~{shown[name]}"
    return shown


WORKER_COLUMNS = ("id", "hostname", "pid", "queues", "version", "started_at", "last_seen_ago",
                  "running")  # fmt: skip


@click.command()
@JSON_OPTION
@click.pass_obj
@friendly_errors
def workers(state: State, as_json: bool) -> None:
    """Live workers: their queues, last heartbeat (seconds ago) and jobs running."""
    with _connect(state, autocommit=True) as conn:
        _show(_ops.live_workers(conn), WORKER_COLUMNS, as_json, "no live workers")


@click.command()
@click.argument("task", type=Name("task", check_given_name))
@click.option("--args", type=Json(list), metavar="JSON", help="Positional arguments: a JSON array.")
@click.option("--kwargs", type=Json(dict), metavar="JSON", help="Keyword arguments: a JSON object.")
@click.option("--queue", type=QUEUE, help="Queue (default: the task's, else the app's default).")
@click.option("--priority", type=Whole(PRIORITY_MIN, PRIORITY_MAX), help="Higher runs first.")
@click.option(
    "--delay", type=Duration(), metavar="DURATION", help="Run after this long, e.g. 30s, 5m."
)
@click.option(
    "--run-at", type=RUN_AT, metavar="TIME",
    help="Run from this time on: ISO 8601 with its UTC offset, e.g. 2030-01-01T09:00+01:00.",
)  # fmt: skip
@click.option("--max-attempts", type=Whole(1, MAX_ATTEMPTS_LIMIT))
@click.option(
    "--unique-key", type=UNIQUE_KEY, metavar="KEY",
    help="Enqueue nothing while a queued or running job holds KEY: print that job's id.",
)  # fmt: skip
@click.pass_obj
@friendly_errors
def enqueue(state: State, task: str, args: list[Any] | None, kwargs: dict[str, Any] | None,
            queue: str | None, priority: int | None, delay: float | None,
            run_at: datetime | None, max_attempts: int | None,
            unique_key: str | None) -> None:  # fmt: skip
    """Enqueue a job of TASK (by name) and print its id."""
    if delay is not None and run_at is not None:
        raise click.UsageError("give either --delay or --run-at, not both")
    _check_registered(state, task)
    with _connect(state) as conn:
        try:
            job_id = _ops.enqueue_by_name(
                conn, state.app, task, args or [], kwargs or {}, queue=queue, priority=priority,
                delay=delay, run_at=run_at, max_attempts=max_attempts, unique_key=unique_key,
                on_conflict="raise" if unique_key is not None else None,
            )  # fmt: skip
        except TypeError as exc:  # an argument PostgreSQL cannot store (NUL, lone surrogate)
            raise click.ClickException(str(exc)) from None
        except DuplicateJob as dup:  # the id all the same, for a script; the news on stderr
            _note(f"{dup}: nothing enqueued", "enqueue_duplicate")
            job_id = dup.job_id
    click.echo(job_id)


def _check_registered(state: State, task: str) -> None:
    """With an app given, ``task`` must be one of its tasks: a misspelt name would make a job
    that workers fail, attempt after attempt, as an unknown task."""
    if not state.app_path or state.app.get_task(task) is not None:
        return
    # The function's own name, as a task without name= is registered under module.qualname.
    # Several modules may each register one: name them all, not the first registered.
    close = sorted(name for name in state.app.tasks if name.endswith(f".{task}"))
    close = close or difflib.get_close_matches(task, state.app.tasks, n=1)
    names = ", ".join(map(repr, close))
    hint = f" (did you mean {'one of ' if len(close) > 1 else ''}{names}?)" if close else ""
    # Unless a caller such as manage.py pgqueue supplied the app, where no --app is to drop.
    source = click.get_current_context().find_root().get_parameter_source("app_path")
    if source is not ParameterSource.DEFAULT_MAP:
        hint += "; without --app, a task is enqueued by any name"
    raise click.ClickException(f"the app {state.app_path!r} registers no task {task!r}{hint}")


@click.command()
@click.option(
    "--older-than",
    type=Duration(unit_required=True),
    metavar="DURATION",
    help="Age, with its unit, e.g. 12h, 7d (default: the --app's retention).",
)
@click.option(
    "--state",
    "states",
    type=Choice(["succeeded", "failed", "cancelled"], case_sensitive=False),
    multiple=True,
    help="Only this state (repeatable; default: all finished).",
)
@click.option(
    "--dry-run", is_flag=True, help="Say how many jobs it would delete, per state; delete none."
)
@click.pass_obj
@friendly_errors
def prune(state: State, older_than: float | None, states: tuple[str, ...], dry_run: bool) -> None:
    """Delete finished jobs older than --older-than (or than the app's retention), in batches."""
    if older_than is None and not state.app_path:  # the default retention may be shorter
        raise click.ClickException(f"{NO_APP} to apply its retention, or --older-than DURATION")
    kept: list[str] = []  # states asked for that the app keeps forever (retention None)
    if older_than is None:
        ages = {s: a for s, a in state.app.retention.items() if not states or s in states}
        kept = sorted(set(states or TERMINAL_STATES) - set(ages))
    else:
        ages = dict.fromkeys(sorted(states or TERMINAL_STATES), older_than)
    if dry_run:
        _count_prunable(state, ages)
    else:
        _prune(state, ages)
    if kept:  # else "deleted 0" alone reads as though none of their jobs were old enough
        _alert(
            f"the app {state.app_path!r} keeps {' and '.join(kept)} jobs forever (its retention"
            " is None): pass --older-than DURATION to prune them", "retention_forever",
        )  # fmt: skip


def _count_prunable(state: State, ages: dict[str, float]) -> None:
    """Say how many jobs :func:`_prune` would delete now, per state."""
    with _connect(state, autocommit=True) as conn:
        counts = _ops.count_prunable(conn, ages)
    per_state = ", ".join(f"{name} {counts[name]}" for name in sorted(counts))
    click.echo(f"would delete {_jobs(sum(counts.values()), 'finished')}" +
               (f" ({per_state})" if per_state else ""))  # fmt: skip
    _note("dry run: nothing was deleted", "dry_run")


def _prune(state: State, ages: dict[str, float]) -> None:
    """Delete the jobs past ``ages`` a committed batch at a time (see :func:`_in_batches`)."""
    _in_batches(state, lambda conn: _ops.prune_batches(conn, ages), _DELETED)


@click.command()
@click.option(
    "--worker",
    "worker_name",
    type=Text(),  # as the worker's --name: "$PGQUEUE_WORKER_NAME" is its name, newline and all
    metavar="NAME",
    help="Also require this worker's heartbeat.",
)
@click.pass_obj
@friendly_errors
def healthcheck(state: State, worker_name: str | None) -> None:
    """Exit 0 when the database answers, the schema is current (and the worker is alive)."""
    problem = _ops.health_problem(state.dsn, worker_name)
    if problem:
        raise click.ClickException(problem)
    click.echo("ok")


@click.group()
def cron() -> None:
    """Periodic tasks (schedules declared with @app.periodic)."""


@cron.command("list")
@JSON_OPTION
@click.pass_obj
@friendly_errors
def cron_list(state: State, as_json: bool) -> None:
    """Show each schedule with its last tick (from the database) and its next tick."""
    from pgqueue._periodic import cron_list_on

    show = cron_json if as_json else cron_table
    with _connect(state, autocommit=True) as conn:
        statuses = cron_list_on(state.app, conn)
    click.echo(show(statuses, app_given=bool(state.app_path)))
    if not state.app_path:
        _note(
            f"{NO_APP} to list the schedules its code defines, with their next ticks; shown"
            " here are only the schedules with ticks in the database",
            "cron_no_app",
        )


def register(group: click.Group) -> None:
    """Attach the operations commands to the ``pgqueue`` command group."""
    for command in (jobs, stats, workers, enqueue, prune, healthcheck, cron):
        group.add_command(command)
