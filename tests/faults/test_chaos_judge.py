"""The chaos judge's verdict on a job's last run, without a database (see chaos._final)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.faults.chaos import Run, _final

_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _run(attempt: int, action: str) -> Run:
    return Run(run=1, attempt=attempt, action=action, pid=1, started=_AT, ended=_AT)


def test_a_retry_raised_after_the_timer_expired_may_end_the_last_attempt_timed_out() -> None:
    """A Retry() raised once the job's timer had expired counts as a timeout: on the last
    attempt of a job with a timeout, the job ends failed, timed out, and that is right."""
    last = _run(1, "retry")
    assert _final(last, "failed", 1, 1, "timed out after 0.3 s", timeout=True) is None


def test_a_retry_that_timed_out_is_judged_as_a_timeout_and_nothing_looser() -> None:
    """The same end is wrong for a job without a timeout, before its last attempt, at an
    attempt its run did not have, or with another error or state."""
    last = _run(1, "retry")
    assert _final(last, "failed", 1, 1, "timed out after 0.3 s", timeout=False)
    assert _final(_run(1, "retry"), "failed", 1, 2, "timed out after 0.3 s", timeout=True)
    assert _final(_run(1, "retry"), "failed", 2, 2, "timed out after 0.3 s", timeout=True)
    assert _final(last, "failed", 1, 1, "RuntimeError: planned failure", timeout=True)
    assert _final(last, "succeeded", 1, 1, "", timeout=True)
    assert _final(last, "cancelled", 1, 1, "timed out after 0.3 s", timeout=True)


def test_the_judge_still_sees_a_job_that_ended_after_asking_to_run_again() -> None:
    """A job that ended failed for another reason after a run that raised Retry() is wrong."""
    assert "asked to run again" in str(_final(_run(2, "retry_delay"), "failed", 2, 6, "x",
                                              timeout=False))  # fmt: skip
