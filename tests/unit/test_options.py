"""Job options are validated before any SQL, with errors that say what is allowed."""

from __future__ import annotations

import math
import re
import socket
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

import pgqueue
import pgqueue.admin
from pgqueue._connections import normalize_dsn
from pgqueue._options import DECIMAL_NUMBER, RUN_AT_MAX, RUN_AT_MIN, JobOptions
from pgqueue._retry import MAX_DELAY
from pgqueue._worker import parse_queues


@pytest.mark.parametrize("queue", ["", "has space", "semi;colon", "x" * 65, "drop'table"])
def test_bad_queue_names_are_rejected(queue: str) -> None:
    """Queue names outside [A-Za-z0-9_.-]{1,64} raise ValueError naming the rule."""
    with pytest.raises(ValueError, match="1-64 characters"):
        JobOptions(queue=queue)


@pytest.mark.parametrize("priority", [-32769, 32768, 10**9])
def test_priority_out_of_range_is_rejected(priority: int) -> None:
    """Priorities outside smallint raise ValueError giving the range."""
    with pytest.raises(ValueError, match=r"-32768\.\.32767"):
        JobOptions(priority=priority)


def test_negative_delay_is_rejected() -> None:
    """A negative delay raises ValueError."""
    with pytest.raises(ValueError, match="delay must be"):
        JobOptions(delay=-1)


@pytest.mark.parametrize("delay", [math.inf, math.nan, timedelta.max, MAX_DELAY * 1.001])
def test_delays_sql_cannot_hold_are_rejected(delay: float | timedelta) -> None:
    """Infinite, NaN and longer than 1000 years: ValueError (SQL would fail or take it)."""
    with pytest.raises(ValueError, match="delay must be"):
        JobOptions(delay=delay)
    assert JobOptions(delay=MAX_DELAY).delay == MAX_DELAY


@pytest.mark.parametrize("run_at", ["infinity", "-infinity", date(2030, 1, 1)])
def test_run_at_that_is_not_a_datetime_is_rejected(run_at: object) -> None:
    """A string such as 'infinity' (which SQL would accept) or a date raises ValueError."""
    with pytest.raises(ValueError, match="timezone-aware datetime"):
        JobOptions(run_at=run_at)  # type: ignore[arg-type]


def test_naive_run_at_is_rejected() -> None:
    """run_at must carry a time zone, so it cannot be misread."""
    with pytest.raises(ValueError, match="timezone-aware"):
        JobOptions(run_at=datetime(2030, 1, 1))


def test_merge_replaces_delay_with_run_at_and_back() -> None:
    """using(run_at=...) after delay=... keeps only the latest of the two."""
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert JobOptions(delay=5).merge(run_at=when).delay is None
    assert JobOptions(run_at=when).merge(delay=timedelta(seconds=3)).delay == 3.0


def test_bad_max_attempts_and_timeout_are_rejected() -> None:
    """max_attempts must be 1..1000 and timeout positive and finite (None means none)."""
    with pytest.raises(ValueError, match="max_attempts"):
        JobOptions(max_attempts=0)
    for timeout in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout"):
            JobOptions(timeout=timeout)
    assert JobOptions(timeout=timedelta(days=400)).timeout == 400 * 86400.0


def test_task_using_validates_immediately() -> None:
    """using() raises at once, before the caller reaches enqueue."""
    app = pgqueue.PgQueue("postgresql://unused")

    @app.task
    def noop() -> None:
        """Do nothing."""

    with pytest.raises(ValueError):
        noop.using(queue="bad queue")
    assert noop.using(priority=5).options.priority == 5
    assert noop.options.priority == 0


def test_parse_queues_reads_per_queue_concurrency() -> None:
    """'io:20,cpu' gives io 20 slots and cpu the default."""
    assert parse_queues("io:20,cpu", 4) == {"io": 20, "cpu": 4}
    assert parse_queues({"a": 2}, 9) == {"a": 2}
    with pytest.raises(ValueError):
        parse_queues("io:0", 4)


@pytest.mark.parametrize(
    "dsn",
    ["mysql://u:secret@h/db", "postgresql://u:secret@[h/db", "postgresql://u:secret\udcff@h/db"],
)
def test_a_dsn_libpq_cannot_parse_is_a_configuration_error_without_its_password(dsn: str) -> None:
    """It used to reach psycopg.connect and fail there as a ProgrammingError quoting the DSN;
    one with a byte the locale could not decode (DATABASE_URL=$'...\\xff...'), as a codec's
    error naming no DSN."""
    with pytest.raises(pgqueue.ConfigurationError, match=r"^invalid database DSN: ") as raised:
        normalize_dsn(dsn)
    assert "secret" not in str(raised.value)
    with pytest.raises(pgqueue.ConfigurationError):
        pgqueue.PgQueue().worker(dsn=dsn)


DSN_TAKERS = {
    "migrate": pgqueue.migrate,
    "schema_check": pgqueue.schema_check,
    "health_problem": pgqueue.admin.health_problem,
    "cron_list": lambda dsn: pgqueue.cron_list(pgqueue.PgQueue(), dsn),
}


@pytest.mark.parametrize("name", DSN_TAKERS)
def test_every_function_taking_a_dsn_refuses_a_malformed_one_without_its_password(
    name: str,
) -> None:
    """pgqueue.migrate, schema_check, admin.health_problem and cron_list passed the DSN to
    psycopg as it came: a ProgrammingError quoting it, password and all."""
    with pytest.raises(pgqueue.ConfigurationError, match=r"^invalid database DSN: ") as raised:
        DSN_TAKERS[name]("mysql://u:secret@h/db")
    assert "secret" not in str(raised.value)


def test_sqlalchemy_style_urls_are_accepted_as_dsns() -> None:
    """postgresql+psycopg:// URLs are turned into libpq URLs."""
    assert normalize_dsn("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert normalize_dsn("host=x dbname=y") == "host=x dbname=y"


def test_dsn_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PgQueue(dsn) wins over PGQUEUE_DSN, which wins over DATABASE_URL; without any, the
    error names all three."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-database-url/x")
    assert pgqueue.PgQueue().dsn == "postgresql://from-database-url/x"
    monkeypatch.setenv("PGQUEUE_DSN", "postgresql://from-pgqueue-dsn/x")
    assert pgqueue.PgQueue().dsn == "postgresql://from-pgqueue-dsn/x"
    assert pgqueue.PgQueue("postgresql://arg/x").dsn == "postgresql://arg/x"
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("PGQUEUE_DSN")
    with pytest.raises(pgqueue.ConfigurationError) as raised:
        _ = pgqueue.PgQueue().dsn
    assert str(raised.value) == (  # it named PGQUEUE_DSN only
        "no database configured: pass PgQueue(dsn=...), or set PGQUEUE_DSN or DATABASE_URL"
    )


def test_dsn_variables_are_read_as_the_clis_dsn_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """PGQUEUE_DSN and DATABASE_URL from a ConfigMap end in a newline, which a URL keeps in
    its last value (a database "x\\n"), and a blank one read as a DSN connected to libpq's
    default database: whitespace libpq ignores is dropped around them (not an escaped space
    ending a password), and a blank one is an error naming it."""
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.setenv("DATABASE_URL", " postgresql://h/x\r\n")
    assert pgqueue.PgQueue().dsn == "postgresql://h/x"
    monkeypatch.setenv("PGQUEUE_DSN", "host=h password=secret\\ \n")
    assert pgqueue.PgQueue().dsn == "host=h password=secret\\ "
    monkeypatch.setenv("PGQUEUE_DSN", " \n")
    with pytest.raises(pgqueue.ConfigurationError) as raised:
        _ = pgqueue.PgQueue().dsn
    assert str(raised.value) == "PGQUEUE_DSN is blank (' \\n'): set it to a DSN, or unset it"


def test_task_names_default_to_module_and_qualname() -> None:
    """@app.task names a task module.qualname; name= overrides; clashes are refused."""
    app = pgqueue.PgQueue("postgresql://unused")

    @app.task
    def one() -> None:
        """Do nothing."""

    @app.task(name="custom.name")
    def two() -> None:
        """Do nothing."""

    assert one.name == f"{__name__}.test_task_names_default_to_module_and_qualname.<locals>.one"
    assert app.get_task("custom.name") is two
    with pytest.raises(ValueError, match="already registered"):
        app.task(name="custom.name")(lambda: None)


@pytest.mark.parametrize("target", [5, "module.function", ["f"]])
def test_a_task_that_is_not_callable_is_a_type_error_naming_it(target: object) -> None:
    """app.task(5) used to fail with AttributeError: 'int' object has no attribute
    '__module__'."""
    with pytest.raises(
        TypeError, match=rf"^app.task registers a function, got {re.escape(repr(target))}$"
    ):
        pgqueue.PgQueue("postgresql://unused").task(target)  # type: ignore[call-overload]


def test_a_callable_without_a_qualified_name_needs_a_name() -> None:
    """A callable object has no __qualname__: it needs name=... (AttributeError, before),
    and with one it is registered."""

    class Send:
        def __call__(self, to: str) -> str:
            return to

    app = pgqueue.PgQueue("postgresql://unused")
    with pytest.raises(ValueError, match="give it one with name="):
        app.task(Send())
    assert app.task(name="send", executor="thread")(Send()).name == "send"


@pytest.mark.parametrize("hook", ["on_success", "on_failure"])
def test_a_callback_that_is_not_callable_is_refused_at_decoration(hook: str) -> None:
    """on_success="notify" used to be accepted, then logged as a TypeError after every job."""
    with pytest.raises(ValueError, match=rf"^{hook} must be a function \(or None\), got 'x'$"):
        pgqueue.PgQueue("postgresql://unused").task(**{hook: "x"})


def test_middleware_that_is_not_callable_is_refused() -> None:
    """app.middleware(5) used to be kept, then fail every attempt of every job."""
    app = pgqueue.PgQueue("postgresql://unused")
    with pytest.raises(TypeError, match=r"^middleware must be a function \(job, call_next\)"):
        app.middleware(5)  # type: ignore[arg-type]
    assert app.hooks.middleware == []


def test_process_executor_needs_an_importable_function() -> None:
    """executor='process' refuses nested functions and coroutines at decoration time."""
    app = pgqueue.PgQueue("postgresql://unused")
    with pytest.raises(ValueError, match="importable"):

        @app.task(executor="process")
        def nested() -> None:
            """Cannot be imported by a child process."""

    with pytest.raises(ValueError, match="coroutine"):

        @app.task(executor="process")
        async def coro() -> None:
            """Runs on the loop, not in a process."""


def _fails() -> None:
    """A task body; never called."""
    raise RuntimeError


@pytest.mark.parametrize(
    ("option", "value"),
    [("retry", 5), ("retry", {"base": 1}), ("on_success", "notify"), ("on_failure", 1),
     ("store_result", "no")],
)  # fmt: skip
def test_task_options_the_worker_calls_are_checked_at_registration(
    option: str, value: object
) -> None:
    """A retry that is no RetryPolicy or a hook that cannot be called raises ValueError naming
    it: the worker used to meet it only on a job's first failure, and stall a slot on it."""
    app = pgqueue.PgQueue("postgresql://unused")
    with pytest.raises(ValueError, match=f"{option} must be"):
        app.task(**{option: value})(_fails)
    with pytest.raises(ValueError, match="retry must be a RetryPolicy"):
        pgqueue.PgQueue("postgresql://unused", retry=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [("redact", "secret", "redact must be a function"), ("dsn", 5432, "dsn must be a string"),
     ("max_payload_bytes", "1MB", "max_payload_bytes must be"),
     ("max_payload_bytes", 0, "max_payload_bytes must be"),
     ("max_payload_bytes", True, "max_payload_bytes must be")],
)  # fmt: skip
def test_app_arguments_are_checked_at_construction(
    argument: str, value: object, message: str
) -> None:
    """PgQueue(...) refuses a redact it cannot call, a DSN that is no string and a payload
    limit that is no positive int, instead of failing later in a worker or an enqueue."""
    with pytest.raises(ValueError, match=message):
        pgqueue.PgQueue(**{argument: value})  # type: ignore[arg-type]


def test_only_a_function_can_be_registered_as_a_task() -> None:
    """@app.task on something that is not callable raises TypeError naming it."""
    app = pgqueue.PgQueue("postgresql://unused")
    with pytest.raises(TypeError, match="registers a function, got 5"):
        app.task(5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="registers a function, got 'x'"):
        app.task(name="x")("x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("base", "1"), ("cap", None), ("factor", timedelta(seconds=2)), ("base", True),
     ("jitter", "no")],
)  # fmt: skip
def test_retry_policy_fields_of_the_wrong_type_are_named(field: str, value: object) -> None:
    """RetryPolicy(base="1") and the like raise ValueError naming the field, not a TypeError
    from a comparison inside it; jitter must be a bool ("no" would have meant yes)."""
    with pytest.raises(ValueError, match=f"RetryPolicy {field} must be"):
        pgqueue.RetryPolicy(**{field: value})  # type: ignore[arg-type]


_BASE = "RetryPolicy base must be a number of seconds from 0 to 31557600000 (1000 years), got "
_FACTOR = "RetryPolicy factor must be a number from 1 to 1.8e+308 (the largest float), got "


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("base", 10**5000, _BASE + "an int of 5001 digits"), ("base", 1e300, _BASE + "1e+300"),
     ("base", MAX_DELAY * 2, _BASE + "63115200000.0"), ("base", -1, _BASE + "-1"),
     ("base", math.nan, _BASE + "nan"), ("factor", 10**5000, _FACTOR + "an int of 5001 digits"),
     ("factor", 10**309, _FACTOR + "an int of 310 digits"), ("factor", 0.5, _FACTOR + "0.5"),
     ("factor", math.inf, _FACTOR + "inf")],
    ids=["base 10**5000", "base 1e300", "base 2000 years", "base -1", "base nan",
         "factor 10**5000", "factor 10**309", "factor 0.5", "factor inf"],
)  # fmt: skip
def test_retry_policy_values_out_of_range_are_refused_naming_the_range(
    field: str, value: float, message: str
) -> None:
    """RetryPolicy(base=10**5000) was taken, and then repr() of the policy (and of every
    JobOptions holding it) raised Python's "Exceeds the limit (4300 digits)"; a base of 1e300
    s was taken too. base is a wait, as a delay is (0 to 1000 years), and factor a finite
    number >= 1; the error names the field and its range."""
    with pytest.raises(ValueError) as raised:
        pgqueue.RetryPolicy(**{field: value})
    assert str(raised.value) == message


@pytest.mark.parametrize("value", [True, "5", [1], b"5", date(2030, 1, 1)])
def test_delays_and_timeouts_must_be_numbers_or_timedeltas(value: object) -> None:
    """A bool, a string or a list as a delay or timeout raises ValueError naming it: True
    was one second, "5" five, and timeout=True failed only in SQL."""
    with pytest.raises(ValueError, match="delay must be a number of seconds or a timedelta"):
        JobOptions(delay=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a number of seconds or a timedelta"):
        JobOptions(timeout=value)  # type: ignore[arg-type]


HUGE = 10**400  # an int past every float: float() raises OverflowError on it


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("delay", HUGE, "delay must be a number of seconds from 0 to 31557600000 (1000 years)"),
     ("delay", -HUGE, "delay must be a number of seconds >= 0"),
     ("timeout", HUGE, "timeout must be a finite number of seconds > 0 (None for no timeout)"),
     ("timeout", -HUGE, "timeout must be a number of seconds >= 0")],
    ids=["delay", "negative delay", "timeout", "negative timeout"],
)  # fmt: skip
def test_an_int_past_every_float_is_refused_naming_the_option_and_range(
    option: str, value: int, message: str
) -> None:
    """task.using(delay=10**400) and app.task(timeout=10**400) raised OverflowError ("int
    too large to convert to float"), naming neither the option nor what it accepts."""
    app = pgqueue.PgQueue("postgresql://unused")
    task = app.task(name="x")(_fails)
    with pytest.raises(ValueError, match=re.escape(message)):
        task.using(**{option: value})
    if option == "timeout":  # a task's own option too
        with pytest.raises(ValueError, match=re.escape(message)):
            app.task(name="y", timeout=value)(_fails)


TOO_LONG = 10**5000  # past the 4,300 digits repr() writes of an int


@pytest.mark.parametrize(
    ("make", "message"),
    [(lambda app: app.task(name="x")(_fails).using(delay=TOO_LONG), "delay must be"),
     (lambda app: app.task(name="x")(_fails).using(delay=-TOO_LONG), "delay must be"),
     (lambda app: app.task(name="x", timeout=TOO_LONG)(_fails), "timeout must be"),
     (lambda app: app.task(name="x", priority=TOO_LONG)(_fails), "priority"),
     (lambda app: app.wait_sync(TOO_LONG), "invalid job id"),
     (lambda app: app.wait_sync(1, timeout=-TOO_LONG), "timeout must be"),
     (lambda app: app.wait_sync(1, poll_interval=TOO_LONG), "poll_interval must be"),
     (lambda app: pgqueue.RetryPolicy(cap=TOO_LONG), "RetryPolicy cap must be"),
     (lambda app: pgqueue.RetryPolicy(base=TOO_LONG), "RetryPolicy base must be"),
     (lambda app: pgqueue.RetryPolicy(factor=TOO_LONG), "RetryPolicy factor must be"),
     (lambda app: app.periodic("* * * * *", catch_up=TOO_LONG)(_fails), "catch_up must be")],
    ids=["delay", "negative delay", "timeout", "priority", "job id",
         "wait timeout", "poll_interval", "cap", "base", "factor", "catch_up"],
)  # fmt: skip
def test_an_int_too_long_to_print_is_refused_with_its_size(make: Any, message: str) -> None:
    """using(delay=10**5000) raised Python's own ValueError "Exceeds the limit (4300 digits)
    for integer string conversion" from formatting the value into the message, which named
    neither the option nor what it accepts. The message now gives the int's size instead."""
    app = pgqueue.PgQueue("postgresql://unused")
    with pytest.raises(ValueError, match=message) as raised:
        make(app)
    assert "int of 5001 digits" in str(raised.value)


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: datetimes with it are naive to Python."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


@pytest.mark.parametrize(
    "run_at",
    [datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC),
     datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
     datetime(9999, 12, 31, 1, tzinfo=UTC),
     datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))],  # year 10000 in UTC
)  # fmt: skip
def test_run_at_psycopg_could_not_read_back_is_rejected(run_at: datetime) -> None:
    """datetime.max/min with a zone were stored, then get_job and list_jobs failed on them
    in sessions east or west of UTC (year 10000, or before year 1); year 1 at +14:00 failed
    the enqueue itself with a DataError. Now ValueError gives the range."""
    with pytest.raises(
        ValueError,
        match=r"run_at must be from 0001-01-02T00:00:00\+00:00 to 9999-12-31T00:00:00\+00:00",
    ):
        JobOptions(run_at=run_at)
    assert JobOptions(run_at=RUN_AT_MAX).run_at == RUN_AT_MAX
    assert JobOptions(run_at=RUN_AT_MIN).run_at == RUN_AT_MIN


def test_run_at_with_a_tzinfo_that_gives_no_offset_is_naive() -> None:
    """A tzinfo whose utcoffset() is None leaves the datetime naive: refused like one."""
    with pytest.raises(ValueError, match="timezone-aware"):
        JobOptions(run_at=datetime(2030, 1, 1, tzinfo=_NoOffset()))


def test_delay_and_run_at_in_one_using_call_are_refused() -> None:
    """using(delay=..., run_at=...) raises, as documented, instead of dropping run_at."""
    app = pgqueue.PgQueue("postgresql://unused")
    task = app.task(name="x")(_fails)
    with pytest.raises(ValueError, match="either delay or run_at"):
        task.using(delay=5, run_at=datetime(2030, 1, 1, tzinfo=UTC))


def test_names_and_keys_that_are_not_utf8_are_refused_naming_what_they_are() -> None:
    """A lone surrogate in a task name, unique_key or schedule name passed the check, and
    psycopg then failed to encode it at enqueue (or at a periodic's tick); a bad unique_key
    was reported as an "invalid task name"."""
    app = pgqueue.PgQueue("postgresql://unused")
    with pytest.raises(ValueError, match=r"invalid task name 'a\\udc80': it is not valid UTF-8"):
        app.task(name="a\udc80")(_fails)
    with pytest.raises(ValueError, match="invalid task name"):
        app.using("a\udc80")
    with pytest.raises(ValueError, match=r"invalid unique_key 'k\\ud800': it is not valid UTF-8"):
        JobOptions(unique_key="k\ud800")
    with pytest.raises(ValueError, match="invalid unique_key ''"):
        JobOptions(unique_key="")
    with pytest.raises(ValueError, match="invalid schedule name"):
        app.periodic("* * * * *", name="s\udfff")
    assert JobOptions(unique_key="clé-ünïcode-✓").unique_key == "clé-ünïcode-✓"


@pytest.mark.parametrize("name", [" ", "\t", " send", "send ", "send\n"])
def test_a_name_given_blank_or_padded_is_refused_where_it_is_given(name: str) -> None:
    """app.task(name=' ') was registered, and " send" is a typo that never matches "send":
    task, schedule and worker names are refused, naming the rule. A unique_key may hold any
    text, and so may a filter, so that jobs SQL enqueued under such a name can be found."""
    app = pgqueue.PgQueue("postgresql://unused")
    rule = "it is blank, or begins or ends with whitespace"
    with pytest.raises(ValueError, match=f"invalid task name {re.escape(repr(name))}: {rule}"):
        app.task(name=name)(_fails)
    with pytest.raises(ValueError, match=f"invalid task name .*{rule}"):
        app.using(name)
    with pytest.raises(ValueError, match=f"invalid schedule name .*{rule}"):
        app.periodic("* * * * *", name=name)
    app.task(name="billing render")(_fails)
    with pytest.raises(ValueError, match=f"invalid worker name .*{rule}"):
        app.worker(name=name)
    assert app.tasks == {"billing render": app.tasks["billing render"]}
    assert JobOptions(unique_key=name).unique_key == name


@pytest.mark.parametrize("name", [5, b"w1", "x" * 256, "w\x00"])
def test_a_worker_name_that_is_not_text_is_refused_at_construction(name: object) -> None:
    """Worker(name=5) was kept, and failed later in SQL; "" still means "make one up"."""
    app = pgqueue.PgQueue("postgresql://unused")
    app.task(name="t")(_fails)
    with pytest.raises(ValueError, match="invalid worker name"):
        app.worker(name=name)  # type: ignore[arg-type]
    assert app.worker(name="").name.startswith(socket.gethostname())


@pytest.mark.parametrize(
    ("text", "matches"),
    [("2.5", True), ("1e3", True), (".5", True), ("5.", True), ("1E+3", True), ("-0", True),
     ("1.5e-2", True), (".", False), ("e3", False), ("1e", False), ("1..2", False),
     ("inf", False), ("nan", False), ("1_0", False), ("+5", False), ("1" * 100_000, True),
     ("1" * 100_000 + "x", False)],
    ids=lambda value: value if isinstance(value, bool) or len(value) < 10 else "long",
)  # fmt: skip
def test_a_decimal_number_is_what_float_reads_in_ascii_digits(text: str, matches: bool) -> None:
    """The forms of a number of seconds on the command line; 100,000 digits (and a stray
    letter) are decided in linear time, where the pattern used to take minutes on them."""
    assert bool(DECIMAL_NUMBER.fullmatch(text)) is matches


@pytest.mark.parametrize("key", [42, 4.2, b"order-42", None.__class__])
def test_a_unique_key_that_is_not_a_str_is_refused_as_not_a_str(key: object) -> None:
    """unique_key=order.id (an int) was refused as "invalid unique_key 42: use 1-255
    characters", as if 42 were too long or too short; the error now says a key is a str."""
    with pytest.raises(ValueError, match=r"invalid unique_key .*: a unique_key is a str, not "):
        JobOptions(unique_key=key)  # type: ignore[arg-type]
