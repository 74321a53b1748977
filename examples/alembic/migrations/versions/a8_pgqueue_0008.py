"""pgqueue's schema revision 0008 (SQL functions that keep their contract under races).

Revision ID: a8
Revises: a7
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a8"
down_revision = "a7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0008")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
