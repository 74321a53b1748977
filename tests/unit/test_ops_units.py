"""Pure parts of the operations features: durations, retention, JSON logs, middleware order."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import pgqueue
from pgqueue import JobContext, _store
from pgqueue._hooks import AppHooks, JobEvent, call_through
from pgqueue._logging import JsonFormatter, configure_logging
from pgqueue._ops import _UNITS, decode_json, parse_duration, parse_moment, prune
from pgqueue._retention import DEFAULT_RETENTION, retention_ages


@pytest.mark.parametrize(
    ("text", "moment"),
    [("2030-01-01T09:00+01:00", datetime(2030, 1, 1, 8, tzinfo=UTC)),
     ("2030-01-01T08:00Z", datetime(2030, 1, 1, 8, tzinfo=UTC)),
     ("2030-01-01t08:00z", datetime(2030, 1, 1, 8, tzinfo=UTC)),
     (" 2030-01-01 09:00:00+01:00\n", datetime(2030, 1, 1, 8, tzinfo=UTC)),
     ("2030-01-01T09:00:30+01:00:30", datetime(2030, 1, 1, 8, tzinfo=UTC)),
     ("0001-01-02T00:00Z", datetime(1, 1, 2, tzinfo=UTC))],
)  # fmt: skip
def test_parse_moment_reads_iso_8601_with_its_offset(text: str, moment: datetime) -> None:
    """--run-at's times: the instant the offset says, lower-case t and z as RFC 3339 allows
    them, whitespace around it ignored."""
    parsed = parse_moment(text)
    assert parsed == moment
    assert parsed.utcoffset() is not None


@pytest.mark.parametrize(
    "text",
    ["2030-01-01T09:00", "2030-01-01", "tomorrow", "", "2030-01-01T24:00Z",
     "\u0662030-01-01T09:00Z", "0001-01-01T23:59Z", "9999-12-31T00:00:01Z"],
)  # fmt: skip
def test_parse_moment_refuses_a_time_without_offset_or_out_of_range(text: str) -> None:
    """A time without an offset (whose zone is not to be guessed), one that is no time, and
    one no job can have are refused with a ValueError naming the text."""
    with pytest.raises(ValueError, match=f"^invalid time {re.escape(repr(text))}: "):
        parse_moment(text)


def test_parse_moment_keeps_the_offset_given() -> None:
    """The datetime keeps the offset it was written with (what the job's run_at means)."""
    assert parse_moment("2030-06-01T12:00-04:00").tzinfo == timezone(timedelta(hours=-4))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("12h", 43200.0), ("7d", 604800.0),
     ("2w", 1209600.0), ("0.5h", 1800.0), (" 7d", 604800.0), ("7d\n", 604800.0)],
)  # fmt: skip
def test_parse_duration_understands_units(text: str, seconds: float) -> None:
    """Durations are a number with an optional s/m/h/d/w unit, whitespace around it ignored
    as float() ignores it (a variable's trailing newline)."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "soon", "-1d", "nan", "inf", "1e300", "99999999999w", "1_0", "+5m", "7 d", " ",
     "\u0661\u0662", "1_0h", "2 w"],
)  # fmt: skip
def test_parse_duration_rejects_nonsense(text: str) -> None:
    """Anything else is a ValueError that says what to write: so are what float() reads
    besides ASCII decimals ("1_0" is 10 to it, and "+5" and Arabic-Indic "١٢" numbers)."""
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_a_duration_that_does_not_parse_is_told_every_unit() -> None:
    """The message listed s, m, h and d as examples, but not w, which is accepted too."""
    with pytest.raises(ValueError) as raised:
        parse_duration("1y")
    message = str(raised.value)
    assert message == (
        "invalid duration '1y': use seconds, or a number with a unit s, m, h, d or w"
        " (e.g. 90s, 15m, 12h, 7d, 2w)"
    )
    listed = message.split("a unit ")[1].split(" (")[0].replace(" or ", ", ").split(", ")
    assert listed == list(_UNITS)


def test_decode_json_wants_an_array_or_an_object() -> None:
    """--args must be a JSON array and --kwargs a JSON object; JSON nested deeper than
    Python decodes is a ValueError too, not a RecursionError."""
    assert decode_json("[1]", list) == [1]
    assert decode_json('{"a": 2}', dict) == {"a": 2}
    with pytest.raises(ValueError, match="must be an array in JSON"):
        decode_json('{"a": 1}', list)
    with pytest.raises(ValueError, match="not valid JSON"):
        decode_json("{", dict)
    with pytest.raises(ValueError, match="nested too deeply for Python to decode"):
        decode_json("[" * 100_000 + "]" * 100_000, list)


def test_retention_merges_over_defaults_and_none_keeps_forever() -> None:
    """Given ages override the defaults; None keeps a state forever; timedelta is accepted."""
    ages = retention_ages({"succeeded": timedelta(hours=1), "cancelled": None})
    assert ages == {"succeeded": 3600.0, "failed": DEFAULT_RETENTION["failed"]}
    with pytest.raises(ValueError, match="finished states only"):
        retention_ages({"queued": 1})
    with pytest.raises(ValueError, match="from 0 to 1000 years, got -1"):
        retention_ages({"failed": -1})


@pytest.mark.parametrize("age", [math.inf, math.nan, 1e300, timedelta.max, True, "1d"])
def test_retention_sql_cannot_subtract_from_now_is_refused(age: object) -> None:
    """An infinite or 1e300 s retention passed the check, and then every maintenance pass of
    every worker failed at its prune statement ("interval out of range"), pruning no state and
    never reaching the claim path's vacuum; True meant one second; "1d" raised a float()
    error that named no state."""
    with pytest.raises(
        ValueError, match=r"retention of 'failed' jobs \(None keeps them forever\) must be"
    ):
        pgqueue.PgQueue(retention={"failed": age})  # type: ignore[dict-item]


def test_unknown_task_delay_takes_a_timedelta_like_retry_and_retention() -> None:
    """PgQueue(unknown_task_delay=timedelta(minutes=5)) is 300 s; it raised ValueError while
    Retry(delay=) and retention= took a timedelta. A timedelta past 1000 years is refused."""
    assert pgqueue.PgQueue(unknown_task_delay=timedelta(minutes=5)).unknown_task_delay == 300.0
    assert pgqueue.Retry(timedelta(seconds=90)).delay == 90.0
    with pytest.raises(ValueError, match="unknown_task_delay must be a number of seconds"):
        pgqueue.PgQueue(unknown_task_delay=timedelta.max)


def test_prune_refuses_an_age_sql_cannot_subtract_before_any_sql() -> None:
    """_ops.prune(conn, inf) names the age instead of failing with "interval out of range"."""
    with pytest.raises(ValueError, match="older_than must be seconds or a timedelta"):
        prune(None, math.inf, ["failed"])  # type: ignore[arg-type]  # no connection is used


def test_json_formatter_emits_extras_as_top_level_keys() -> None:
    """A record's extras become keys of its JSON line, next to time, level and message."""
    fields = {"msg": "job %s done", "args": (5,), "levelname": "INFO", "name": "pgqueue.worker"}
    record = logging.makeLogRecord({**fields, "job_id": 5, "action": "job_x"})
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job 5 done" and line["level"] == "info"
    assert (line["job_id"], line["action"]) == (5, "job_x")


def strict_json(line: str) -> dict[str, Any]:
    """``line`` decoded as RFC 8259 JSON: NaN and Infinity, which Python writes, refused."""
    assert "\n" not in line

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    decoded: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return decoded


def test_a_json_log_line_stays_json_whatever_its_extras_hold() -> None:
    """A float NaN or infinity was written as NaN or Infinity, which no JSON parser reads; a
    dict with tuple keys or a list holding itself made the formatter raise, and logging wrote
    its "--- Logging error ---" traceback in the stream instead of the record. Now what JSON
    cannot hold is written as its text, and the record's other fields as they are."""
    looped: list[Any] = []
    looped.append(looped)
    extras = {"ratio": math.nan, "limit": -math.inf, "by_pair": {(1, 2): 3}, "looped": looped,
              "job_id": 7, "action": "user_thing"}  # fmt: skip
    record = logging.makeLogRecord({"msg": "odd", "levelname": "INFO", "name": "app", **extras})
    line = strict_json(JsonFormatter().format(record))
    assert (line["message"], line["job_id"], line["action"]) == ("odd", 7, "user_thing")
    assert (line["ratio"], line["limit"], line["by_pair"]) == ("nan", "-inf", "{(1, 2): 3}")
    assert line["looped"] == "[[...]]"


def test_an_extra_named_like_a_json_field_does_not_replace_it() -> None:
    """An extra called level, time or logger overwrote the record's own: a WARNING read as
    level "x"; now the record's fields stand and such an extra is kept as extra_<name>."""
    fields = {"msg": "m", "levelname": "WARNING", "name": "app", "created": 0.0}
    record = logging.makeLogRecord({**fields, "level": "x", "time": 1, "logger": "fake"})
    line = strict_json(JsonFormatter().format(record))
    epoch = "1970-01-01T00:00:00.000+00:00"
    assert (line["level"], line["logger"], line["time"]) == ("warning", "app", epoch)
    assert (line["extra_level"], line["extra_time"], line["extra_logger"]) == ("x", 1, "fake")


class _Unprintable:
    """A value whose text raises, as a Django model's can in an async task (its __str__
    reads a related row: SynchronousOnlyOperation)."""

    def __str__(self) -> str:
        raise RuntimeError("you cannot call this from an async context")


def test_a_json_log_line_stays_json_when_an_extras_text_raises() -> None:
    """An extra JSON cannot hold is written as its text; one whose text raises too, or nested
    deeper than Python can write or print, made the formatter raise, and logging wrote its
    "--- Logging error ---" traceback in the stream instead of the record. Such a value is
    now named by its type, and the record's other fields are written as they are."""
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    extras = {"order": _Unprintable(), "tree": deep, "job_id": 7}
    record = logging.makeLogRecord({"msg": "odd", "levelname": "INFO", "name": "app", **extras})
    line = strict_json(JsonFormatter().format(record))
    assert (line["message"], line["job_id"]) == ("odd", 7)
    assert (line["order"], line["tree"]) == ("<_Unprintable>", "<list>")


def test_a_json_log_line_keeps_the_stack_a_record_asked_for() -> None:
    """log.warning(..., stack_info=True) adds where it was called from, which the text format
    prints after the message: the JSON line left it out. It is its "stack" field, and an extra
    of that name is kept as extra_stack, as one named like the other fields is."""
    logger = logging.getLogger("tests.stack")
    captured: list[logging.LogRecord] = []
    logger.handle = captured.append  # type: ignore[method-assign]  # capture, do not emit
    logger.warning("slow", stack_info=True, extra={"stack": "mine"})
    line = strict_json(JsonFormatter().format(captured[0]))
    assert line["stack"].startswith("Stack (most recent call last):")
    assert "test_a_json_log_line_keeps_the_stack" in line["stack"]
    assert line["extra_stack"] == "mine"


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Give the root logger, the warnings capture and the exception hooks back as they were."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook)
    try:
        yield
    finally:
        root.handlers[:], level, sys.excepthook, threading.excepthook = saved
        root.setLevel(level)
        logging.captureWarnings(False)


@pytest.mark.parametrize("before", ["python's", "another's"])
def test_with_json_logs_an_error_nothing_caught_is_one_record(
    capsys: pytest.CaptureFixture[str], logging_restored: None, before: str
) -> None:
    """An error that ends the process (sys.excepthook) or a thread (threading.excepthook) was
    printed by Python as a traceback of text in the middle of the JSON log stream: with JSON
    logs it is one uncaught_exception record, its traceback in "exception". A hook installed
    before (Sentry's SDK installs both) was replaced and never saw the crash: it is called
    after the record; Python's own is not, which would print it again as text. Back to text
    (after JSON set up twice), the hooks are those that were."""
    seen: list[str] = []
    hooks: tuple[Any, Any] = (sys.__excepthook__, threading.__excepthook__)
    if before == "another's":
        hooks = (lambda kind, exc, tb: seen.append(f"process {kind.__name__}"),
                 lambda args: seen.append(f"thread {args.exc_type.__name__}"))  # fmt: skip
    sys.excepthook, threading.excepthook = hooks
    configure_logging("info", "json")
    configure_logging("info", "json")
    try:
        raise KeyError("gone")
    except KeyError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
    thread.start()
    thread.join()
    configure_logging("info", "text")
    assert (sys.excepthook, threading.excepthook) == hooks
    assert seen == (
        [] if before == "python's" else ["process KeyError", "thread ZeroDivisionError"]
    )
    lines = [strict_json(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["action"], r["level"], r["logger"]) for r in lines] == 2 * [
        ("uncaught_exception", "critical", "pgqueue")
    ]
    assert lines[0]["message"].startswith("the process ended")
    assert "KeyError: 'gone'" in lines[0]["exception"]
    assert lines[1]["message"].startswith("thread doomed ended")
    assert "ZeroDivisionError" in lines[1]["exception"]


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_with_json_logs_an_uncaught_error_whose_str_raises_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str], logging_restored: None
) -> None:
    """An error nothing caught whose __str__ raises is still one uncaught_exception record with
    its traceback: the record's message failed, and all that was written was logging's own
    "--- Logging error ---" in text, without where the error was raised."""
    configure_logging("info", "json")
    try:
        raise _Unprintable()
    except _Unprintable as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    [line] = [strict_json(line) for line in capsys.readouterr().err.splitlines()]
    assert line["action"] == "uncaught_exception"
    assert "raise _Unprintable()" in line["exception"]


def test_middleware_nests_in_registration_order() -> None:
    """The first middleware registered is the outermost."""
    order: list[str] = []

    def named(name: str) -> Any:
        async def mw(job: JobContext, call_next: Any) -> Any:
            order.append(f"{name} in")
            result = await call_next()
            order.append(f"{name} out")
            return result

        return mw

    async def call() -> str:
        order.append("task")
        return "done"

    job = JobContext(1, "t", "q", 1, 3)
    result = asyncio.run(call_through([named("a"), named("b")], job, call))
    assert result == "done"
    assert order == ["a in", "b in", "task", "b out", "a out"]


def test_a_middleware_that_returns_no_awaitable_is_named_in_the_error() -> None:
    """A plain ``def`` middleware that calls ``call_next()`` without returning it failed every
    attempt of every job with Python's "object NoneType can't be used in 'await' expression",
    naming neither the middleware nor the cause. The error now says both."""

    def timed(job: JobContext, call_next: Any) -> None:
        call_next().close()  # the coroutine it forgot to return (closed: no warning here)

    async def call() -> str:
        return "done"

    with pytest.raises(TypeError) as raised:
        asyncio.run(call_through([timed], JobContext(1, "t", "q", 1, 3), call))
    assert str(raised.value) == (
        "middleware test_a_middleware_that_returns_no_awaitable_is_named_in_the_error.<locals>"
        ".timed returned NoneType, not an awaitable: write it async def mw(job, call_next),"
        " returning await call_next()"
    )


def test_enqueue_meta_hooks_run_in_order_on_a_copy() -> None:
    """job_meta applies every enqueue hook and never mutates the task's own meta."""
    hooks = AppHooks()
    hooks.enqueue_meta.append(lambda m: {**m, "a": 1})
    hooks.enqueue_meta.append(lambda m: {**m, "b": m["a"] + 1})
    original = {"x": 0}
    assert hooks.job_meta(original) == {"x": 0, "a": 1, "b": 2}
    assert original == {"x": 0}


def test_job_event_decodes_its_result_lazily() -> None:
    """JobEvent.result decodes the stored JSON; retrying events are not final."""
    job = JobContext(1, "t", "q", 1, 3)
    assert JobEvent(job, "succeeded", 0.1, encoded_result='{"a": [1]}').result == {"a": [1]}
    assert not JobEvent(job, "retrying", 0.1).is_final


def test_admin_module_exports_documented_functions() -> None:
    """pgqueue.admin exposes what the CLI calls, each function with a docstring."""
    from pgqueue import admin

    assert {"list_jobs", "queue_stats", "live_workers", "prune", "retry_failed"} <= set(
        admin.__all__
    )
    for name in admin.__all__:
        assert callable(getattr(admin, name)) and getattr(admin, name).__doc__, name


def test_a_jobs_log_line_says_how_long_the_attempt_ran_not_when_it_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retrying job's line must not read as a retry delay ("retrying after 0.6 ms"): the
    figure is how long the attempt ran."""
    from pgqueue._events import _log_event

    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    _log_event(JobEvent(JobContext(7, "shop.send", "io", 2, 5), "retrying", 0.0006, error="boom"))
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "job_retrying"]
    assert record.getMessage() == "job 7 (shop.send on io) retrying: attempt 2/5 ran 0.6 ms: boom"


def test_display_width_counts_wide_characters_twice_and_marks_none() -> None:
    """A table's columns are measured as a terminal shows them: a CJK character or an emoji
    takes two columns, a combining accent or a zero-width joiner none; a cell is cut to a
    number of columns, never through a wide character."""
    from pgqueue import _cli  # noqa: F401  (first: it loads _cli_ops, which needs it)
    from pgqueue._cli_ops import _clip, _width

    assert [_width(t) for t in ("send", "送信", "cafe\u0301", "👩\u200d💻", "")] == [4, 4, 4, 4, 0]
    assert [_clip("エラー", n) for n in (0, 1, 2, 3, 6, 9)] == [
        "",
        "",
        "エ",
        "エ",
        "エラー",
        "エラー",
    ]


def test_a_stats_table_marks_estimated_counts() -> None:
    """The finished counts of a row estimated from a sample show as ``~N`` in the table."""
    from pgqueue import _cli  # noqa: F401  (first: it loads _cli_ops, which needs it)
    from pgqueue._cli_ops import STATS_COLUMNS, _approximate, _table

    rows = [pgqueue.QueueStats("a", 1, 0, 2, 1843000, 12, 0, None, 0.5, estimated=True),
            pgqueue.QueueStats("b", 1, 0, 2, 7, 0, 0, 3.0, 0.5)]  # fmt: skip
    table = _table([_approximate(row) for row in rows], STATS_COLUMNS).splitlines()
    assert [line.split() for line in table[1:]] == [
        ["a", "1", "0", "2", "~1843000", "~12", "~0", "-", "0.5"],
        ["b", "1", "0", "2", "7", "0", "0", "3.0", "0.5"],
    ]


@pytest.mark.parametrize("seconds", [0, 0.0004, 1e-9])
def test_a_timeout_under_a_millisecond_is_one_not_none(seconds: float) -> None:
    """A bound that rounded to 0 ms was PostgreSQL's "no timeout": it is 1 ms, the least."""
    params = _store.timeouts_set_local(seconds, seconds).params
    assert params == {"lock": "1", "run": "1", "local": True}
