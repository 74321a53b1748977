"""`pgqueue migrate --sql` (and `--sql --from`), applied by other tooling, gives the schema
`pgqueue migrate` gives."""

from __future__ import annotations

import psycopg
import pytest

import pgqueue
from pgqueue._embed import install_revision
from pgqueue._schema import KNOWN_REVISIONS, SCHEMA_REVISION
from tests.contrib.catalog import catalog
from tests.helpers import query

# Who may do what to each relation and function: grants (0009's to pgqueue_worker) are part
# of what a migration defines, and catalog() leaves them out.
_ACL = """
SELECT relname, relacl::text FROM pg_class WHERE relnamespace = 'pgqueue'::regnamespace
UNION ALL
SELECT oid::regprocedure::text, proacl::text FROM pg_proc
 WHERE pronamespace = 'pgqueue'::regnamespace
 ORDER BY 1"""


@pytest.mark.parametrize("since", [None, *KNOWN_REVISIONS[:-1]])
def test_migration_sql_gives_the_schema_migrate_gives(
    dsn: str, empty_dsn: str, since: str | None
) -> None:
    """The SQL from nothing, run on an empty database, and that of --from R, run on a database
    at revision R, leave the catalog (columns, constraints, indexes, views, functions,
    triggers, storage options, version, grants) as `pgqueue migrate` leaves it."""
    if since is not None:
        with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
            install_revision(cur, since, lambda text: cur.execute(text.encode()))
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(pgqueue.migration_sql(since).encode())
    assert catalog(empty_dsn) == catalog(dsn)
    assert query(empty_dsn, _ACL) == query(dsn, _ACL)


def test_an_embedded_install_looks_for_its_client_as_migrate_does(empty_dsn: str) -> None:
    """Django's migrations and alembic's upgrade_ops() install in the tool's transaction
    (pgqueue._embed): one killed while it waited for a table's lock held the migration lock
    and queued every claim behind its ACCESS EXCLUSIVE request, as `pgqueue migrate` did.
    They now set `client_connection_check_interval` too, for their transaction only."""
    show = "SHOW client_connection_check_interval"
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        assert install_revision(cur, SCHEMA_REVISION, lambda text: cur.execute(text.encode()))
        assert cur.execute(show).fetchone() == ("1s",)
    assert query(empty_dsn, show) == [("0",)]
