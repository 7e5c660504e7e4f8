"""receipts pruned by age (index on received_at); joins the drills and web branches

Revision ID: 0004_receipt_retention
Revises: 0003_drills, 0003_web
"""

from alembic import op

revision = "0004_receipt_retention"
down_revision = ("0003_drills", "0003_web")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_receipts_received_at", "receipts", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_receipts_received_at", table_name="receipts")
