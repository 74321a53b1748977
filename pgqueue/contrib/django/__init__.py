"""pgqueue for Django: ``INSTALLED_APPS += ["pgqueue.contrib.django"]``.

- ``app``: the :class:`pgqueue.PgQueue` configured by the ``PGQUEUE`` setting; decorate your
  functions with ``@app.task`` in your apps' ``tasks.py``.
- ``connection()``: Django's connection to pgqueue's database. ``task.enqueue(connection(),
  ...)`` (or ``django.db.connection``) inside ``transaction.atomic()`` commits and rolls back
  with your ORM writes.
- ``dsn()``: the libpq DSN workers and ``manage.py pgqueue`` use (``PGQUEUE["DSN"]``, else
  the settings of ``PGQUEUE["DATABASE"]``).
- ``PgQueueBackend``: a backend for Django's tasks framework (``django.tasks`` on Django 6,
  the ``django_tasks`` backport on 5.2).
"""

from __future__ import annotations

from typing import Any

from pgqueue.contrib.django._conf import connection, dsn, get_app

__all__ = ["PgQueueBackend", "app", "connection", "dsn", "get_app"]


def __getattr__(name: str) -> Any:
    # Lazy: settings must be configured before the app exists, and the tasks framework is
    # optional (django.tasks or the django_tasks backport).
    if name == "app":
        return get_app()
    if name == "PgQueueBackend":
        from pgqueue.contrib.django.backend import PgQueueBackend

        return PgQueueBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
