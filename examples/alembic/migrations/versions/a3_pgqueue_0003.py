"""pgqueue's schema revision 0003 (job-finished notifications only while someone waits).

Revision ID: a3
Revises: a2
"""

from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a3"
down_revision = "a2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_ops(op, "0003")  # a new pgqueue schema revision: one new revision of yours


def downgrade() -> None:
    pass  # pgqueue's migrations go forward only
