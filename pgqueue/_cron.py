"""Cron tick maths: pure functions over croniter, with no I/O and no clock of their own.

Every function takes the moments it reasons about as arguments (the scheduler passes the
database's ``now()``) and returns aware datetimes in UTC, so that a tick has one spelling
whatever the schedule's time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from croniter import croniter

# Enumerating ticks that are skipped only serves a log line: stop counting there.
MAX_COUNTED = 1000

# croniter's random field, R, R(0-30) or R/5: a field that starts with R (month and day names
# do not).
_RANDOM = re.compile(r"[Rr](?:$|[(/])")


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A validated cron expression and the time zone its fields are read in."""

    expression: str
    timezone: str = "UTC"
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression", check_expression(self.expression))
        object.__setattr__(self, "zone", check_timezone(self.timezone))

    def __str__(self) -> str:
        return f"{self.expression} ({self.timezone})"

    @property
    def has_seconds(self) -> bool:
        """Whether the expression has a sixth field, the seconds."""
        return len(self.expression.split()) == 6


def check_expression(expression: str) -> str:
    """Return ``expression`` if croniter accepts it with 5 fields (6 with seconds), else raise."""
    if not isinstance(expression, str):
        raise ValueError(f"invalid cron expression {expression!r}: expected a string")
    fields = expression.split()
    if len(fields) not in (5, 6) and not (len(fields) == 1 and fields[0].startswith("@")):
        raise ValueError(
            f"invalid cron expression {expression!r}: use 5 fields"
            " (minute hour day month weekday), or 6 with seconds last"
        )
    if any(_RANDOM.match(f) for f in fields):
        raise ValueError(
            f"invalid cron expression {expression!r}: croniter draws R (a random value) anew in"
            " every process, so each worker would fire at a time of its own; write the value"
        )
    try:
        ticks = _croniter(expression)
    except (ValueError, KeyError) as exc:  # croniter's errors derive from ValueError
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None
    try:  # a day that never comes (0 0 30 2 *) would stop every schedule of the worker
        ticks.get_next(datetime)
    except ValueError as exc:  # CroniterBadDateError, after 50 years without a match
        raise ValueError(f"cron expression {expression!r} matches no date: {exc}") from None
    return " ".join(fields)


def check_timezone(name: str) -> ZoneInfo:
    """The zone called ``name`` (an IANA name such as ``"Europe/Berlin"``), else ``ValueError``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _croniter(expression: str, start: datetime | None = None) -> croniter:
    # Imported on first use: a worker whose app has no periodic tasks never needs croniter
    # (and dateutil beneath it): about 5 % of the import of the CLI, 14 of 255 ms on a slow host.
    from croniter import croniter

    return croniter(expression, start)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} is naive: tick maths needs timezone-aware datetimes")
    return moment.astimezone(UTC)


def next_tick(spec: CronSpec, after: datetime) -> datetime:
    """The first tick strictly after ``after``, in UTC."""
    after = _utc(after)
    ticks = _croniter(spec.expression, after.astimezone(spec.zone))
    tick = _utc(ticks.get_next(datetime))
    # Belt and braces around DST folds: a tick is always later than the moment asked about.
    while tick <= after:
        tick = _utc(ticks.get_next(datetime))
    return tick


def normalize(spec: CronSpec, moment: datetime) -> datetime:
    """The tick ``moment`` belongs to: the latest tick at or before it, in UTC.

    Idempotent: a tick normalises to itself, which is what makes it usable as a key.
    """
    moment = _utc(moment)
    tick = _utc(_croniter(spec.expression, moment.astimezone(spec.zone)).get_prev(datetime))
    following = next_tick(spec, tick)
    while following <= moment:
        tick, following = following, next_tick(spec, following)
    return tick


def ticks_between(
    spec: CronSpec, start: datetime, end: datetime, limit: int | None = None
) -> list[datetime]:
    """The ticks in ``(start, end]``, oldest first, at most ``limit`` of them."""
    ticks: list[datetime] = []
    tick = next_tick(spec, start)
    while tick <= end and (limit is None or len(ticks) < limit):
        ticks.append(tick)
        tick = next_tick(spec, tick)
    return ticks


@dataclass(frozen=True, slots=True)
class Due:
    """What a scheduler pass should do for one schedule.

    ``due`` are the ticks to enqueue; ``skipped`` the first ticks (at most ``MAX_COUNTED``) that
    fell out of the catch-up window, ``skipped_last`` the latest of those; ``cursor`` is where
    the next pass starts (ticks strictly after it).
    """

    due: list[datetime]
    skipped: list[datetime]
    skipped_last: datetime | None
    cursor: datetime


def due_ticks(
    spec: CronSpec, cursor: datetime, now: datetime, catch_up: timedelta, limit: int = 100
) -> Due:
    """The ticks after ``cursor`` up to ``now``: those within ``catch_up`` of ``now`` are due.

    Older ones are skipped. At most ``limit`` ticks are due per call; the returned cursor then
    stops at the last of them so that the next call goes on from there.
    """
    cursor, now = _utc(cursor), _utc(now)
    horizon = now - catch_up
    skipped: list[datetime] = []
    skipped_last = None
    if cursor < horizon:
        last = _last_before(spec, horizon)
        if last > cursor:
            skipped = ticks_between(spec, cursor, last, MAX_COUNTED)
            skipped_last = cursor = last
    due = ticks_between(spec, cursor, now, limit)
    next_cursor = due[-1] if len(due) == limit else now
    return Due(due, skipped, skipped_last, next_cursor)


def _last_before(spec: CronSpec, moment: datetime) -> datetime:
    """The latest tick strictly before ``moment``."""
    tick = normalize(spec, moment)
    return tick if tick < moment else normalize(spec, moment - timedelta(microseconds=1))
