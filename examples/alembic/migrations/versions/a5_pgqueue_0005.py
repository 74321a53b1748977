"""pgqueue's schema revision 0005 (a finished job's run_at is a finite time too).

Revision ID: a5
Revises: a4
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a5"
down_revision = "a4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0005")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
