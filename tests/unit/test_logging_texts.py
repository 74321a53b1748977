"""How the JSON logs' excepthooks bound an uncaught error's message."""

from __future__ import annotations

import logging
import sys

import pytest

from pgqueue._errors import LOG_LIMIT
from pgqueue._logging import _log_uncaught


def test_an_uncaught_errors_long_message_says_how_much_was_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The message was cut to 65,536 characters, then to 4,096: the marker counted what the
    second cut took from the first's text, not from the message (61,440 of 5,000,000)."""
    message = "x" * 5_000_000
    try:
        raise RuntimeError(message)
    except RuntimeError:
        kind, error, tb = sys.exc_info()
    caplog.set_level(logging.CRITICAL, "pgqueue")
    _log_uncaught(kind, error, tb)  # type: ignore[arg-type]
    [record] = [r for r in caplog.records if r.__dict__.get("action") == "uncaught_exception"]
    assert f"[... {len(message) - (LOG_LIMIT - 64)} characters cut ...]" in record.getMessage()
