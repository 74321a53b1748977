"""pgqueue's schema revision 0009 (a pruned periodic tick cannot fire again).

Revision ID: a9
Revises: a8
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a9"
down_revision = "a8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0009")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
