"""A pruned tick cannot fire again: each schedule's pruning watermark, which the tick insert
checks (sql/0009_*.sql). A new table only: code needing 0007 or 0008 runs on it.

Revision ID: 0009
Revises: 0008
"""

from pgqueue.migrations import run_sql_files

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
