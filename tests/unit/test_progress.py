"""How the progress of batches is said on a pipe: held back between intervals, never lost."""

from __future__ import annotations

import pytest

from pgqueue import (
    _cli,  # noqa: F401  (first: it loads _cli_ops, which needs it)
    _cli_ops,
)
from pgqueue._cli_ops import _Progress


def test_a_pipe_sees_a_line_per_interval_and_the_count_held_back_at_the_end(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first count is said at once; later ones only once PROGRESS_EVERY seconds have
    passed since the last line; end() says the one held back, and nothing when none is."""
    monkeypatch.setattr(_cli_ops, "PROGRESS_EVERY", 5.0)
    now = [100.0]
    progress = _Progress(clock=lambda: now[0])
    for moment, count in ((100.0, 1), (101.0, 2), (104.9, 3), (105.0, 4), (107.0, 5)):
        now[0] = moment
        progress.say(f"{count} so far")
    progress.end()
    progress.end()
    assert capsys.readouterr().err.splitlines() == ["1 so far", "4 so far", "5 so far"]


def test_a_count_said_at_its_interval_is_not_said_again_by_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A last count that was said (its interval had passed) is not repeated as the total."""
    now = [0.0]
    progress = _Progress(clock=lambda: now[0])
    progress.say("1 so far")
    now[0] = 3600.0
    progress.say("2 so far")
    progress.end()
    assert capsys.readouterr().err.splitlines() == ["1 so far", "2 so far"]


def test_a_batch_that_changed_nothing_is_not_said_again_as_the_total(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch that changes no job (failed jobs whose unique keys queued jobs hold, which
    `jobs retry --failed` skips) repeats the count so far: held back, end() said the line
    just said once more. A count said is not said again, whatever the interval."""
    now = [0.0]
    progress = _Progress(clock=lambda: now[0])
    progress.say("1 so far")
    progress.say("1 so far")
    now[0] = 3600.0
    progress.say("1 so far")
    progress.end()
    assert capsys.readouterr().err.splitlines() == ["1 so far"]
