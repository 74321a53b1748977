"""A job's run_at is a finite time; infinite ones already there are made finite (sql/0004_*.sql).

Revision ID: 0004
Revises: 0003
"""

from pgqueue.migrations import run_sql_files

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
