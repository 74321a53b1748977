"""From SQL too, a job's meta is an object, its timeout finite, its run_at readable, and a
running job holds a lease; rows that were not are repaired, and pgqueue.enqueue names an
out-of-range priority (sql/0006_*.sql).

Revision ID: 0006
Revises: 0005
"""

from pgqueue.migrations import run_sql_files

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(revision)


def downgrade() -> None:
    raise NotImplementedError("pgqueue migrations go forward only")
