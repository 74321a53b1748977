"""pgqueue's schema inside your own alembic history.

In a revision of yours::

    from pgqueue.contrib.alembic import upgrade_ops

    def upgrade():
        upgrade_ops()  # creates (or upgrades) pgqueue's schema, same SQL as `pgqueue migrate`

and in your ``env.py``, keep autogenerate away from pgqueue's tables, and from your models of
them (``include_name`` sees reflected names only)::

    from pgqueue.contrib.alembic import include_name, include_object
    context.configure(
        ..., include_schemas=True, include_name=include_name, include_object=include_object
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import psycopg

from pgqueue._embed import install_revision_on
from pgqueue._errors import ConfigurationError
from pgqueue._schema import SCHEMA_REVISION
from pgqueue._store import run_sqlalchemy, table_schema_get

__all__ = ["SCHEMA", "include_name", "include_object", "upgrade_ops"]

SCHEMA = "pgqueue"


def upgrade_ops(op: Any = None, revision: str = SCHEMA_REVISION) -> bool:
    """Install pgqueue's schema ``revision`` from a revision of your alembic history.

    Runs the same SQL files as pgqueue's own migrations, in your migration's transaction, and
    records the revision where ``pgqueue migrate --check`` and workers look. Does nothing if
    that revision (or a later one) is already installed; returns whether it ran. ``op`` is
    alembic's ``op`` (the default). Each new pgqueue revision needs a new call of yours.
    """
    from alembic import context

    if op is None:
        from alembic import op
    if context.is_offline_mode():
        raise NotImplementedError(
            "pgqueue's schema cannot be installed by `alembic upgrade --sql`: "
            "add the output of `pgqueue migrate --sql` to your SQL script instead"
        )
    migration = op.get_context()
    _refuse_shared_version_table(migration, migration.version_table_schema)
    bind = op.get_bind()
    raw = bind.connection.driver_connection
    if not isinstance(raw, psycopg.BaseConnection):
        raise TypeError(
            f"pgqueue's schema is installed on psycopg 3, but this migration runs on the"
            f" {bind.dialect.name}+{bind.dialect.driver} driver: use a postgresql+psycopg:// URL"
        )
    # Through SQLAlchemy, not on ``raw``: under alembic's async template (run_sync) ``raw`` is
    # an AsyncConnection, which only SQLAlchemy's sync facade can drive from here.
    run = partial(run_sqlalchemy, bind)
    installed = install_revision_on(run, raw, revision, bind.exec_driver_sql)
    if migration.version_table_schema is None:
        # Found on the search_path, where pgqueue's table may now come first: raising rolls
        # the migration's transaction back, the schema just installed with it.
        found = run(table_schema_get(migration.version_table))
        _refuse_shared_version_table(migration, found)
    return installed


def _refuse_shared_version_table(migration: Any, schema: str | None) -> None:
    """Raise if the project's alembic history is recorded in ``pgqueue.alembic_version``
    (its version table in ``schema``), where pgqueue records its schema revision: both would
    write their revision there, and the next ``alembic upgrade`` would stop on pgqueue's
    ("Can't locate revision '0010'")."""
    if (schema, migration.version_table) == (SCHEMA, "alembic_version"):
        raise ConfigurationError(
            "your env.py keeps alembic's version table in pgqueue.alembic_version, where"
            " pgqueue records its own schema revision (version_table_schema='pgqueue', or a"
            " search_path naming pgqueue before your schema): pass context.configure()"
            " version_table_schema= a schema of your own, or another version_table, or"
            " take pgqueue out of the search_path"
        )


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """An alembic ``include_name`` hook that hides the ``pgqueue`` schema from autogenerate's
    reflection. Alembic never passes it your models: for those of pgqueue's tables, see
    :func:`include_object`."""
    if type_ == "schema":
        return name != SCHEMA
    return parent_names.get("schema_name") != SCHEMA


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """An alembic ``include_object`` hook that skips every object of the ``pgqueue`` schema,
    reflected or in your metadata (a model of ``pgqueue.jobs``), and the views, functions and
    grants alembic_utils reflects there. A table, and alembic_utils' entities, name their
    schema; a column, an index or a constraint has it on its table."""
    holder = obj if hasattr(obj, "schema") else getattr(obj, "table", None)
    return getattr(holder, "schema", None) != SCHEMA
