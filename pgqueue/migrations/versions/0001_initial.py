"""Initial schema: jobs, workers, periodic ticks.

Revision ID: 0001
Revises:
"""

from pgqueue.migrations import run_sql_files

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
