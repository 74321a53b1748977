"""The SQL functions keep their contract when another transaction takes or frees a unique
key during the call: pgqueue.retry returns false, pgqueue.enqueue tries again
(sql/0008_*.sql). Function bodies only: code needing 0007 runs on it.

Revision ID: 0008
Revises: 0007
"""

from pgqueue.migrations import run_sql_files

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
