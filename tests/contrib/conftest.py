"""Fixtures for the integration tests: Django set up once, pointed at each test's database."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

SETTINGS = "tests.contrib.django_project.settings"


def _tasks_flavour() -> str | None:
    for name in ("django.tasks", "django_tasks"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except ModuleNotFoundError:  # no Django at all
            return None
    return None


TASKS_FLAVOUR = _tasks_flavour()


def django_settings_for(dsn: str) -> dict[str, Any]:
    """Django DATABASES entries for a libpq DSN."""
    info = conninfo_to_dict(dsn)
    return {
        "NAME": info.get("dbname", ""), "USER": info.get("user", ""),
        "PASSWORD": info.get("password", ""), "HOST": info.get("host", ""),
        "PORT": info.get("port", ""),
    }  # fmt: skip


@pytest.fixture(scope="session")
def django_setup() -> None:
    """Django configured with the test project (skips when Django is not installed)."""
    django = pytest.importorskip("django", reason="Django is not installed (pgqueue[django])")
    from django.conf import settings

    if not settings.configured:
        # Read once here; kept out of os.environ so subprocesses of other tests never see it.
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        try:
            django.setup()
        finally:
            del os.environ["DJANGO_SETTINGS_MODULE"]


def close_connections() -> None:
    """Close Django's connections in this thread and in asgiref's sync thread, which runs
    thread-sensitive sync_to_async calls (such as aenqueue) for async tests."""
    from asgiref.sync import SyncToAsync
    from django.db import connections

    connections.close_all()
    SyncToAsync.single_thread_executor.submit(connections.close_all).result()


def use_database(dsn: str) -> None:
    """Point Django's default database at ``dsn`` (in every thread)."""
    from django.db import connections

    close_connections()
    connections["default"].settings_dict.update(django_settings_for(dsn))


@pytest.fixture
def django_db(django_setup: None, dsn: str) -> Iterator[str]:
    """Django's default database is this test's fresh, migrated (by alembic) database."""
    use_database(dsn)
    yield dsn
    close_connections()


@pytest.fixture
def tasks_flavour(django_setup: None) -> str:
    """The tasks framework in use; skips when neither django.tasks nor django_tasks exists."""
    if TASKS_FLAVOUR is None:
        pytest.skip("neither django.tasks (Django >= 6) nor django_tasks (backport) is installed")
    return TASKS_FLAVOUR


def subprocess_env(dsn: str) -> dict[str, str]:
    """Environment for manage.py of the test project in a subprocess."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {
        **os.environ, "PGQUEUE_DJANGO_DSN": dsn, "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }  # fmt: skip
