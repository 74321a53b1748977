"""pgqueue's schema revision 0007 (usable timestamps and heartbeats from SQL too).

Revision ID: a7
Revises: a6
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a7"
down_revision = "a6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0007")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
