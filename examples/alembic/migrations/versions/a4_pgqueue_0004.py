"""pgqueue's schema revision 0004 (a job's run_at is a finite time).

Revision ID: a4
Revises: a3
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a4"
down_revision = "a3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0004")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
