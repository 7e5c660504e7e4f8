"""drills and training, on-site dispatch, post-incident reviews

Revision ID: 0003_drills
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_drills"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("trigger", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("started_by", sa.String(length=200), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("incident_key", sa.String(length=400), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("closed_at", _TS, nullable=True),
        sa.Column("closed_by", sa.String(length=200), nullable=True),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("improvements", sa.JSON(), nullable=False),
        sa.Column("evaluation", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id"),
    )
    op.create_index("ix_drills_site_started", "drills", ["site", "started_at"])
    op.create_table(
        "exercises",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("drill_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["drill_id"], ["drills.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_exercises_site_kind_at", "exercises", ["site", "kind", "at"])
    op.create_table(
        "exercise_schedule",
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("since", _TS, nullable=False),
        sa.PrimaryKeyConstraint("site"),
    )
    op.create_table(
        "schedule_reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("due_at", _TS, nullable=False),
        sa.Column("sent_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_schedule_reminders", "schedule_reminders", ["site", "kind", "due_at"], unique=True)
    op.create_table(
        "dispatches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("engineer", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=30), nullable=False),
        sa.Column("advice_zh", sa.Text(), nullable=False),
        sa.Column("advice_en", sa.Text(), nullable=False),
        sa.Column("dispatched_at", _TS, nullable=False),
        sa.Column("dispatched_by", sa.String(length=200), nullable=False),
        sa.Column("arrive_by", _TS, nullable=True),
        sa.Column("arrived_at", _TS, nullable=True),
        sa.Column("arrival_recorded_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dispatches_case_id", "dispatches", ["case_id"])
    op.create_table(
        "reviews",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("prevention", sa.Text(), nullable=False),
        sa.Column("corrective_actions", sa.Text(), nullable=False),
        sa.Column("preventive_actions", sa.Text(), nullable=False),
        sa.Column("accountability", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("case_id"),
    )


def downgrade() -> None:
    op.drop_table("reviews")
    op.drop_index("ix_dispatches_case_id", table_name="dispatches")
    op.drop_table("dispatches")
    op.drop_index("ux_schedule_reminders", table_name="schedule_reminders")
    op.drop_table("schedule_reminders")
    op.drop_table("exercise_schedule")
    op.drop_index("ix_exercises_site_kind_at", table_name="exercises")
    op.drop_table("exercises")
    op.drop_index("ix_drills_site_started", table_name="drills")
    op.drop_table("drills")
