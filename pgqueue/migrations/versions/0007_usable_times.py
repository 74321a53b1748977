"""From SQL too, every timestamp pgqueue keeps, and a worker's heartbeat, is one its readers
can load; rows that held others are repaired (sql/0007_*.sql).

Revision ID: 0007
Revises: 0006
"""

from pgqueue.migrations import run_sql_files

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
