"""Job-finished notifications only while someone waits for a job (sql/0003_*.sql).

Revision ID: 0003
Revises: 0002
"""

from pgqueue.migrations import run_sql_files

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
