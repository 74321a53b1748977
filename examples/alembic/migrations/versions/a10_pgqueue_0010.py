"""pgqueue's schema revision 0010 (a job cannot take the id of a finished one).

Revision ID: a10
Revises: a9
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a10"
down_revision = "a9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0010")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
