"""pgqueue's schema revision 0006 (usable meta, timeout and run_at from SQL too).

Revision ID: a6
Revises: a5
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a6"
down_revision = "a5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0006")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
