"""A finished job's run_at is a finite time too; infinite ones are made finite (sql/0005_*.sql).

Revision ID: 0005
Revises: 0004
"""

from pgqueue.migrations import run_sql_files

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
