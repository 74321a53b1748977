"""How the logs bound an error's text: the JSON logs' excepthooks an uncaught error's message,
and both formats a traceback."""

from __future__ import annotations

import json
import logging
import sys
import threading

import pytest

from pgqueue._errors import LOG_LIMIT, TEXT_LIMIT
from pgqueue._logging import _log_uncaught, configure_logging


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


def _installed_formatter(fmt: str) -> logging.Formatter:
    """The formatter ``configure_logging(fmt=fmt)`` installs (the root logger given back)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.excepthook, threading.excepthook
    try:
        configure_logging("info", fmt)
        formatter = root.handlers[0].formatter
    finally:
        root.handlers[:], level, sys.excepthook, threading.excepthook = saved
        root.setLevel(level)
        logging.captureWarnings(False)
    assert formatter is not None
    return formatter


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_huge_traceback_is_cut_in_both_formats(fmt: str) -> None:
    """Only the JSON format cut a record's traceback: in text, an error with a 5 MB message
    logged with its traceback wrote all 5 MB. Both keep the beginning and the end, where the
    innermost frame and the error's name are."""
    try:
        raise RuntimeError("x" * 5_000_000 + " the end")
    except RuntimeError:
        record = logging.makeLogRecord({"msg": "it failed", "exc_info": sys.exc_info()})
    line = _installed_formatter(fmt).format(record)
    text = json.loads(line)["exception"] if fmt == "json" else line
    assert len(text) < TEXT_LIMIT + 200
    assert "Traceback (most recent call last):" in text[:200]
    assert text.endswith("x the end") and "characters cut ...]" in text
