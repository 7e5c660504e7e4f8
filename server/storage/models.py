"""The server's tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    site: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime]
    last_seen: Mapped[datetime | None]
    interval_s: Mapped[float | None] = mapped_column(Float)
    department: Mapped[str | None] = mapped_column(String(200))
    hospital_critical: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ux_agents_site_name", "site", "name", unique=True),)


class AgentStatus(Base):
    """The latest health snapshot, apart from the agent row so heartbeats rewrite only this."""

    __tablename__ = "agent_status"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    at: Mapped[datetime]
    snapshot: Mapped[dict[str, Any]]


class HealthSample(Base):
    """Compact probe history for charts: {check/subject: value} per heartbeat."""

    __tablename__ = "health_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    data: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_health_agent_at", "agent_id", "at"),)


class HealthRollup(Base):
    """Probe history averaged over 15 minutes and an hour (step_s), so that a month's chart reads ~720 rows."""

    __tablename__ = "health_rollups"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    step_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True)  # the bucket's start
    data: Mapped[dict[str, Any]]  # {name: weighted mean, "_n": samples it stands for}


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # agent | engineer
    name: Mapped[str] = mapped_column(String(200))
    site: Mapped[str | None] = mapped_column(String(200))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # A person's role (engineer | service_manager | hospital_contact | admin); None on agent tokens.
    role: Mapped[str | None] = mapped_column(String(30))


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(400))
    host: Mapped[str] = mapped_column(String(200))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    trigger: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(20))
    department: Mapped[str | None] = mapped_column(String(200))
    departments: Mapped[list[Any]]
    functions: Mapped[list[Any]]
    title_zh: Mapped[str] = mapped_column(Text)
    title_en: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # open | resolved
    opened_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    evidence: Mapped[dict[str, Any]]

    __table_args__ = (
        # One open incident per fault: re-detection updates it instead of adding another.
        Index(
            "ux_incidents_open_key",
            "site",
            "key",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_incidents_status_opened", "status", "opened_at"),
    )


class Receipt(Base):
    """Each report item id, stored once: delivering the same report twice changes nothing."""

    __tablename__ = "receipts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    received_at: Mapped[datetime]

    __table_args__ = (Index("ix_receipts_received_at", "received_at"),)  # retention deletes by age


# --- The emergency-plan engine: cases, plan instances and steps, clocks, notifications, audit ---


class Case(Base):
    """One fault as the plan sees it: the incidents it groups, its severity, acknowledgement and clocks."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(400))  # the lead incident's key (or a reported request's)
    source: Mapped[str] = mapped_column(String(20))  # agent | reported
    lead_incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    trigger: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(20))
    severity_reason: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(20))
    host: Mapped[str | None] = mapped_column(String(200))
    departments: Mapped[list[Any]]
    functions: Mapped[list[Any]]
    title_zh: Mapped[str] = mapped_column(Text)
    title_en: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # open | resolved | merged
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    opened_at: Mapped[datetime]  # when the fault began (earliest incident)
    reported_at: Mapped[datetime]  # when the server learned of it: response deadlines count from here
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    escalation_tier: Mapped[int] = mapped_column(Integer, default=1)  # highest on-call tier told so far (1-based)
    resolved_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    written_reply: Mapped[str | None] = mapped_column(Text)
    written_reply_at: Mapped[datetime | None]
    written_reply_by: Mapped[str | None] = mapped_column(String(200))
    drill: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_cases_status_opened", "status", "opened_at"),
        Index("ix_cases_site_status", "site", "status"),
    )


class CaseIncident(Base):
    """Which case an incident belongs to (an incident belongs to one case)."""

    __tablename__ = "case_incidents"

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    linked_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(20))  # opened | same_key | child | outbreak | merged


class PlanInstance(Base):
    """The emergency plan started for a case (2.5)."""

    __tablename__ = "plan_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    trigger: Mapped[int] = mapped_column(Integer)
    plan_source: Mapped[str] = mapped_column(String(200))  # which plan text (vendor default or a contract's)
    activated_at: Mapped[datetime]
    activated_by: Mapped[str] = mapped_column(String(200))  # "system" for automatic activation
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # active | completed
    completed_at: Mapped[datetime | None]


class PlanStep(Base):
    """One step a person does: activation (2.5), the trigger's checklist (2.6) or a department's back-fill (2.7)."""

    __tablename__ = "plan_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(20))  # activation | trigger | backfill
    key: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(30))
    text_zh: Mapped[str] = mapped_column(Text)
    text_en: Mapped[str] = mapped_column(Text)
    done_at: Mapped[datetime | None]
    done_by: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ux_plan_steps_case_key", "case_id", "key", unique=True),)


class CaseClock(Base):
    """A deadline of the plan, persisted so it survives restarts and fires exactly once."""

    __tablename__ = "case_clocks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))  # response:N | continuity:N | written_reply
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))  # pending | fired | cancelled
    fired_at: Mapped[datetime | None]
    fired_by: Mapped[str | None] = mapped_column(String(100))  # which server process

    __table_args__ = (
        Index("ux_case_clocks_case_name", "case_id", "name", unique=True),
        Index(
            "ix_case_clocks_pending_due",
            "due_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )


class Notification(Base):
    """One message to one contact over one channel, with its outcome (an outbox: delivery is retried)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    site: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(40))
    contact: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(20))  # email | webhook | wecom | dingtalk
    target: Mapped[str] = mapped_column(String(500))  # shown to people; robot keys are not stored
    subject_zh: Mapped[str] = mapped_column(Text)
    subject_en: Mapped[str] = mapped_column(Text)
    body_zh: Mapped[str] = mapped_column(Text)
    body_en: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]  # the structured event for webhooks
    status: Mapped[str] = mapped_column(String(20))  # pending | sending | sent | failed | suppressed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[list[Any]]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_notifications_due",
            "next_attempt_at",
            sqlite_where=text("status IN ('pending', 'sending')"),
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
    )


class CaseEvent(Base):
    """The case's timeline: what happened, by whom or by which clock."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]]


class AuditEntry(Base):
    """Every human action, who did it with which role, and when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(30))
    action: Mapped[str] = mapped_column(String(60))
    site: Mapped[str | None] = mapped_column(String(200))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    detail: Mapped[dict[str, Any]]


class MaintenanceWindow(Base):
    """Planned work on a site (or one device of it): notifications are held back, recording goes on."""

    __tablename__ = "maintenance_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(200))  # None: the whole site
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_maintenance_site_ends", "site", "ends_at"),)
