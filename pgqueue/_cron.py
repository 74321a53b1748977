"""Cron tick maths: pure functions over croniter, with no I/O and no clock of their own.

Every function takes the moments it reasons about as arguments (the scheduler passes the
database's ``now()``) and returns aware datetimes in UTC, so that a tick has one spelling
whatever the schedule's time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from heapq import heappop, heappush
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from croniter import croniter

# Enumerating ticks that are skipped only serves a log line: stop counting there.
MAX_COUNTED = 1000

# croniter's random field, R, R(0-30) or R/5: a field that starts with R (month and day names
# do not). Its hashed field, H, is spelled alike.
_RANDOM = re.compile(r"[Rr](?:$|[(/])")
_HASHED = re.compile(r"[Hh](?:$|[(/])")
# A weekday number (not the n of "#n" nor a step): Quartz counts them from 1, cron from 0.
_NUMBER = re.compile(r"(?<![#/\d])\d")
_WEEKDAY_NUMBERS = (
    " (weekday numbers are read as cron reads them, 0 or 7 (Sunday) to 6 (Saturday), not as"
    " Quartz does, 1 (Sunday) to 7 (Saturday): check them, or write names such as MON-FRI)"
)

ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


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
    if len(fields) not in (5, 6) and not (len(fields) == 1 and fields[0].lower() in ALIASES):
        aliases = ", ".join(ALIASES)
        raise ValueError(
            f"invalid cron expression {expression!r}: use 5 fields (minute hour day month"
            f" weekday), 6 with seconds last, or one of {aliases}"
        )
    if (hint := _seconds_first(fields)) is not None:
        raise ValueError(
            f"invalid cron expression {expression!r}: pgqueue reads a 6th field as the seconds"
            f" (seconds last), not the first as Spring and Quartz do; written with the seconds"
            f" first, it is {' '.join([*fields[1:], fields[0]])!r} here{hint}"
        )
    if any(_HASHED.match(f) for f in fields):
        raise ValueError(
            f"invalid cron expression {expression!r}: H (a hashed value) is not supported:"
            " write the value"
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


def _seconds_first(fields: list[str]) -> str | None:
    """Why six ``fields`` look written with the seconds first, or None: a ``?`` where
    Quartz puts it (day or weekday, month and seconds here), or seconds of ``*`` under
    minutes that are not (Spring's ``0 */5 * * * *``, every second of minute 0 of every
    fifth hour here, rather than every 5 minutes at second 0)."""
    if len(fields) != 6:
        return None
    if "?" in fields[3] or "?" in fields[5]:
        return _WEEKDAY_NUMBERS if _NUMBER.search(fields[5]) else ""
    if fields[5] == "*" and fields[0] != "*":
        return (
            " (as written, a seconds field of * fires every second of the minutes its first"
            " field names: write 0-59 as the seconds for that)"
        )
    return None


def check_timezone(name: str) -> ZoneInfo:
    """The zone called ``name`` (an IANA name such as ``"Europe/Berlin"``), else ``ValueError``."""
    if isinstance(name, str) and name.rpartition("/")[2] == "localtime":
        # A link to /etc/localtime in some tz data (Debian's): workers on hosts in two zones
        # would compute two instants for each tick, and fire it twice.
        raise ValueError(
            f"time zone {name!r} is each host's own, and workers could disagree on it: use an"
            " IANA name such as 'Europe/Berlin' or 'UTC'"
        )
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
    return next(_ticks_after(spec, _utc(after)))


def normalize(spec: CronSpec, moment: datetime) -> datetime:
    """The tick ``moment`` belongs to: the latest tick at or before it, in UTC.

    Idempotent: a tick normalises to itself, which is what makes it usable as a key.
    """
    moment = _utc(moment)
    wall = _croniter(spec.expression, _wall(moment, spec.zone)).get_prev(datetime)
    # The earliest instant of an earlier wall time is a tick at or before ``moment``.
    tick = _instants(wall, spec.zone)[0][0]
    for following in _ticks_after(spec, tick):
        if following > moment:
            break
        tick = following
    return tick


def ticks_between(
    spec: CronSpec, start: datetime, end: datetime, limit: int | None = None
) -> list[datetime]:
    """The ticks in ``(start, end]``, oldest first, at most ``limit`` of them."""
    end = _utc(end)
    ticks: list[datetime] = []
    if limit == 0:
        return ticks
    for tick in _ticks_after(spec, _utc(start)):
        if tick > end:
            break
        ticks.append(tick)
        if len(ticks) == limit:
            break
    return ticks


def _ticks_after(spec: CronSpec, after: datetime) -> Iterator[datetime]:
    """The ticks strictly after ``after`` (UTC), oldest first, each once.

    croniter walks the wall-clock times (naive, so it never sees a DST change) and each wall
    time becomes its instants: the end of the gap for a time that does not exist; for a
    repeated time its first occurrence, and its second too when the hours are a wildcard.
    Instants do not follow wall order inside a fold, but the earliest instant of a wall time
    never decreases, so the later occurrences wait in a heap until no wall time can come
    before them.
    """
    zone = spec.zone
    walls = _croniter(spec.expression, _first_wall(after, zone))
    repeats = every_nth_hour(walls.expanded[1])
    pending: list[datetime] = []
    last = after
    while True:
        wall = walls.get_next(datetime)
        (first, *later), gap = _instants(wall, zone)
        while pending and pending[0] <= first:
            tick = heappop(pending)
            if tick > last:
                yield tick
                last = tick
        if first > last:
            yield first
            last = first
        for tick in later if repeats else ():
            heappush(pending, tick)
        if gap:  # every wall time up to the end of the gap would give the same instant
            walls.set_current(_wall(first, zone))


def every_nth_hour(hours: Sequence[int | str]) -> bool:
    """Whether croniter's expanded hour field is a wildcard: every hour (``*``, ``0-23``) or
    every n-th from midnight (``*/n``, however spelled), as opposed to hours of their own.

    Such a schedule is an interval: it fires in both occurrences of a repeated hour rather than
    pause, as cron runs its wildcard jobs; one at hours of its own (a nightly job) fires once.
    """
    step = hours[1] if len(hours) > 1 else None
    if isinstance(step, int):
        return list(hours) == list(range(0, 24, step))
    return list(hours) == ["*"]


def _instants(wall: datetime, zone: ZoneInfo) -> tuple[list[datetime], bool]:
    """The instants (UTC) at which the clocks of ``zone`` read ``wall``, and whether ``wall``
    falls in a gap: two for a repeated time, in order; the end of the gap for a skipped one."""
    earlier = wall.replace(tzinfo=zone)
    before, after = _offset(earlier), _offset(earlier.replace(fold=1))
    base = wall.replace(tzinfo=UTC)
    if before == after:
        return [base - before], False
    if before > after:
        return [base - before, base - after], False
    return [_gap_end(base - after, base - before, zone)], True


def _gap_end(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant with the offset of ``high``, found between ``low`` (before the change)
    and ``high``: tz data changes offsets on whole seconds."""
    offset = _offset(high.astimezone(zone))
    while high - low > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if _offset(middle.astimezone(zone)) == offset:
            high = middle
        else:
            low = middle
    return high


def _first_wall(after: datetime, zone: ZoneInfo) -> datetime:
    """The wall time to start from so that no tick after ``after`` is missed.

    In the first occurrence of a repeated time, the second occurrence of the times already
    passed is still to come: start that much earlier.
    """
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None)
    if not local.fold:
        wall -= _offset(local) - _offset(local.replace(fold=1))
    return wall


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


@dataclass(frozen=True, slots=True)
class Due:
    """What a scheduler pass should do for one schedule.

    ``due`` are the ticks to enqueue; ``skipped`` the first ticks (at most ``MAX_COUNTED``) that
    fell out of the catch-up window, ``skipped_last`` the latest of those; ``cursor`` is where
    the next pass starts (ticks strictly after it); ``more`` whether ticks after ``due`` are
    due too (the limit stopped it), so that ``due[-1]`` is not the latest due tick.
    """

    due: list[datetime]
    skipped: list[datetime]
    skipped_last: datetime | None
    cursor: datetime
    more: bool = False

    def coalesced_through(self, coalesce: bool) -> datetime | None:
        """The latest of ``due`` that gets no job, or None: with ``coalesce``, every tick
        before the latest due tick (all of ``due`` while more are due), else none."""
        if not coalesce or not self.due:
            return None
        if self.more:
            return self.due[-1]
        return self.due[-2] if len(self.due) > 1 else None


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
    due = ticks_between(spec, cursor, now, limit + 1)
    more = len(due) > limit
    del due[limit:]
    return Due(due, skipped, skipped_last, due[-1] if more else now, more)


def _last_before(spec: CronSpec, moment: datetime) -> datetime:
    """The latest tick strictly before ``moment``."""
    tick = normalize(spec, moment)
    return tick if tick < moment else normalize(spec, moment - timedelta(microseconds=1))
