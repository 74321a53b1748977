"""A job cannot take the id of a finished one: the insert trigger refuses it, and
pgqueue.retry moves a job back in one statement (sql/0010_*.sql). Function bodies only: code
needing 0007 runs on it.

Revision ID: 0010
Revises: 0009
"""

from pgqueue.migrations import run_sql_files

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
