"""Pure policies: retry backoff and JSON encoding."""

from __future__ import annotations

import math
import pickle
import random
import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgqueue import PgQueue, Retry, RetryPolicy
from pgqueue._errors import LOG_LIMIT, TEXT_LIMIT, clipped, error_line, exception_text
from pgqueue._json import dumps, dumps_arguments
from pgqueue._retry import MAX_DELAY, unknown_task_delay
from pgqueue._store import pg_text


@given(attempt=st.integers(1, 10_000), seed=st.integers(0, 2**32))
def test_full_jitter_stays_between_zero_and_the_capped_exponential(attempt: int, seed: int) -> None:
    """Every delay lies in [0, min(cap, base * factor**(attempt-1))]."""
    policy = RetryPolicy(base=1.5, factor=2.0, cap=600.0)
    delay = policy.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= min(600.0, 1.5 * 2.0 ** min(attempt - 1, 64))


def test_ceiling_grows_exponentially_then_caps() -> None:
    """Without jitter the delays are base, base*2, base*4 ... up to cap."""
    policy = RetryPolicy(base=1.0, cap=10.0, jitter=False)
    assert [policy.delay(a) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_spreads_retries() -> None:
    """Full jitter does not give every job the same delay."""
    rng = random.Random(1)
    delays = {RetryPolicy(base=10).delay(3, rng) for _ in range(50)}
    assert len(delays) == 50


@pytest.mark.parametrize(
    "bad",
    [{"base": -1}, {"factor": 0.5}, {"base": math.nan}, {"base": math.inf},
     {"factor": math.nan}, {"factor": math.inf}, {"cap": math.nan}, {"cap": math.inf},
     {"cap": MAX_DELAY * 1.001}],
)  # fmt: skip
def test_bad_policies_are_rejected(bad: dict[str, float]) -> None:
    """Negative, NaN or infinite durations and factors, factors below 1 and caps over 1000
    years raise ValueError: the acker could not write their retries."""
    with pytest.raises(ValueError, match=f"RetryPolicy {next(iter(bad))} must be"):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_a_large_factor_reaches_the_cap_without_overflowing() -> None:
    """factor ** 64 past the largest float is simply past the cap (it raised OverflowError
    in the worker, for jobs with more than 64 attempts)."""
    assert RetryPolicy(factor=1e10, cap=60.0, jitter=False).delay(65) == 60.0
    assert RetryPolicy(base=0, factor=1e10).ceiling(1000) == 0.0
    assert RetryPolicy(factor=1e10, cap=60.0).ceiling(2) == 60.0


@pytest.mark.parametrize("delay", [-1.0, math.nan, math.inf, MAX_DELAY * 1.001])
def test_retry_delays_the_ack_cannot_write_are_rejected(delay: float) -> None:
    """Retry(delay) outside 0..1000 years raises ValueError in the task, not in the acker:
    one unwritable outcome would stall every later ack of its worker."""
    with pytest.raises(ValueError, match="Retry delay must be"):
        Retry(delay)
    assert Retry(MAX_DELAY).delay == MAX_DELAY


@pytest.mark.parametrize("delay", ["30", True, None, timedelta(seconds=-1)])
def test_a_retry_delay_that_is_no_number_is_a_value_error_that_says_so(delay: object) -> None:
    """Retry(delay=response.headers["Retry-After"]), a str: the task failed with "TypeError:
    '<=' not supported between instances of 'int' and 'str'", which named neither Retry nor
    its delay; True was taken as one second."""
    with pytest.raises(ValueError, match=r"Retry delay must be a number of seconds .*, got "):
        Retry(delay)  # type: ignore[arg-type]


def test_a_retry_delay_may_be_a_timedelta_and_still_pickles() -> None:
    """Retry(delay=timedelta(minutes=5)) was refused, where using(delay=) takes a timedelta:
    it is taken as its seconds, and crosses the process pool's pipe as itself."""
    retry = Retry(timedelta(minutes=5))
    assert retry.delay == 300.0
    assert str(retry) == "retry in 300.0 s"
    again = pickle.loads(pickle.dumps(retry))
    assert (type(again), again.delay) == (Retry, 300.0)
    with pytest.raises(ValueError, match=r"Retry delay must be .*, got -1\.0"):
        Retry(timedelta(seconds=-1))


def test_unserialisable_argument_is_named() -> None:
    """The TypeError names the positional or keyword argument that is not JSON."""
    with pytest.raises(TypeError, match="positional argument 1 of task 't'"):
        dumps_arguments("t", [1, object()], {})
    with pytest.raises(TypeError, match="keyword argument 'when'"):
        dumps_arguments("t", [], {"when": {1, 2}})


@pytest.mark.parametrize(
    ("args", "kwargs", "where", "keys"),
    [
        ([{1: "a", "1": "b"}], {}, "positional argument 0", r"1 and '1' .* \"1\""),
        ([], {"opts": {"x": [{None: 1, "null": 2}]}}, "keyword argument 'opts'", r"\['x'\]\[0\]"),
        ([[{True: 1, "true": 2}]], {}, "positional argument 0", r"\[0\]: .*\"true\""),
        ([{"a": {1.5: 1, "1.5": 2}}], {}, "positional argument 0", r"\['a'\]: .*1\.5"),
    ],
)
def test_dict_keys_that_json_would_make_one_are_refused_and_named(
    args: list[object], kwargs: dict[str, object], where: str, keys: str
) -> None:
    """JSON turns 1 into "1": a dict holding both would keep one value only (jsonb keeps the
    last), so it is refused, naming the argument, where in it, and the keys."""
    with pytest.raises(TypeError, match=rf"{where} of task 't'.*{keys}"):
        dumps_arguments("t", args, kwargs)


def test_dict_keys_of_mixed_types_that_stay_apart_are_kept() -> None:
    """Only keys JSON would merge are refused: 1 and "2", None and "x" stay two keys."""
    value = {1: "a", "2": "b", None: "c", "x": {True: 1, "false": 0}}
    assert dumps_arguments("t", [value], {"v": value}) == (
        '[{"1":"a","2":"b","null":"c","x":{"true":1,"false":0}}]',
        '{"v":{"1":"a","2":"b","null":"c","x":{"true":1,"false":0}}}',
    )


def test_an_iterator_of_arguments_still_names_the_bad_one() -> None:
    """Arguments given as an iterator are read once: the error still names the bad one."""
    with pytest.raises(TypeError, match="positional argument 1 of task 't'"):
        dumps_arguments("t", iter([1, object()]), {})


def _nested_in_lists(value: object, depth: int) -> object:
    for _ in range(depth):
        value = [value]
    return value


def test_dict_keys_are_looked_into_as_deep_as_json_encodes() -> None:
    """Keys of mixed types at the bottom of a value as deep as the encoder takes: kept apart,
    or refused and named when JSON would merge them. The look into them recursed in Python,
    whose limit Python 3.12 and later no longer share with the encoder's (in C): a
    RecursionError escaped the enqueue of a value 1,100 lists deep."""
    depth = 3000
    while depth > 100:  # Python 3.11 encodes about 990 levels, 3.12 about 1,900, 3.13 more
        try:
            dumps(_nested_in_lists({2: 0}, depth + 1))
            break
        except TypeError:
            depth -= 100
    kept = _nested_in_lists({1: "a", "b": 1}, depth)
    assert dumps_arguments("t", [kept], {})[0].endswith('{"1":"a","b":1}' + "]" * (depth + 1))
    merged = _nested_in_lists({1: "a", "1": "b"}, depth)
    where = rf"argument 0 of task 't' at (\[0\]){{{depth}}}: dict keys 1 and '1'"
    with pytest.raises(TypeError, match=where):
        dumps_arguments("t", [merged], {})


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), "nul\x00byte", {"k": "\x00"}, "lone \ud800", {"\udfff": 1}],
)
def test_values_postgres_cannot_store_are_refused(value: object) -> None:
    """NaN, Infinity, NUL characters and lone surrogates (not UTF-8) are refused before
    reaching the database."""
    with pytest.raises(TypeError):
        dumps(value)


def test_a_surrogate_pair_and_other_unicode_are_kept() -> None:
    """Only a lone surrogate is refused: the characters it could be half of are stored."""
    assert dumps(["\U0001f600", "\u00e9", "\ud83d\ude00".encode("utf-16", "surrogatepass")
                  .decode("utf-16")]) == '["\U0001f600","\u00e9","\U0001f600"]'  # fmt: skip


def test_a_value_nested_too_deeply_is_a_type_error_naming_the_argument() -> None:
    """The encoder's RecursionError becomes the TypeError every unstorable value raises."""
    deep: list[object] = []
    for _ in range(20_000):  # Python 3.13's encoder takes 5,000 levels
        deep = [deep]
    with pytest.raises(TypeError, match=r"positional argument 0 of task 't'.*nested too deeply"):
        dumps_arguments("t", [deep], {})


def test_a_lone_surrogate_argument_is_named() -> None:
    """An argument that is not UTF-8 is named, like any other that cannot be stored."""
    with pytest.raises(TypeError, match=r"keyword argument 'name' .* lone surrogate"):
        dumps_arguments("t", [], {"name": "\udc80"})


@pytest.mark.parametrize(("name", "why"), [("a\x00b", "NUL"), ("a\udc80", "lone surrogate")])
def test_a_keyword_name_postgres_cannot_store_is_named(name: str, why: str) -> None:
    """A keyword argument's name is part of the stored JSON too: one holding a NUL or a lone
    surrogate is named, and its task, as a value would be; the error used to say only
    "strings containing NUL ...", naming neither."""
    with pytest.raises(
        TypeError, match=rf"^keyword argument name {re.escape(repr(name))} of task 't': .*{why}"
    ):
        dumps_arguments("t", [], {"ok": 1, name: 2})


@pytest.mark.parametrize(
    ("text", "stored"),
    [("plain", "plain"), ("a\x00b", "a\\x00b"), ("\udc80!", "\\udc80!"), ("\u00e9", "\u00e9"),
     (None, None)],
)  # fmt: skip
def test_error_texts_are_made_storable(text: str | None, stored: str | None) -> None:
    """Error texts (a task's own words) keep every character, NUL and lone surrogates as
    backslash escapes: the ack writes them rather than refusing its batch."""
    assert pg_text(text) == stored


def test_escaped_backslash_u0000_text_is_allowed() -> None:
    """The six characters \\u0000 (backslash, not NUL) are ordinary text."""
    assert dumps("\\u0000") == '"\\\\u0000"'


def test_payload_limit_is_enforced() -> None:
    """Arguments above the payload cap raise ValueError giving both sizes."""
    with pytest.raises(ValueError, match="limit is 100 bytes"):
        dumps_arguments("t", ["x" * 200], {}, max_bytes=100)


def test_a_long_error_text_keeps_its_head_and_tail_within_the_limit() -> None:
    """A task's 5 MB message was stored, and logged, whole: it is cut to the limit, its
    beginning and end kept, a marker between them saying how many characters went."""
    text = "HEAD" + "x" * 5_000_000 + "TAIL"
    cut = clipped(text)
    assert len(cut) <= TEXT_LIMIT
    assert cut.startswith("HEAD") and cut.endswith("TAIL")
    [removed] = re.findall(r"\[\.\.\. (\d+) characters cut \.\.\.\]", cut)
    assert len(cut) - len(f"\n[... {removed} characters cut ...]\n") + int(removed) == len(text)
    assert len(clipped(text, LOG_LIMIT)) <= LOG_LIMIT < TEXT_LIMIT
    short = "y" * TEXT_LIMIT
    assert clipped(short) is short


def test_the_texts_of_errors_are_bounded_where_they_are_made() -> None:
    """exception_text(), and first_line() under error_line(), give at most their limits."""
    exc = RuntimeError("A" + "b" * 1_000_000 + "Z")
    assert len(exception_text(exc)) <= TEXT_LIMIT and exception_text(exc).endswith("Z")
    assert len(error_line(exc)) <= LOG_LIMIT + len("RuntimeError: ")


@given(
    st.floats(0, 1e6),
    st.floats(0, 1e6),
    st.integers(0, 2**32),
)
def test_an_unknown_tasks_retry_waits_at_least_the_floor(
    delay: float, floor: float, seed: int
) -> None:
    """The policy's delay when it reaches the floor; else a draw from the floor to half as
    long again (so that jobs failed together return apart); a floor of 0 is the policy's."""
    waited = unknown_task_delay(delay, floor, random.Random(seed))
    if delay >= floor:
        assert waited == delay
    else:
        assert floor <= waited <= 1.5 * floor
    assert unknown_task_delay(delay, 0.0) == delay


def test_an_unknown_tasks_retries_are_spread_and_end_before_max_delay() -> None:
    """Many jobs that failed together do not all return at the floor; a floor near the
    largest delay does not draw past what SQL can hold."""
    rng = random.Random(7)
    waits = {round(unknown_task_delay(1.0, 60.0, rng)) for _ in range(200)}
    assert len(waits) > 20
    assert unknown_task_delay(1.0, MAX_DELAY, rng) <= MAX_DELAY


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, "60", None, MAX_DELAY * 2])
def test_pgqueue_refuses_an_unknown_task_delay_that_is_not_a_wait(bad: object) -> None:
    """unknown_task_delay is a number of seconds from 0 to MAX_DELAY, checked as delays are."""
    with pytest.raises(ValueError, match="unknown_task_delay must be a number of seconds"):
        PgQueue(unknown_task_delay=bad)  # type: ignore[arg-type]
    assert PgQueue(unknown_task_delay=0).unknown_task_delay == 0.0
