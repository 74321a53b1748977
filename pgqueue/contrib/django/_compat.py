"""Django's tasks framework: ``django.tasks`` (Django 6+) or the ``django_tasks`` backport.

Both expose the same API; the one built into Django wins when both are importable.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def _flavour() -> str:
    try:
        importlib.import_module("django.tasks")
        return "django.tasks"
    except ImportError:
        pass
    try:
        importlib.import_module("django_tasks")
        return "django_tasks"
    except ImportError:
        raise ImportError(
            "PgQueueBackend needs Django's tasks framework: Django >= 6.0, or "
            "pip install django-tasks on Django 5.2"
        ) from None


FLAVOUR = _flavour()


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{FLAVOUR}.{name}")


_base, _backends, _signals, _exceptions = (
    _module(n) for n in ("base", "backends.base", "signals", "exceptions")
)
BaseTaskBackend: Any = _backends.BaseTaskBackend
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
TaskError: Any = _base.TaskError
TaskContext: Any = _base.TaskContext
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
InvalidTask: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
normalize_json: Any = (
    getattr(_base, "normalize_json", None)
    or importlib.import_module(f"{FLAVOUR}.utils").normalize_json
)
