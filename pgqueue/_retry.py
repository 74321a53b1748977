"""Retry policy: exponential backoff with full jitter. Pure; no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
        if self.base < 0 or self.cap < 0:
            raise ValueError("RetryPolicy base and cap must be >= 0 seconds")
        if self.factor < 1:
            raise ValueError("RetryPolicy factor must be >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 64)  # beyond 2**64 the cap has long won
        return float(min(self.cap, self.base * self.factor**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the job runs again."""
        top = self.ceiling(attempt)
        if not self.jitter:
            return top
        return (rng or random).uniform(0.0, top)


RetryPolicy.__module__ = "pgqueue"
