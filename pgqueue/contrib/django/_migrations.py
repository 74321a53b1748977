"""Installing pgqueue's schema from Django migrations (the same SQL as ``pgqueue migrate``)."""

from __future__ import annotations

from typing import Any

from pgqueue._embed import install_revision
from pgqueue.contrib.django import _conf
from pgqueue.contrib.django._adapter import psycopg_connection


def install(schema_editor: Any, revision: str) -> None:
    """Apply pgqueue's schema ``revision`` from a ``RunPython`` on pgqueue's database.

    Nothing happens on other databases, nor when ``pgqueue migrate`` got there first; the
    revision is recorded where ``pgqueue migrate --check`` and workers look for it.
    """
    if schema_editor.connection.alias != _conf.database_alias():
        return
    with psycopg_connection(schema_editor.connection).cursor() as cur:
        install_revision(cur, revision, lambda text: schema_editor.execute(text, params=None))
