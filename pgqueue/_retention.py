"""Retention: how long finished jobs are kept per state, and the pruning workers do.

Failed jobs are kept longest by default: they are the ones someone has to look at.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from pgqueue import _store
from pgqueue._job import TERMINAL_STATES
from pgqueue._retry import MAX_DELAY, is_number

if TYPE_CHECKING:
    from pgqueue._worker._db import Db

log = logging.getLogger("pgqueue.worker")

DAY = 86400.0
DEFAULT_RETENTION: dict[str, float | None] = {
    "succeeded": 1 * DAY,
    "cancelled": 7 * DAY,
    "failed": 14 * DAY,
}


def retention_ages(config: Mapping[str, float | timedelta | None] | None) -> dict[str, float]:
    """Seconds to keep finished jobs per state: ``config`` over the defaults.

    A state mapped to ``None`` is kept forever. Raises ``ValueError`` on unknown states.
    """
    merged = {**DEFAULT_RETENTION, **(config or {})}
    unknown = set(merged) - TERMINAL_STATES
    if unknown:
        raise ValueError(f"retention is for finished states only, not {', '.join(unknown)}")
    return {state: check_age(age, f"retention of {state!r} jobs (None keeps them forever)")
            for state, age in merged.items() if age is not None}  # fmt: skip


def check_age(age: float | timedelta, what: str) -> float:
    """``age`` in seconds if the prune statement can subtract it from now() (0 to 1000 years),
    else ``ValueError`` naming ``what``. Past that the statement failed on every pass
    ("interval out of range") and pruned no state at all."""
    seconds = age.total_seconds() if isinstance(age, timedelta) else age
    if not (is_number(seconds) and 0 <= seconds <= MAX_DELAY):  # NaN fails the comparison too
        raise ValueError(f"{what} must be seconds or a timedelta from 0 to 1000 years, got {age!r}")
    return float(seconds)


class Pruner:
    """Deletes expired finished jobs in small batches, a bounded number per pass.

    Each batch is its own short statement on finished_jobs only, so pruning never holds a
    lock the claim path needs, and a pass ends after ``max_batches`` whatever the backlog.
    """

    def __init__(self, ages: Mapping[str, float], batch: int = 1000, max_batches: int = 10):
        self.ages = dict(ages)
        self.batch = batch
        self.max_batches = max_batches

    async def run(self, db: Db) -> int:
        """One pass; returns how many jobs were deleted."""
        if not self.ages:
            return 0
        total = 0
        after: _store.Pruned = {}  # where each state's next batch reads on from
        for _ in range(self.max_batches):
            deleted = await db.run(_store.jobs_prune(self.ages, self.batch, after=after))
            count = sum(n for n, _ in deleted.values())
            total += count
            after |= deleted
            if count < self.batch:
                break
        if total:
            log.info(
                "pruned %s finished jobs past their retention", total,
                extra={"action": "jobs_pruned", "count": total},
            )  # fmt: skip
        return total
