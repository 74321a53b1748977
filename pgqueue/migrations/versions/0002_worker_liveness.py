"""Workers record their process namespace and start time (prompt rescue after a crash).

Revision ID: 0002
Revises: 0001
"""

from pgqueue.migrations import run_sql_files

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
