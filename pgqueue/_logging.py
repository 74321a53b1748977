"""Log set-up for the CLI: readable text by default, one JSON object per line for machines.

Records about a job carry ``job_id, task, queue, attempt, duration_ms, action`` as extras
(``extra={...}``), which the JSON format emits as top-level keys.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pgqueue._errors import LOG_LIMIT, TEXT_LIMIT, clipped, exception_text

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

log = logging.getLogger("pgqueue")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, a traceback cut as the JSON format's ``exception`` is."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei: Any) -> str:
        """The traceback, at most ``TEXT_LIMIT`` characters: its beginning and its end, which
        holds the innermost frames and the error (a task's 50 MB message was written whole)."""
        return clipped(super().formatException(ei), TEXT_LIMIT)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and every extra."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON: an extra named like one of its own fields is kept
        as ``extra_<name>``, and one that JSON cannot hold as its text."""
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[f"extra_{key}" if key in _OWN else key] = value
        if record.exc_info:
            data["exception"] = clipped(self.formatException(record.exc_info), TEXT_LIMIT)
        if record.stack_info:  # stack_info=True: where the record was made, as text shows it
            data["stack"] = self.formatStack(record.stack_info)
        try:
            return _dumps(data)
        except Exception:  # a NaN, tuple keys, a cycle, a value whose str() raises...
            return _dumps({key: _as_json(value) for key, value in data.items()})


_OWN = frozenset({"time", "level", "logger", "message", "exception", "stack"})


def _dumps(data: Any) -> str:
    # No NaN nor Infinity: Python writes them, JSON parsers refuse them.
    return json.dumps(data, default=str, allow_nan=False)


def _as_json(value: Any) -> Any:
    """``value`` if JSON holds it, else its text, else (its text raises) its type's name."""
    try:
        _dumps(value)
    except Exception:
        try:
            return str(value)
        except Exception:  # RecursionError too: nested deeper than Python prints
            return f"<{type(value).__name__}>"
    return value


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # of TextIO: stderr
    """The handler :func:`configure_logging` installs, with what it was given."""

    def __init__(self, level: str, fmt: str) -> None:
        super().__init__()
        self.given = (level, fmt)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send pgqueue's (and everything else's) logs to stderr as ``text`` or ``json``."""
    handler = _Handler(level, fmt)
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python prints a warning as two lines of text, and an exception that ends the process or
    # a thread as a traceback: in a JSON stream each is a record instead.
    logging.captureWarnings(fmt == "json")
    if fmt == "json":
        _install_hooks()
    else:
        _remove_hooks()


# The hooks ours replaced, called after ours (Sentry's SDK installs its own: it must still
# see the crash) unless they are Python's own, which would print the traceback again as text.
_previous_hook: Callable[[type[BaseException], BaseException, TracebackType | None], Any]
_previous_hook = sys.__excepthook__
_previous_thread_hook: Callable[[threading.ExceptHookArgs], Any] = threading.__excepthook__


def _install_hooks() -> None:
    global _previous_hook, _previous_thread_hook
    if sys.excepthook is not _log_uncaught:  # not set by an earlier call: keep what was
        _previous_hook, sys.excepthook = sys.excepthook, _log_uncaught
    if threading.excepthook is not _log_thread_uncaught:
        _previous_thread_hook, threading.excepthook = threading.excepthook, _log_thread_uncaught


def _remove_hooks() -> None:
    if sys.excepthook is _log_uncaught:  # set by an earlier call; another's hook stays
        sys.excepthook = _previous_hook
    if threading.excepthook is _log_thread_uncaught:
        threading.excepthook = _previous_thread_hook


# Set while a hook of ours runs in this thread. A hook that wraps ours and was installed
# between two configure_logging calls (a process-pool child's, around the app's set-up that
# inits an error tracker) is ours's previous hook as well as its caller: called back, ours
# returns, where the two called each other until a RecursionError.
_in_hook = threading.local()


def _log_uncaught(
    kind: type[BaseException], error: BaseException, tb: TracebackType | None
) -> None:
    """``sys.excepthook`` with JSON logs: the error that ends the process, as a record."""
    with _once() as first:
        if first:
            _crashed("the process", (kind, error, tb))
            if _previous_hook is not sys.__excepthook__:
                _previous_hook(kind, error, tb)


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook`` with JSON logs: the error that ends a thread, as a record."""
    with _once() as first:
        if not first:
            return
        if args.exc_value is not None and args.exc_type is not SystemExit:  # as Python's own
            _crashed(f"thread {args.thread.name if args.thread else '?'}",
                     (args.exc_type, args.exc_value, args.exc_traceback))  # fmt: skip
        if _previous_thread_hook is not threading.__excepthook__:
            _previous_thread_hook(args)


@contextlib.contextmanager
def _once() -> Iterator[bool]:
    """Yields whether no hook of ours is already running in this thread (see _in_hook)."""
    if getattr(_in_hook, "running", False):
        yield False
        return
    _in_hook.running = True
    try:
        yield True
    finally:
        _in_hook.running = False


def _crashed(what: str, exc_info: tuple[type[BaseException], BaseException, Any]) -> None:
    text = exception_text(exc_info[1], LOG_LIMIT)  # one whose str() raises too
    log.critical(
        "%s ended on an error nothing caught: %s: %s", what, exc_info[0].__name__, text,
        exc_info=exc_info, extra={"action": "uncaught_exception"},
    )  # fmt: skip


def json_logging() -> bool:
    """Whether the root logger writes JSON lines (``configure_logging(fmt="json")``)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def configured_logging() -> tuple[str, str] | None:
    """The ``(level, fmt)`` :func:`configure_logging` set the root logger up with, if its
    handler is still there: the process pool's children log the same way."""
    found = [h.given for h in logging.getLogger().handlers if isinstance(h, _Handler)]
    return found[0] if found else None
