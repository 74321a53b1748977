"""Declaring periodic tasks: what @app.periodic registers, and what it refuses at once."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

import pgqueue
from pgqueue._periodic import DEFAULT_CATCH_UP


def test_periodic_registers_the_task_and_the_schedule() -> None:
    """The function becomes a task; the schedule is keyed by the task's name by default."""
    app = pgqueue.PgQueue()

    @app.periodic("0 2 * * *", timezone="Europe/Berlin", kwargs={"full": True}, queue="cpu")
    def nightly_report(full: bool) -> None: ...

    assert isinstance(nightly_report, pgqueue.Task)
    assert app.tasks[nightly_report.name] is nightly_report
    periodic = app.periodics[nightly_report.name]
    assert (periodic.queue, dict(periodic.kwargs)) == ("cpu", {"full": True})
    assert str(periodic.cron) == "0 2 * * * (Europe/Berlin)"
    assert periodic.catch_up == DEFAULT_CATCH_UP == timedelta(minutes=10)
    assert periodic.coalesce is False  # every missed tick in the window runs, as before


def test_one_task_can_have_several_named_schedules() -> None:
    """Stacked decorators with distinct names give one task two schedules."""
    app = pgqueue.PgQueue()

    @app.periodic("0 * * * *", name="hourly", kwargs={"scope": "hour"})
    @app.periodic("0 0 * * *", name="daily", kwargs={"scope": "day"})
    @app.task(name="rollup")
    def rollup(scope: str) -> None: ...

    assert sorted(app.periodics) == ["daily", "hourly"]
    assert {p.task.name for p in app.periodics.values()} == {"rollup"}


def test_two_schedules_under_one_name_are_refused() -> None:
    """Reusing a schedule name for another expression asks for name=..."""
    app = pgqueue.PgQueue()

    @app.periodic("0 * * * *")
    @app.task(name="t")
    def t() -> None: ...

    with pytest.raises(ValueError, match="already registered as 't'"):
        app.periodic("*/5 * * * *")(t)


@pytest.mark.parametrize(
    "change",
    [{"kwargs": {"region": "us"}}, {"queue": "other"}, {"catch_up": 60}, {"overlap": False},
     {"coalesce": True}],
)  # fmt: skip
def test_same_name_and_cron_with_other_settings_is_refused(change: dict[str, object]) -> None:
    """A second schedule differing only in kwargs, queue or catch_up used to replace the first
    silently (one of two regions stopped being synced); it is refused like another cron."""
    app = pgqueue.PgQueue()

    @app.periodic("0 * * * *", kwargs={"region": "eu"})
    @app.task(name="sync")
    def sync(region: str) -> None: ...

    app.periodic("0 * * * *", kwargs={"region": "eu"})(sync)  # the same again is fine
    with pytest.raises(ValueError, match="already registered as 'sync'"):
        app.periodic("0 * * * *", **{"kwargs": {"region": "eu"}, **change})(sync)  # type: ignore[arg-type]
    assert dict(app.periodics["sync"].kwargs) == {"region": "eu"}
    assert app.periodics["sync"].queue == "default"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"expression": "0 25 * * *"}, "invalid cron expression '0 25 \\* \\* \\*'"),
        ({"expression": "every minute"}, "invalid cron expression 'every minute'"),
        ({"timezone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ({"catch_up": 0}, "catch_up must be between 1 second and 7 days, got 0"),
        ({"catch_up": timedelta(days=8)}, "catch_up must be between"),
        ({"catch_up": float("nan")}, "catch_up must be between 1 second and 7 days, got nan"),
        ({"catch_up": float("inf")}, "catch_up must be between 1 second and 7 days, got inf"),
        ({"catch_up": 10**30}, "catch_up must be between 1 second and 7 days, got 1000"),
        ({"queue": "no spaces"}, "invalid queue name 'no spaces'"),
        ({"catch_up": math.nan}, "catch_up must be between 1 second and 7 days, got nan"),
        ({"catch_up": math.inf}, "catch_up must be between 1 second and 7 days, got inf"),
        ({"catch_up": 1e300}, "catch_up must be between"),
        ({"kwargs": [("day", 1)]}, "kwargs must be a mapping"),
        ({"kwargs": "day=1"}, "kwargs must be a mapping"),
        ({"overlap": "no"}, "overlap must be True or False, got 'no'"),
        ({"overlap": None}, "overlap must be True or False, got None"),
        ({"coalesce": "yes"}, "coalesce must be True or False, got 'yes'"),
        ({"coalesce": 1}, "coalesce must be True or False, got 1"),
        ({"coalesce": None}, "coalesce must be True or False, got None"),
    ],
)
def test_bad_declarations_fail_at_decoration_time(options: dict[str, object], message: str) -> None:
    """Bad input raises ValueError quoting it, before any function is decorated."""
    app = pgqueue.PgQueue()
    arguments = {"expression": "* * * * *", **options}
    expression = arguments.pop("expression")
    with pytest.raises(ValueError, match=message):
        app.periodic(expression, **arguments)  # type: ignore[arg-type]
    assert app.periodics == {} and app.tasks == {}


def test_kwargs_must_fit_the_function_and_be_json() -> None:
    """kwargs the function cannot take, or that are not JSON, fail at decoration time."""
    app = pgqueue.PgQueue()

    def report(full: bool) -> None: ...

    with pytest.raises(ValueError, match="do not fit task"):
        app.periodic("* * * * *", kwargs={"fulll": True})(report)
    with pytest.raises(ValueError, match="JSON"):
        app.periodic("* * * * *", kwargs={"full": object()}, name="x")(report)
    with pytest.raises(ValueError, match="must be str, got 1"):
        app.periodic("* * * * *", kwargs={1: True}, name="y")(report)


def test_a_task_of_another_app_is_refused() -> None:
    """The schedule's jobs would name a task this app's workers do not know, and fail; the
    task was accepted although it is in neither the app's registry nor its workers'."""
    app, other = pgqueue.PgQueue(), pgqueue.PgQueue()

    @other.task(name="t")
    def t() -> None: ...

    with pytest.raises(ValueError, match="registered with another app"):
        app.periodic("* * * * *")(t)
    assert app.periodics == {}


def test_overlap_false_gives_the_jobs_a_unique_key_that_fits_the_table() -> None:
    """overlap=False: the jobs of a schedule share the unique key 'periodic:<name>' (which
    the table takes up to 255 characters: a longer key is refused at once, not at every
    tick); by default they have none."""
    app = pgqueue.PgQueue()

    def t() -> None: ...

    app.periodic("* * * * *", name="a", overlap=False)(t)
    app.periodic("* * * * *", name="b")(t)
    assert app.periodics["a"].tick_job().unique_key == "periodic:a"
    assert app.periodics["b"].tick_job().unique_key is None
    app.periodic("* * * * *", name="c" * 246, overlap=False)(t)
    with pytest.raises(ValueError, match="too long for overlap=False"):
        app.periodic("* * * * *", name="d" * 247, overlap=False)(t)
    assert "d" * 247 not in app.periodics


def test_cron_list_aligns_its_columns_by_display_width() -> None:
    """`pgqueue cron list` pads its columns to the columns a terminal gives each name, as the
    job tables do: it padded by characters, so a schedule named in CJK (two columns each)
    pushed its row's later columns out of line with the header's."""
    from datetime import UTC, datetime

    from pgqueue import _cli  # noqa: F401  (first: it loads _cli_ops, which needs it)
    from pgqueue._cli_ops import _width, cron_table

    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    statuses = [
        pgqueue.ScheduleStatus("nightly", "0 2 * * *", at, at),
        pgqueue.ScheduleStatus("日次レポート", "*/5 * * * *", None, at),
    ]
    lines = cron_table(statuses).splitlines()

    def column(cells: list[str]) -> set[int]:
        """Where each line's cell starts, in terminal columns."""
        return {_width(line[: line.index(c)]) for line, c in zip(lines, cells, strict=True)}

    assert len(column(["SCHEDULE", "0 2", "*/5"])) == 1, lines
    assert len(column(["LAST", "2026", "-"])) == 1, lines


def test_a_schedule_status_built_by_hand_states_no_option_it_was_not_given() -> None:
    """ScheduleStatus(name, schedule, last, next) built by user code said coalesce=False, a
    fact about a schedule nobody gave: its options are None (unknown) unless given, and the
    table shows "-" for each, as for a schedule the code does not define."""
    from datetime import UTC, datetime

    from pgqueue import _cli  # noqa: F401  (first: it loads _cli_ops, which needs it)
    from pgqueue._cli_ops import cron_table

    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = pgqueue.ScheduleStatus("nightly", "0 2 * * *", at, at)
    assert (status.coalesce, status.overlap, status.catch_up) == (None, None, None)
    header, row = cron_table([status]).splitlines()
    assert header.split("  ")[-3:] == ["OVERLAP", "CATCH-UP", "MISSED TICKS"]
    assert row.split()[-3:] == ["-", "-", "-"]
