"""The exceptions pgqueue raises, and the ones a task raises to steer its own job."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg

from pgqueue._retry import check_delay

# The most characters of an error message or traceback stored in a job's row (each of
# last_error, and error and traceback of each attempt in errors), and of a message in a
# log line: a task's message can be any size, and was stored and logged whole.
TEXT_LIMIT = 64 * 1024
LOG_LIMIT = 4 * 1024
_MARK_ROOM = 64  # the longest marker clipped() writes, digits of any str's length included


def clipped(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters; else its beginning and its end (a
    traceback's end names the error) around a marker saying how many characters were cut,
    ``limit`` characters in all at most."""
    if len(text) <= limit:
        return text
    kept = limit - _MARK_ROOM
    head = kept - kept // 2
    return f"{text[:head]}\n[... {len(text) - kept} characters cut ...]\n{text[-(kept // 2) :]}"


# What redact sees beyond each end of what clipped_through() keeps of a long text: a secret
# up to this long across the point where its text is cut is either seen whole or not kept.
_REDACT_MARGIN = 64 * 1024


class NotText(Exception):
    """The app's redact returned something that is not a str (private: its type is the
    message, the executor withholds the text)."""


def clipped_through(text: str, redact: Callable[[str], object], limit: int = TEXT_LIMIT) -> str:
    """``clipped(redact(text), limit)``, but redact sees only what is kept and a margin
    around it: a 50 MB message took a plain regex seconds (its traceback, as long, as many).
    A secret across a cut is seen partly in its piece, at that piece's cut end: the margin,
    longer than such a secret, is dropped after redact has seen the piece, however much
    redact lengthened or shortened the rest. Raises what redact raises, and ``NotText``."""
    if len(text) <= limit + 2 * _REDACT_MARGIN:
        return clipped(_text(redact(text)), limit)
    kept = limit - _MARK_ROOM
    head_size, tail_size = kept - kept // 2, kept // 2
    head = _text(redact(text[: head_size + _REDACT_MARGIN]))
    tail = _text(redact(text[-(tail_size + _REDACT_MARGIN) :]))
    head = head[: max(0, min(head_size, len(head) - _REDACT_MARGIN))]
    tail = tail[max(_REDACT_MARGIN, len(tail) - tail_size) :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters cut ...]\n{tail}"


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise NotText(type(value).__qualname__)
    return value


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (a database error's detail follows on others), or
    its type's name when it has none; at most ``LOG_LIMIT`` characters."""
    text = str(exc).strip()
    return clipped(text.splitlines()[0], LOG_LIMIT) if text else type(exc).__name__


def exception_text(exc: BaseException, limit: int | None = TEXT_LIMIT) -> str:
    """``str(exc)``, at most ``limit`` characters (``None``: whole, for a text that is cut
    after the app's ``redact`` has seen it), or a placeholder when the exception's own
    ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception as broken:
        return f"<str() of the exception raised {type(broken).__qualname__}>"
    return text if limit is None else clipped(text, limit)


def error_line(exc: BaseException) -> str:
    """``Type: first line`` of ``exc``: the error, as a log line without its traceback says it."""
    return f"{type(exc).__name__}: {first_line(exc)}"


# The OperationalErrors that mean the connection failed or was ended: psycopg's own (no
# SQLSTATE), class 08, and the server's ending it: shutdowns (57P01-57P03), its database
# dropped (57P04), idle_session_timeout (57P05). Others are errors of a statement: a lock or
# statement timeout (LockNotAvailable, QueryCanceled).
_UNREACHABLE = ("08", "57P01", "57P02", "57P03", "57P04", "57P05")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or the connection was lost,
    rather than that a statement failed."""
    return isinstance(exc, OSError) or (
        isinstance(exc, psycopg.OperationalError)
        and (exc.sqlstate is None or exc.sqlstate.startswith(_UNREACHABLE))
    )


class PgQueueError(Exception):
    """Base class of every error pgqueue raises on its own account."""


class ConfigurationError(PgQueueError):
    """pgqueue was set up wrongly: no DSN configured or one libpq cannot parse, a worker name
    a live worker on this host holds, metrics without ``prometheus_client`` installed."""


class NoDatabaseError(ConfigurationError):
    """No DSN is configured at all (private: the CLI says it again naming its ``--dsn``)."""


class ResultUnsent(Exception):
    """A process task returned a value its child process could not send back (private: the
    job ends as with a value JSON cannot hold, not as a failure to retry)."""

    why = "could not be sent back from its child process"  # the job's error says so


class SchemaError(PgQueueError):
    """The database schema is missing or older than this version of pgqueue needs."""


class UnknownTaskError(PgQueueError):
    """A job names a task that is not registered in this process."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown task {name!r}")
        self.name = name


class Retry(Exception):
    """Raise from a task to run it again after ``delay`` (seconds, or a ``timedelta``) without
    counting a failure."""

    def __init__(self, delay: float | timedelta = 0.0) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        self.delay = check_delay(seconds, "Retry delay")
        super().__init__(f"retry in {seconds} s")

    def __reduce__(self) -> tuple[type[Retry], tuple[float]]:
        # Process tasks raise it in a child: it must cross the pipe as itself.
        return (Retry, (self.delay,))


class Cancel(Exception):
    """Raise from a task to end its job as ``cancelled`` with no further attempts."""


def leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    """The exceptions ``group`` holds, those of the groups nested in it included."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc


for _cls in (PgQueueError, ConfigurationError, SchemaError, UnknownTaskError, Retry, Cancel):
    _cls.__module__ = "pgqueue"


class DuplicateJob(PgQueueError):
    """An enqueue with ``on_conflict="raise"`` met an active job holding the same unique key.

    Nothing was inserted and the caller's transaction is still usable.
    """

    def __init__(self, unique_key: str, job_id: int) -> None:
        super().__init__(
            f"job {job_id} is already queued or running with unique key {unique_key!r}"
        )
        self.unique_key = unique_key
        self.job_id = job_id


DuplicateJob.__module__ = "pgqueue"


class UniqueKeyContended(PgQueueError, psycopg.errors.SerializationFailure):
    """An enqueue with a unique key gave up: each of its tries met a job holding the key, then
    found it finished, as jobs with this key kept being created and finished at that moment.

    Nothing was inserted. It is a :class:`psycopg.errors.SerializationFailure` (SQLSTATE
    40001), as ``pgqueue.enqueue()``'s error in SQL is, so that code which runs a transaction
    again on a serialization failure does so for this one too. The caller's transaction is
    still usable: running it again is the remedy.
    """

    def __init__(self, unique_key: str, tries: int) -> None:
        super().__init__(
            f"unique key {unique_key!r} kept changing hands; gave up enqueueing after {tries} tries"
        )
        self.unique_key = unique_key


UniqueKeyContended.__module__ = "pgqueue"


class JobStateError(PgQueueError):
    """A job cannot be steered that way: it does not exist, or it is in the wrong state."""


JobStateError.__module__ = "pgqueue"


class WorkerFailed(PgQueueError):
    """A loop the worker cannot be correct without (the claimer, the heartbeat, the acker)
    raised something other than a database or network error: the worker stopped claiming,
    shut down and raised this, the loop's error as its ``__cause__``. Restart the worker."""


WorkerFailed.__module__ = "pgqueue"
