"""Test-suite configuration: database fixtures live in tests/fix_db.py, PgBouncer in
tests/fix_pgbouncer.py."""

pytest_plugins = ["tests.fix_db", "tests.fix_pgbouncer"]
