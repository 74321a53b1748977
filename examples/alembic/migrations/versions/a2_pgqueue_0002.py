"""pgqueue's schema revision 0002 (workers record their process, for prompt crash recovery).

Revision ID: a2
Revises: a1
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0002")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
