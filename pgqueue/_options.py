"""Job options: what a task declares and what ``using(...)`` overrides, validated once."""

from __future__ import annotations

import dataclasses
import operator
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pgqueue._retry import RetryPolicy, check_delay, is_finite, is_number, shown

Executor = Literal["auto", "async", "thread", "process"]
OnConflict = Literal["existing", "raise"]

QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # fullmatch: "$" would allow a final "\n"
PRIORITY_MIN, PRIORITY_MAX = -32768, 32767
MAX_ATTEMPTS_LIMIT = 1000
# The most jobs a worker runs at once per queue (River's bound too): a figure past it was
# taken, and a backlog then claimed whole, each job a thread (sync tasks; a host runs some
# 32,000), a task and a lease held in memory and extended by one heartbeat statement.
MAX_CONCURRENCY = 10_000
MAX_NAME_LENGTH = 255
# The moments every reader can load: Python's datetimes end with the years 1 and 9999 in the
# reading session's time zone, which may be most of a day away from UTC.
RUN_AT_MIN = datetime(1, 1, 2, tzinfo=UTC)
RUN_AT_MAX = datetime(9999, 12, 31, tzinfo=UTC)


def check_queue(queue: str) -> str:
    """Return ``queue`` if it is a valid queue name, else raise ``ValueError``."""
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise ValueError(
            f"invalid queue name {queue!r}: use 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return queue


def check_task_name(name: str, what: str = "task name") -> str:
    """Return ``name`` if it is a usable task name (or ``what``), else raise ``ValueError``."""
    if not isinstance(name, str):  # unique_key=order.id, say: not a length to fix
        raise ValueError(f"invalid {what} {name!r}: a {what} is a str, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValueError(f"invalid {what} {name!r}: use 1-{MAX_NAME_LENGTH} characters")
    if "\x00" in name:  # PostgreSQL's text cannot hold it
        raise ValueError(f"invalid {what} {name!r}: it holds a NUL character")
    if not name.isascii():
        try:
            name.encode()
        except UnicodeEncodeError:  # a lone surrogate: psycopg would fail to send it
            raise ValueError(f"invalid {what} {name!r}: it is not valid UTF-8") from None
    return name


def check_given_name(name: str, what: str = "task name") -> str:
    """:func:`check_task_name`, and not blank nor padded with whitespace: for a name being
    given (a task, schedule or worker registered), where " send" is a typo that would never
    match "send". Filters keep to :func:`check_task_name`, so that jobs SQL enqueued under
    such a name can still be found."""
    if check_task_name(name, what) != name.strip():
        raise ValueError(f"invalid {what} {name!r}: it is blank, or begins or ends with whitespace")
    return name


BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1

# Numbers as text (the CLI's options, a worker's queue list), once stripped of whitespace
# around them as int() and float() are: ASCII digits with an optional leading "-" (and, for a
# decimal, a point and an exponent). int() and float() also read "1_0", "+5" and other
# scripts' digits ("١٢"), more likely a typo than meant.
WHOLE_NUMBER = re.compile(r"-?[0-9]+")
# The point opens the fraction: with "[0-9]+\.?[0-9]*", a long run of digits that then
# failed was split every way, in quadratic time (minutes for 100,000 digits).
DECIMAL_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def too_long_a_number(digits: str) -> bool:
    """Whether ``int()`` refuses the whole number ``digits`` for its length (more than 4,300
    digits, by default): it is out of every range, which its error, "Exceeds the limit ...;
    use sys.set_int_max_str_digits()", does not say."""
    limit = sys.get_int_max_str_digits()
    return bool(limit) and len(digits.lstrip("-")) > limit


def check_job_id(job_id: int) -> int:
    """Return ``job_id`` as an int if some job could have it, else raise ``ValueError``: a
    bool, a str or an int beyond bigint would fail in SQL and abort the caller's transaction."""
    try:
        value = operator.index(job_id)  # an int, or an int-like such as numpy.int64
    except TypeError:
        value = None
    if isinstance(job_id, bool) or value is None or not BIGINT_MIN <= value <= BIGINT_MAX:
        raise ValueError(
            f"invalid job id {shown(job_id)}: a job id is an int from {BIGINT_MIN} to {BIGINT_MAX}"
        )
    return value


def check_count(value: Any, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) from ``minimum`` to ``maximum``, else
    ``ValueError`` naming ``what``."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= minimum
        and (maximum is None or value <= maximum)
    ):
        return value
    allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    raise ValueError(f"{what} must be an int {allowed}, got {shown(value)}")


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    """``value`` in seconds, not yet a float: the callers' range checks compare it as given,
    so that an int past every float (``10**400``) fails them, not float() (OverflowError)."""
    if value is None:
        return None
    if not (is_number(value) or isinstance(value, timedelta)):
        raise ValueError(f"{what} must be a number of seconds or a timedelta, got {value!r}")
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"{what} must be a number of seconds >= 0, got {shown(value)}")
    return seconds


def _delay(value: float | timedelta | None) -> float | None:
    seconds = _seconds(value, "delay")
    return None if seconds is None else check_delay(seconds, "delay")


def _timeout(value: float | timedelta) -> float:
    seconds = _seconds(value, "timeout")
    if seconds is None or not (seconds > 0 and is_finite(seconds)):
        raise ValueError(
            "timeout must be a finite number of seconds > 0 (None for no timeout),"
            f" got {shown(value)}"
        )
    return float(seconds)


def check_run_at(run_at: datetime) -> datetime:
    """Return ``run_at`` if it is a timezone-aware datetime a job can have, else raise
    ``ValueError``."""
    # Not a string: SQL would take 'infinity'. Within these bounds psycopg reads the value back
    # as a datetime in any session time zone; beyond them get_job and list_jobs would fail.
    if not isinstance(run_at, datetime) or run_at.utcoffset() is None:
        raise ValueError(
            "run_at must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)),"
            f" got {run_at!r}"
        )
    if not RUN_AT_MIN <= run_at <= RUN_AT_MAX:
        raise ValueError(
            f"run_at must be from {RUN_AT_MIN.isoformat()} to {RUN_AT_MAX.isoformat()},"
            f" got {run_at!r}"
        )
    return run_at


def _check_callables(options: JobOptions) -> None:
    if not isinstance(options.retry, RetryPolicy):
        raise ValueError(f"retry must be a RetryPolicy, got {options.retry!r}")
    if not isinstance(options.store_result, bool):
        raise ValueError(f"store_result must be True or False, got {options.store_result!r}")
    for name in ("on_success", "on_failure"):
        value = getattr(options, name)
        if value is not None and not callable(value):
            raise ValueError(f"{name} must be a function (or None), got {value!r}")


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Everything about a job except its arguments. Immutable; ``merge`` makes a new one."""

    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3
    delay: float | None = None
    run_at: datetime | None = None
    timeout: float | None = None
    unique_key: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    executor: Executor = "auto"
    meta: dict[str, Any] | None = None
    on_conflict: OnConflict = "existing"
    store_result: bool = True
    on_success: Callable[[Any], Any] | None = None
    on_failure: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        check_queue(self.queue)
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an int, got {self.priority!r}")
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise ValueError(
                f"priority {shown(self.priority)} is out of range:"
                f" use {PRIORITY_MIN}..{PRIORITY_MAX} (higher runs first)"
            )
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
        if isinstance(self.delay, timedelta) or self.delay is not None:
            object.__setattr__(self, "delay", _delay(self.delay))
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give either delay or run_at, not both")
        if self.run_at is not None:
            check_run_at(self.run_at)
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _timeout(self.timeout))
        if self.unique_key is not None:
            check_task_name(self.unique_key, "unique_key")
        if self.on_conflict not in ("existing", "raise"):
            raise ValueError(f"on_conflict must be 'existing' or 'raise', got {self.on_conflict!r}")
        if self.executor not in ("auto", "async", "thread", "process"):
            raise ValueError("executor must be one of 'auto', 'async', 'thread', 'process'")
        _check_callables(self)

    def merge(self, **changes: Any) -> JobOptions:
        """A copy with ``changes`` applied (``None`` values are ignored), validated again."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown job option(s): {', '.join(sorted(unknown))}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if "delay" in changes and "run_at" in changes:
            raise ValueError("give either delay or run_at, not both")
        if "delay" in changes:
            changes["run_at"] = None
        elif "run_at" in changes:
            changes["delay"] = None
        return dataclasses.replace(self, **changes)
