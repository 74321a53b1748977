"""Test-suite configuration: database fixtures live in tests/fix_db.py."""

pytest_plugins = ["tests.fix_db"]
