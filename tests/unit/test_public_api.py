"""The public face: exactly the names we mean to export, each documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import pgqueue
from pgqueue._schema import KNOWN_REVISIONS, SCHEMA_REVISION

EXPECTED = {
    "Adapter", "Cancel", "ConfigurationError", "ConnectionKindError", "JobContext", "PgQueue",
    "PgQueueError", "Retry", "RetryPolicy", "SchemaError", "Task", "UnknownTaskError", "Worker",
    "__version__", "current_job", "migrate", "migration_sql", "register_adapter",
    "schema_check",
}  # fmt: skip


def test_all_is_exactly_the_public_names() -> None:
    """__all__ lists every public name and nothing else."""
    assert set(pgqueue.__all__) >= EXPECTED
    # Subpackages (migrations, contrib, testing) become attributes once imported, and pytest
    # adds "@py_builtins"-style names when it rewrites asserts of a plugin's distribution.
    public = {
        name for name, value in vars(pgqueue).items()
        if not name.startswith(("_", "@")) and not inspect.ismodule(value)
    } | {"__version__"}  # fmt: skip
    assert set(pgqueue.__all__) == public


def test_every_public_callable_has_a_docstring() -> None:
    """Each exported function and class says what it does."""
    for name in pgqueue.__all__:
        obj = getattr(pgqueue, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"pgqueue.{name} has no docstring"


def test_public_classes_present_themselves_as_pgqueue() -> None:
    """Users see pgqueue.PgQueue in reprs and tracebacks, not private module paths."""
    for name in pgqueue.__all__:
        obj = getattr(pgqueue, name)
        if inspect.isclass(obj):
            assert obj.__module__ == "pgqueue", name


def test_a_connection_enqueue_cannot_use_is_refused_with_a_public_type_error() -> None:
    """A job whose task enqueued on an object no adapter takes recorded the private class
    name ``ConnectionKindError``, which users could neither import nor find documented: it is
    now ``pgqueue.ConnectionKindError``, a ``TypeError``, which adapters may raise too."""
    app = pgqueue.PgQueue()

    @app.task
    def noop() -> None:
        """Nothing."""

    with pytest.raises(pgqueue.ConnectionKindError, match=r"cannot enqueue on a builtins\.object"):
        noop.enqueue(object())
    assert issubclass(pgqueue.ConnectionKindError, TypeError)
    assert pgqueue.ConnectionKindError.__module__ == "pgqueue"


def test_code_revision_is_the_newest_migration() -> None:
    """SCHEMA_REVISION (what workers require) equals the head of the alembic history."""
    versions = Path(pgqueue.__file__).parent / "migrations" / "versions"
    revisions = {}
    for path in versions.glob("*.py"):
        text = path.read_text()
        rev = re.search(r'^revision = "(\w+)"', text, re.M)
        down = re.search(r"^down_revision = (None|\"(\w+)\")", text, re.M)
        assert rev and down, path
        revisions[rev.group(1)] = down.group(2)
    heads = set(revisions) - set(revisions.values())
    assert heads == {SCHEMA_REVISION}
    assert set(KNOWN_REVISIONS) == set(revisions)


def test_migration_sql_returns_the_schema_sql_and_prints_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """migration_sql() returns the SQL (it returned "" and wrote the SQL to stdout)."""
    sql = pgqueue.migration_sql()
    assert "CREATE TABLE pgqueue.active_jobs" in sql
    assert sql.rstrip().endswith("COMMIT;")
    assert capsys.readouterr().out == ""


def test_migration_sql_since_a_revision_upgrades_from_it_and_knows_its_revisions() -> None:
    """migration_sql(since="0008") is the upgrade from 0008 alone; a revision this version
    does not know is a ValueError listing those it does."""
    sql = pgqueue.migration_sql(since="0008")
    assert "Running upgrade 0008 -> 0009" in sql and "CREATE TABLE pgqueue.active_jobs" not in sql
    with pytest.raises(ValueError, match="unknown pgqueue schema revision '0042': use one of 0001"):
        pgqueue.migration_sql(since="0042")
