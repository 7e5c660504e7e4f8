"""Tables of drills and training (2.8), on-site dispatch (2.9) and post-incident reviews (2.10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hisguard.server.storage.models import Base


class Drill(Base):
    """A simulated incident run through the whole plan, and its evaluation once closed."""

    __tablename__ = "drills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))  # server (CLI/API) | agent
    started_by: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime]
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"), unique=True)
    incident_key: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(20))  # running | closed
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(200))
    problems: Mapped[list[Any]]  # what went wrong, as noted by the people who ran it
    improvements: Mapped[list[Any]]  # changes to the plan recorded from it
    evaluation: Mapped[dict[str, Any] | None]

    __table_args__ = (Index("ix_drills_site_started", "site", "started_at"),)


class Exercise(Base):
    """Training (quarterly) or a drill (half-yearly) done at a site: what the schedule counts."""

    __tablename__ = "exercises"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # training | drill
    at: Mapped[datetime]
    topic: Mapped[str] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(200))
    drill_id: Mapped[int | None] = mapped_column(ForeignKey("drills.id", ondelete="SET NULL"))

    __table_args__ = (Index("ix_exercises_site_kind_at", "site", "kind", "at"),)


class ExerciseSchedule(Base):
    """When the schedule began to count for a site (the first check that saw it)."""

    __tablename__ = "exercise_schedule"

    site: Mapped[str] = mapped_column(String(200), primary_key=True)
    since: Mapped[datetime]


class ScheduleReminder(Base):
    """One overdue reminder per site, kind and due date: sent once, not on every check."""

    __tablename__ = "schedule_reminders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    due_at: Mapped[datetime]
    sent_at: Mapped[datetime]

    __table_args__ = (Index("ux_schedule_reminders", "site", "kind", "due_at", unique=True),)


class Dispatch(Base):
    """Engineers sent on site for a case (2.9): the advice given, the deadline, the arrival."""

    __tablename__ = "dispatches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    engineer: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(30))  # chartered_or_service_car | taxi_or_service_car
    advice_zh: Mapped[str] = mapped_column(Text)
    advice_en: Mapped[str] = mapped_column(Text)
    dispatched_at: Mapped[datetime]
    dispatched_by: Mapped[str] = mapped_column(String(200))
    arrive_by: Mapped[datetime | None]
    arrived_at: Mapped[datetime | None]
    arrival_recorded_by: Mapped[str | None] = mapped_column(String(200))


class Review(Base):
    """The investigation after a case (2.10): cause, prevention, corrective/preventive actions, accountability."""

    __tablename__ = "reviews"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    cause: Mapped[str] = mapped_column(Text, default="")
    prevention: Mapped[str] = mapped_column(Text, default="")  # the proposal to the hospital
    corrective_actions: Mapped[str] = mapped_column(Text, default="")
    preventive_actions: Mapped[str] = mapped_column(Text, default="")
    accountability: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(200))
