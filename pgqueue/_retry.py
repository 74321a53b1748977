"""Retry policy: exponential backoff with full jitter. Pure; no I/O."""

from __future__ import annotations

import math
import numbers
import random
import sys
from dataclasses import dataclass
from datetime import timedelta

# The longest wait before a job runs (a delay, a Retry, a policy's cap): 1,000 years, well
# inside PostgreSQL's intervals and timestamps and before the year 9999 psycopg reads back.
# Past those an enqueue fails in SQL, and a retry the ack statement cannot write (so also an
# infinite or NaN one) stalls every later ack of its worker.
MAX_DELAY = 1000 * 365.25 * 86400.0


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number and not a bool (``True`` is an int to Python, never
    a number of seconds, a factor or a cap)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite(value: float) -> bool:
    """Whether the number ``value`` is finite as a float: not NaN nor infinite, nor an int past
    every float (``10**400``), on which ``float()`` and float arithmetic raise OverflowError.
    Compared as given, so no conversion can overflow."""
    return -sys.float_info.max <= value <= sys.float_info.max


# Ints longer than this are shown by their size: repr() refuses past 4,300 digits, and a
# message of thousands of digits says no more than its size does.
_SHOWN_DIGITS = 100


def shown(value: object) -> str:
    """``repr(value)`` for an error message, bounded: an int of more than 100 digits (such as
    ``10**5000``, which repr() refuses) is shown as its number of digits."""
    if not isinstance(value, int) or abs(value) < 10**_SHOWN_DIGITS:
        return repr(value)
    digits = int(abs(value).bit_length() * math.log10(2))  # the count, or one short of it
    digits += abs(value) >= 10**digits
    return f"{'a negative' if value < 0 else 'an'} int of {digits} digits"


def check_delay(value: float | timedelta, what: str) -> float:
    """``value`` (seconds, or a ``timedelta``) as a float of seconds if SQL can hold it (0 to
    ``MAX_DELAY``), else ``ValueError`` naming ``what``. Written as "not in range" so that NaN
    fails too."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if not (is_number(seconds) and 0 <= seconds <= MAX_DELAY):
        raise ValueError(
            f"{what} must be a number of seconds from 0 to {MAX_DELAY:.0f} (1000 years), "
            f"got {shown(value)}"
        )
    return float(seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Wait ``uniform(0, min(cap, base * factor ** (attempt - 1)))`` seconds before attempt + 1.

    Full jitter spreads retries of jobs that failed together (AWS architecture blog,
    "Exponential Backoff And Jitter"), so a dependency that comes back is not stampeded.
    """

    base: float = 2.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("base", "factor", "cap"):
            value = getattr(self, name)
            if not is_number(value):
                raise ValueError(f"RetryPolicy {name} must be a number, got {shown(value)}")
        if not isinstance(self.jitter, bool):
            raise ValueError(f"RetryPolicy jitter must be True or False, got {self.jitter!r}")
        # As delays are: an int past every float (10**5000) was taken, and then repr() failed
        # on the policy, and every options object holding it.
        check_delay(self.base, "RetryPolicy base")
        check_delay(self.cap, "RetryPolicy cap")
        if not (self.factor >= 1 and is_finite(self.factor)):  # NaN compares false: it fails
            raise ValueError(
                f"RetryPolicy factor must be a number from 1 to {sys.float_info.max:.1e} (the"
                f" largest float), got {shown(self.factor)}"
            )

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 64)  # beyond 2**64 the cap has long won
        try:
            grown = self.base * self.factor**exponent
        except OverflowError:  # a large factor: past any float, so past the cap
            return 0.0 if self.base == 0 else float(self.cap)
        return float(min(self.cap, grown))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the job runs again."""
        top = self.ceiling(attempt)
        if not self.jitter:
            return top
        return (rng or random).uniform(0.0, top)


def unknown_task_delay(delay: float, floor: float, rng: random.Random | None = None) -> float:
    """The wait before a job of an unknown task runs again: the policy's ``delay``, else, when
    it is shorter than ``floor``, a wait drawn from ``floor`` to 1.5 x ``floor``. A deploy
    rolling out takes minutes, and the policy's retries of a few seconds were over before the
    next worker that knows the task came up; the draw spreads the jobs that failed together."""
    if delay >= floor:
        return delay
    return min((rng or random).uniform(floor, 1.5 * floor), MAX_DELAY)


RetryPolicy.__module__ = "pgqueue"
