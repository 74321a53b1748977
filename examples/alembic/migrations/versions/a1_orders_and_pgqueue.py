"""Orders, and pgqueue's schema (revision 0001) in the same history.

Revision ID: a1
Revises:
"""

import sqlalchemy as sa
from alembic import op

from pgqueue.contrib.alembic import upgrade_ops

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
    )
    upgrade_ops(op, "0001")  # the same SQL as `pgqueue migrate`; skipped if already there


def downgrade() -> None:
    op.drop_table("orders")
