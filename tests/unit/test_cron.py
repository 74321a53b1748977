"""Tick maths: next tick, normalisation, catch-up windows, and time zones with DST."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from importlib import metadata
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from pgqueue._cron import (
    CronSpec,
    due_ticks,
    every_nth_hour,
    next_tick,
    normalize,
    ticks_between,
)

EXPRESSIONS = [
    "* * * * *", "*/5 * * * *", "0 * * * *", "30 2 * * *", "0 2 * * *", "15,45 1-3 * * *",
    "0 0 1 * *", "0 9 * * 1-5", "* * * * * */10", "*/7 * * * * 30", "59 23 31 12 *",
]  # fmt: skip
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]

specs = st.builds(CronSpec, st.sampled_from(EXPRESSIONS), st.sampled_from(ZONES))
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


def utc(*args: int) -> datetime:
    """A UTC datetime."""
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@settings(deadline=None)
@given(specs, moments)
def test_next_tick_is_strictly_after_the_moment(spec: CronSpec, now: datetime) -> None:
    """Whatever the zone and moment, the next tick lies in the future."""
    assert next_tick(spec, now) > now


@settings(deadline=None)
@given(specs, moments)
def test_normalize_is_idempotent_and_brackets_the_moment(spec: CronSpec, now: datetime) -> None:
    """A moment normalises to the latest tick at or before it, and a tick to itself."""
    tick = normalize(spec, now)
    assert normalize(spec, tick) == tick
    assert tick <= now < next_tick(spec, tick)


DST_CHANGES = {
    "Europe/Berlin": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)],
    "America/New_York": [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)],
}


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(EXPRESSIONS[:7]),
    st.sampled_from(sorted(DST_CHANGES)),
    st.integers(0, 1),
    st.integers(-24 * 60, 0),
)
def test_no_tick_is_produced_twice_across_a_dst_change(
    expression: str, zone: str, which: int, offset_minutes: int
) -> None:
    """Across a DST change, the ticks are strictly increasing: no instant comes twice."""
    spec = CronSpec(expression, zone)
    start = DST_CHANGES[zone][which] + timedelta(minutes=offset_minutes)
    ticks = ticks_between(spec, start, start + timedelta(days=2))
    assert ticks == sorted(set(ticks))
    assert all(normalize(spec, t) == t for t in ticks[::17])


def in_utc(spec: CronSpec, start: datetime, days: int = 1) -> list[str]:
    """The ticks of one day from ``start``, as UTC times of day."""
    return [t.strftime("%d %H:%M") for t in ticks_between(spec, start, start + timedelta(days))]


def test_skipped_hour_in_berlin_fires_at_the_first_valid_moment_after_the_gap() -> None:
    """croniter: 02:30 does not exist on 29 March 2026 in Berlin; the tick comes at 03:00 CEST."""
    assert in_utc(CronSpec("30 2 * * *", "Europe/Berlin"), utc(2026, 3, 28, 12)) == ["29 01:00"]
    # An hourly schedule simply has no 02:00 tick that night.
    hourly = in_utc(CronSpec("0 * * * *", "Europe/Berlin"), utc(2026, 3, 28, 23, 30), 0.125)
    assert hourly == ["29 00:00", "29 01:00", "29 02:00"]  # 01:00 CET, 03:00 CEST, 04:00 CEST


def test_a_skipped_time_with_seconds_fires_at_the_end_of_the_gap() -> None:
    """With a seconds field too, a time the clocks skip fires at the first moment after the
    gap (03:00:00 CEST), as minutes do; croniter 7 kept the seconds (03:00:15)."""
    start = utc(2026, 3, 29, 0, 50)
    daily = CronSpec("30 2 * * * 15", "Europe/Berlin")
    assert ticks_between(daily, start, start + timedelta(hours=1)) == [utc(2026, 3, 29, 1)]
    spec = CronSpec("*/20 * * * * 30", "Europe/Berlin")
    assert ticks_between(spec, start, utc(2026, 3, 29, 1, 1)) == [
        utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 0, 30)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("30 2 * * *", ["25 00:30"]),  # 02:30 CEST; before, 02:30 CET (01:30 UTC) as well
        ("30 2 * * 0", ["25 00:30"]),
        ("30 1-3 * * *", ["25 00:30", "25 02:30"]),  # 02:30 CEST, 03:30 CET
        ("*/15 2 * * *", ["25 00:00", "25 00:15", "25 00:30", "25 00:45"]),
    ],
)
def test_a_fixed_hour_in_berlins_repeated_hour_fires_once_at_its_first_occurrence(
    expression: str, expected: list[str]
) -> None:
    """02:00-03:00 happens twice on 25 October 2026 in Berlin: a schedule with fixed hours
    fires in it at CEST only, as cron does; before, it fired again in CET, a nightly job twice."""
    spec = CronSpec(expression, "Europe/Berlin")
    assert in_utc(spec, utc(2026, 10, 24, 23, 59), 0.125) == expected
    # From a cursor between the two occurrences (a scheduler that has just fired), too.
    assert in_utc(spec, utc(2026, 10, 25, 0, 59), 0.0625) == []


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("30 * * * *", ["25 00:30", "25 01:30", "25 02:30"]),
        ("30 */1 * * *", ["25 00:30", "25 01:30", "25 02:30"]),
        ("30 0-23 * * *", ["25 00:30", "25 01:30", "25 02:30"]),
        ("30 */2 * * *", ["25 00:30", "25 01:30"]),  # 02:30 CEST, 02:30 CET, then 04:30 CET
        ("30 0-23/2 * * *", ["25 00:30", "25 01:30"]),
    ],
)
def test_a_wildcard_hour_in_berlins_repeated_hour_fires_in_both_occurrences(
    expression: str, expected: list[str]
) -> None:
    """An hourly or every-n-hours schedule keeps its interval through the repeated hour: it
    fires at 02:30 CEST and at 02:30 CET, and no gap grows longer than the interval."""
    spec = CronSpec(expression, "Europe/Berlin")
    assert in_utc(spec, utc(2026, 10, 25, 0), 0.125) == expected


def test_new_york_follows_the_same_rules() -> None:
    """In New York: skipped 02:30 moves to 03:00 EDT; the repeated 01:30 fires once (EDT)."""
    assert in_utc(CronSpec("30 2 * * *", "America/New_York"), utc(2026, 3, 7, 12)) == ["08 07:00"]
    spec = CronSpec("30 1 * * *", "America/New_York")
    assert in_utc(spec, utc(2026, 10, 31, 12)) == ["01 05:30"]
    hourly = CronSpec("30 * * * *", "America/New_York")
    assert in_utc(hourly, utc(2026, 11, 1, 5), 0.125) == ["01 05:30", "01 06:30", "01 07:30"]


def test_a_repeated_time_with_seconds_fires_once_unless_the_hours_are_a_wildcard() -> None:
    """With a seconds field, 02:30:15 fires at its first occurrence only (02:30:15 CEST); an
    every-20-seconds schedule fires through both occurrences of the repeated hour."""
    start = utc(2026, 10, 25, 0)
    daily = CronSpec("30 2 * * * 15", "Europe/Berlin")
    assert ticks_between(daily, start, start + timedelta(hours=3)) == [utc(2026, 10, 25, 0, 30, 15)]
    spec = CronSpec("30 * * * * */20", "Europe/Berlin")
    assert ticks_between(spec, start, start + timedelta(hours=2)) == [
        utc(2026, 10, 25, h, 30, s) for h in (0, 1) for s in (0, 20, 40)
    ]


@pytest.mark.parametrize(
    ("hours", "wildcard"),
    [
        ("*", True), ("*/1", True), ("0-23", True), ("*/2", True), ("0-23/3", True),
        ("0,12", True), ("*/13", True), ("2", False), ("1-3", False), ("1-23/2", False),
        ("0,2,4", False), ("*/24", False), ("0", False),
    ],
)  # fmt: skip
def test_an_hour_field_is_a_wildcard_when_it_names_every_nth_hour_from_midnight(
    hours: str, wildcard: bool
) -> None:
    """``*``, ``*/n`` and their other spellings are intervals; other hour fields name hours."""
    assert every_nth_hour(croniter(f"0 {hours} * * *").expanded[1]) is wildcard


def test_catch_up_across_berlins_repeated_hour_gives_the_first_occurrence_only() -> None:
    """A scheduler back after the fold catches up 02:30 CEST and nothing at 02:30 CET; with a
    window that starts between the two, 02:30 CEST is skipped and no second one is due."""
    spec = CronSpec("30 2 * * *", "Europe/Berlin")
    cursor, now = utc(2026, 10, 25), utc(2026, 10, 25, 1, 45)  # 02:45 CET
    assert due_ticks(spec, cursor, now, timedelta(hours=2)).due == [utc(2026, 10, 25, 0, 30)]
    late = due_ticks(spec, cursor, now, timedelta(minutes=30))
    assert late.due == [] and late.skipped == [utc(2026, 10, 25, 0, 30)]
    assert late.cursor == now


def test_seconds_are_the_sixth_field() -> None:
    """A 6th field gives seconds."""
    spec = CronSpec("* * * * * */15")
    assert spec.has_seconds
    assert ticks_between(spec, utc(2026, 1, 1), utc(2026, 1, 1, 0, 1)) == [
        utc(2026, 1, 1, 0, 0, s) for s in (15, 30, 45)
    ] + [utc(2026, 1, 1, 0, 1)]


@pytest.mark.parametrize("expression", ["61 * * * *", "* * * *", "* * * * * * *", "every day", ""])
def test_invalid_expression_is_refused_with_the_value_quoted(expression: str) -> None:
    """A bad expression raises ValueError naming it."""
    with pytest.raises(ValueError, match="invalid cron expression"):
        CronSpec(expression)
    with pytest.raises(ValueError, match=repr(expression).replace("*", r"\*")):
        CronSpec(expression)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_an_expression_that_matches_no_date_is_refused(expression: str) -> None:
    """February 30th never comes: croniter accepts the fields, but asking it for the next
    tick raised in the worker's scheduler and stopped every periodic task of the app."""
    with pytest.raises(ValueError, match="matches no date"):
        CronSpec(expression)


@pytest.mark.parametrize(
    "expression", ["R * * * *", "r 3 * * *", "0 R(0-6) * * *", "0 0 * * R", "R/5 * * * * 0"]
)
def test_a_random_field_is_refused(expression: str) -> None:
    """croniter draws R anew in every process: with R, each worker computed ticks of its
    own (one ran R * * * * at minute 5, the next at 54), so an hourly schedule made one job
    per worker per hour, each at a different tick that no unique key could merge."""
    with pytest.raises(ValueError, match=r"draws R \(a random value\) anew in every process"):
        CronSpec(expression)


@pytest.mark.parametrize("expression", ["@reboot", "@every", "@minutely"])
def test_an_unknown_alias_is_refused_with_the_aliases_there_are(expression: str) -> None:
    """croniter said "Exactly 5, 6 or 7 columns has to be specified" of @reboot, which has
    no time to fire at (and pgqueue takes no 7th field): the error lists the aliases."""
    with pytest.raises(ValueError, match=rf"'{expression}': .* @yearly, @annually, @monthly"):
        CronSpec(expression)


@pytest.mark.parametrize("expression", ["H * * * *", "0 h * * *", "H(0-29) * * * *", "H/5 * * * *"])
def test_a_hashed_field_is_refused_in_pgqueues_words(expression: str) -> None:
    """croniter's H needs an id it is not given here; it said "Hashed definitions must include
    hash_id", which names an argument pgqueue does not have."""
    with pytest.raises(ValueError, match=r"H \(a hashed value\) is not supported: write the value"):
        CronSpec(expression)


@pytest.mark.parametrize("expression", ["0 0 * MAR,APR FRI", "0 12 * * THU-FRI", "0 0 1 SEP,OCT *"])
def test_month_and_day_names_with_an_r_are_not_random(expression: str) -> None:
    """Names such as MAR or FRI contain an R and are fixed values: kept, same ticks everywhere."""
    spec = CronSpec(expression)
    assert next_tick(spec, utc(2026, 3, 1)) == next_tick(CronSpec(expression), utc(2026, 3, 1))


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 31 2,5 *"])
def test_rare_but_possible_days_are_kept(expression: str) -> None:
    """A leap day (every 4 to 8 years), or a list with one possible month, has ticks."""
    spec = CronSpec(expression)
    assert next_tick(spec, utc(2026, 3, 1)) > utc(2026, 3, 1)


def test_a_day_that_never_comes_with_a_weekday_fires_on_the_weekday_from_croniter_7() -> None:
    """Cron ORs day of month and weekday: ``0 0 30 2 1`` fires on February's Mondays. croniter
    7.0 computes that; older releases find no date, and the expression is refused as one that
    matches none (a clear error at import, not a schedule that never fires)."""
    if int(metadata.version("croniter").split(".")[0]) >= 7:
        assert next_tick(CronSpec("0 0 30 2 1"), utc(2026, 3, 1)) == utc(2027, 2, 1)
    else:
        with pytest.raises(ValueError, match=r"cron expression '0 0 30 2 1' matches no date"):
            CronSpec("0 0 30 2 1")


def test_unknown_time_zone_is_refused_with_the_value_quoted() -> None:
    """An unknown zone raises ValueError naming it."""
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        CronSpec("* * * * *", "Mars/Olympus")


def test_the_hosts_own_zone_is_refused() -> None:
    """'localtime' is each host's /etc/localtime where tz data links it (Debian, Ubuntu):
    workers in two zones would fire each tick at two instants, twice. Before, accepted."""
    with pytest.raises(ValueError, match="time zone 'localtime' is each host's own"):
        CronSpec("0 2 * * *", "localtime")


def test_naive_datetimes_are_refused() -> None:
    """Tick maths never guesses a time zone."""
    with pytest.raises(ValueError, match="naive"):
        next_tick(CronSpec("* * * * *"), datetime(2026, 1, 1))


def test_due_ticks_split_at_the_catch_up_window() -> None:
    """Ticks older than now - catch_up are skipped; newer ones (the boundary included) are due."""
    spec = CronSpec("* * * * * *")
    now = utc(2026, 1, 1, 0, 0, 10)
    due = due_ticks(spec, utc(2026, 1, 1), now, timedelta(seconds=3))
    assert due.due == [utc(2026, 1, 1, 0, 0, s) for s in (7, 8, 9, 10)]
    assert due.skipped == [utc(2026, 1, 1, 0, 0, s) for s in range(1, 7)]
    assert due.skipped_last == utc(2026, 1, 1, 0, 0, 6)
    assert due.cursor == now


def test_due_ticks_stop_at_the_limit_and_resume_from_the_cursor() -> None:
    """With more due ticks than the limit, the cursor stops at the last one returned."""
    spec = CronSpec("* * * * * *")
    now = utc(2026, 1, 1, 0, 0, 10)
    first = due_ticks(spec, utc(2026, 1, 1), now, timedelta(minutes=1), limit=4)
    assert first.due[-1] == first.cursor == utc(2026, 1, 1, 0, 0, 4)
    second = due_ticks(spec, first.cursor, now, timedelta(minutes=1), limit=100)
    assert second.due[0] == utc(2026, 1, 1, 0, 0, 5)
    assert not first.skipped and not second.skipped


def test_due_ticks_say_whether_the_limit_left_ticks_for_the_next_pass() -> None:
    """``more`` is set only when ticks after the returned ones are due: a pass that takes
    exactly the limit, the last due tick among them, leaves none (coalesce fires its last)."""
    spec = CronSpec("* * * * * *")
    start, now = utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 4)
    assert due_ticks(spec, start, now, timedelta(minutes=1), limit=3).more
    exact = due_ticks(spec, start, now, timedelta(minutes=1), limit=4)
    assert (exact.more, exact.cursor, exact.due[-1]) == (False, now, now)


def test_coalesced_ticks_are_all_due_ticks_but_the_latest() -> None:
    """With coalesce, the ticks before the latest due tick get no job; while the limit leaves
    more due ticks, none of the pass's ticks does; without coalesce, every tick gets one."""
    spec = CronSpec("* * * * *")
    start, now = utc(2026, 1, 1), utc(2026, 1, 1, 0, 9, 30)
    nine = due_ticks(spec, start, now, timedelta(minutes=10))
    assert len(nine.due) == 9
    assert nine.coalesced_through(True) == utc(2026, 1, 1, 0, 8)
    assert nine.coalesced_through(False) is None
    first = due_ticks(spec, start, now, timedelta(minutes=10), limit=4)
    assert first.coalesced_through(True) == first.due[-1] == utc(2026, 1, 1, 0, 4)
    one = due_ticks(spec, utc(2026, 1, 1, 0, 8), now, timedelta(minutes=10))
    assert one.coalesced_through(True) is None  # on time: nothing to coalesce
    assert due_ticks(spec, now, now, timedelta(minutes=10)).coalesced_through(True) is None


@settings(deadline=None)
@given(specs, moments, st.lists(st.integers(1, 900), min_size=1, max_size=5))
def test_successive_passes_yield_every_tick_once(
    spec: CronSpec, start: datetime, steps: list[int]
) -> None:
    """Passes at arbitrary later moments together produce each tick exactly once, in order."""
    cursor, now, seen = start, start, []
    for step in steps:
        now += timedelta(seconds=step)
        while cursor < now:
            due = due_ticks(spec, cursor, now, timedelta(days=1), limit=50)
            seen += due.due
            cursor = due.cursor
    assert seen == ticks_between(spec, start, now)


@pytest.mark.parametrize(
    ("expression", "minutes"),
    [("*/20 * * * *", [10]), ("*/7 * * * *", [5, 12, 19, 26]), ("*/20 1 * * *", [])],
)
def test_lord_howe_repeated_half_hour_fires_in_both_occurrences_for_wildcard_hours(
    expression: str, minutes: list[int]
) -> None:
    """Lord Howe goes back from 02:00 +11 to 01:30 +10:30 on 5 April 2026 (15:00 UTC): as in
    Berlin, a time in the repeated half hour fires in its second occurrence too when the hours
    are a wildcard, and only in its first (01:40 +11, 14:40 UTC) when they are fixed."""
    spec = CronSpec(expression, "Australia/Lord_Howe")
    expected = [utc(2026, 4, 4, 15, m) for m in minutes]
    assert ticks_between(spec, utc(2026, 4, 4, 15), utc(2026, 4, 4, 15, 29)) == expected
    # From a cursor before the fold (a running scheduler's), croniter jumped over them.
    ticks = ticks_between(spec, utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 15, 29))
    assert [t for t in ticks if t >= utc(2026, 4, 4, 15)] == expected


# Days on which the clocks change, as (zone, local date): each zone's gap and fold of 2026.
DST_DAYS = [
    ("Europe/Berlin", date(2026, 3, 29)), ("Europe/Berlin", date(2026, 10, 25)),
    ("America/New_York", date(2026, 3, 8)), ("America/New_York", date(2026, 11, 1)),
    ("America/St_Johns", date(2026, 3, 8)), ("America/St_Johns", date(2026, 11, 1)),
    ("Australia/Lord_Howe", date(2026, 4, 5)), ("Australia/Lord_Howe", date(2026, 10, 4)),
    ("Australia/Sydney", date(2026, 4, 5)), ("Australia/Sydney", date(2026, 10, 4)),
]  # fmt: skip
MINUTE, SECOND = timedelta(minutes=1), timedelta(seconds=1)
DST_EXPRESSIONS = [
    "*/3 * * * *", "*/7 * * * *", "*/20 * * * *", "0 * * * *", "30 2 * * *", "40 1 * * *",
    "15,45 1-3 * * *", "10-50/10 2 * * *", "*/15 2 * * *", "0 1-3 * * *", "*/10 */2 * * *",
    "45 0-23 * * *",
]  # fmt: skip


def local_day(zone: str, day: date) -> tuple[datetime, datetime]:
    """The UTC bounds of a local day: its midnight and the next one."""
    midnight = datetime.combine(day, time(), ZoneInfo(zone))
    return midnight.astimezone(UTC), (midnight + timedelta(days=1)).astimezone(UTC)


def matcher(expression: str) -> Callable[[datetime], bool]:
    """Whether a naive wall time is one of the expression's (its minute and hour fields)."""
    minutes, hours, *days = croniter(expression).expanded
    assert all(field == ["*"] for field in days)
    return lambda wall: all(
        f == ["*"] or v in f for f, v in ((minutes, wall.minute), (hours, wall.hour))
    )


def wildcard_hours(expression: str) -> bool:
    """Whether the hour field, as written, is every hour or ``*/n``: an interval."""
    hours = expression.split()[1]
    return hours in ("*", "0-23") or hours.startswith("*/")


def brute_force(expression: str, zone: str, day: date, both: bool | None = None) -> list[datetime]:
    """The ticks in (midnight, next midnight], minute by minute: every instant whose wall
    time matches, but a repeated wall time only at its first instant unless the hours are a
    wildcard (or ``both``, the rule before); and for a matching wall time that does not exist,
    the first instant after the clocks passed it."""
    matches, (start, end) = matcher(expression), local_day(zone, day)
    both = wildcard_hours(expression) if both is None else both
    instants = [start + timedelta(minutes=m) for m in range(1, (end - start) // MINUTE + 1)]
    walls = [(u, u.astimezone(ZoneInfo(zone)).replace(tzinfo=None)) for u in instants]
    ticks, existing = set(), set()
    for u, wall in walls:
        if matches(wall) and (both or wall not in existing):
            ticks.add(u)
        existing.add(wall)
    for m in range(1, 24 * 60 + 1):
        wall = datetime.combine(day, time()) + timedelta(minutes=m)
        if wall not in existing and matches(wall):
            ticks.add(next(u for u, later in walls if later > wall))
    return sorted(ticks)


@pytest.mark.parametrize("expression", DST_EXPRESSIONS)
@pytest.mark.parametrize(("zone", "day"), DST_DAYS)
def test_ticks_of_a_dst_day_match_brute_force_from_any_cursor(
    expression: str, zone: str, day: date
) -> None:
    """On a day the clocks change, the ticks are the brute-force ones (a repeated time fires
    at its first occurrence, and its second too for wildcard hours; a skipped one at the end
    of the gap), a subset of the ticks of the rule before (both occurrences, always), and do
    not depend on where the cursor starts: from any later cursor, the rest of the same list."""
    spec = CronSpec(expression, zone)
    start, end = local_day(zone, day)
    assert start.astimezone(spec.zone).utcoffset() != end.astimezone(spec.zone).utcoffset()
    ticks = ticks_between(spec, start, end)
    assert ticks == brute_force(expression, zone, day)
    # A rolling deploy: workers of the rule before fire no tick this rule does not have.
    assert set(ticks) <= set(brute_force(expression, zone, day, both=True))
    cursors = {start + timedelta(seconds=s) for s in range(0, (end - start) // MINUTE * 60, 617)}
    # On and just before each tick of the early hours, where the clocks change.
    early = [t for t in ticks if t < start + timedelta(hours=6)]
    cursors |= {t - delta for t in early for delta in (SECOND, timedelta())}
    for cursor in sorted(c for c in cursors if start <= c < end):
        passed = bisect_right(ticks, cursor)
        assert ticks_between(spec, cursor, end, limit=5) == ticks[passed : passed + 5], cursor
        if passed:
            assert normalize(spec, cursor) == ticks[passed - 1], cursor


@pytest.mark.parametrize(
    ("night", "count"),
    [
        ((utc(2026, 10, 24, 22), utc(2026, 10, 25, 4)), 4),
        ((utc(2026, 3, 28, 22), utc(2026, 3, 29, 4)), 1),
    ],
)
def test_two_spellings_of_one_schedule_fire_alike_on_dst_nights(
    night: tuple[datetime, datetime], count: int
) -> None:
    """``*/15 2 * * *`` and ``0,15,30,45 2 * * *`` give the same ticks on Berlin's autumn night
    (4, at CEST) and spring night (1, at 03:00 CEST), where Vixie cron runs them 8 and 4 times,
    then 0 and 4 times, because it calls a field that starts with ``*`` a wildcard."""
    spellings = ("*/15 2 * * *", "0,15,30,45 2 * * *")
    ticks = [ticks_between(CronSpec(e, "Europe/Berlin"), *night) for e in spellings]
    assert ticks[0] == ticks[1]
    assert len(ticks[0]) == count


@pytest.mark.parametrize(
    ("expression", "meant"),
    [("0 */5 * * * *", "*/5 * * * * 0"), ("0 * * * * *", "* * * * * 0"),
     ("30 0 9 * * *", "0 9 * * * 30")],
)  # fmt: skip
def test_seconds_written_first_as_in_spring_are_refused_with_the_order_that_means_it(
    expression: str, meant: str
) -> None:
    """Spring's "0 */5 * * * *" (every 5 minutes, seconds first) read with seconds last is
    every second of minute 0 of every fifth hour: it was accepted, and a burst of 60 jobs
    came five times a day instead of a job every 5 minutes. A seconds field of * under a
    minute field that is not is refused, naming the expression in pgqueue's order."""
    with pytest.raises(ValueError, match=f"seconds last.*{re.escape(repr(meant))}"):
        CronSpec(expression)


@pytest.mark.parametrize(("expression", "meant"), [("0 15 10 ? * MON-FRI", "15 10 ? * MON-FRI 0")])
def test_a_quartz_expression_is_refused_with_the_order_that_means_it(
    expression: str, meant: str
) -> None:
    """Quartz's "0 15 10 ? * MON-FRI" (seconds first) was refused in croniter's words only
    ("Question mark can only used in day_of_month or day_of_week", where it is): the
    error says that the seconds come last and gives the expression in that order."""
    with pytest.raises(ValueError, match=f"seconds last.*{re.escape(repr(meant))}"):
        CronSpec(expression)


@pytest.mark.parametrize("expression", ["* * * * * *", "*/5 * * * * 0-59", "0 9 * * * 0"])
def test_every_second_of_every_minute_or_spelled_out_is_kept(expression: str) -> None:
    """Every second (all *), or every second of some minutes written as 0-59, is accepted."""
    assert CronSpec(expression).has_seconds


@pytest.mark.parametrize("expression", ["0 0 12 ? * 2", "0 0 12 ? * 6#3", "0 0 8 ? * 2-6"])
def test_a_quartz_expression_with_weekday_numbers_is_refused_with_a_word_on_them(
    expression: str,
) -> None:
    """Quartz numbers weekdays from 1 (Sunday), cron from 0: "0 0 12 ? * 2", Monday noon in
    Quartz, was refused with '0 12 ? * 2 0' as its spelling here, Tuesday noon. Spring
    writes "?" too and numbers them as cron does, so no renumbering fits both: the error
    says how weekday numbers are read here and that names (MON) mean the same in all."""
    with pytest.raises(ValueError, match=r"1 \(Sunday\) to 7.*names such as MON"):
        CronSpec(expression)


@pytest.mark.parametrize("expression", ["0 15 10 ? * MON-FRI", "0 0 12 1/2 * ?"])
def test_a_quartz_expression_without_weekday_numbers_gets_no_word_on_them(
    expression: str,
) -> None:
    """Weekdays by name, or no weekday (a "?"), mean the same in Quartz and here."""
    with pytest.raises(ValueError, match="seconds last") as refused:
        CronSpec(expression)
    assert "Sunday" not in str(refused.value)
