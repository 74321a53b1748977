"""pgqueue's schema history. Each revision runs the ``sql/<revision>_*.sql`` files in order,
so that other migration tools (Django, hand-run SQL) apply exactly the same statements."""

from __future__ import annotations

from importlib import resources


def sql_files(revision: str) -> list[str]:
    """The SQL texts of one revision, in file-name order."""
    folder = resources.files(__package__).joinpath("sql")
    names = sorted(p.name for p in folder.iterdir() if p.name.startswith(f"{revision}_"))
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in names]


def run_sql_files(revision: str) -> None:
    """Run one revision's SQL through alembic (online or ``--sql`` offline mode)."""
    from alembic import context, op

    for sql in sql_files(revision):
        if context.is_offline_mode():
            op.execute(sql.rstrip().rstrip(";"))
        else:
            # exec_driver_sql: no bind-parameter parsing of ':' or '%' in function bodies.
            op.get_bind().exec_driver_sql(sql)
