"""health history averaged per 15 minutes and per hour, for long chart ranges

Revision ID: 0005_health_rollups
Revises: 0004_receipt_retention
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_health_rollups"
down_revision = "0004_receipt_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_rollups",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("step_s", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id", "step_s", "at"),
    )


def downgrade() -> None:
    op.drop_table("health_rollups")
