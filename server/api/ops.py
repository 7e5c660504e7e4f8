"""Maintenance windows, the notification record, the audit log and the plan text in effect."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from hisguard.report import aware_time
from hisguard.server.api.deps import database
from hisguard.server.api.roles import PEOPLE, STAFF, person, sees_site
from hisguard.server.domain import cases, clocks, workflow
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import AuditEntry, MaintenanceWindow, Notification

router = APIRouter(tags=["operations"])


class WindowBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    site: Annotated[str, Field(min_length=1, max_length=200)]
    host: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    starts_at: datetime
    ends_at: datetime
    reason: Annotated[str, Field(min_length=1, max_length=4000)]

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return aware_time(v)


def _window_json(w: MaintenanceWindow) -> dict[str, Any]:
    return {
        "id": w.id,
        "site": w.site,
        "host": w.host,
        "starts_at": w.starts_at.isoformat(),
        "ends_at": w.ends_at.isoformat(),
        "reason": w.reason,
        "created_by": w.created_by,
        "created_at": w.created_at.isoformat(),
        "cancelled_at": w.cancelled_at.isoformat() if w.cancelled_at else None,
    }


@router.post("/maintenance", status_code=201, summary="Announce planned work: notifications held, recording goes on")
def create_window(
    body: WindowBody, who: Principal = Depends(person(*STAFF)), db: Database = Depends(database)
) -> dict[str, Any]:
    if body.ends_at <= body.starts_at:
        raise HTTPException(422, "ends_at must be after starts_at")
    now = clocks.now()
    with db.session() as s:
        w = MaintenanceWindow(
            site=body.site,
            host=body.host,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            reason=body.reason,
            created_by=who.name,
            created_at=now,
        )
        s.add(w)
        s.flush()
        cases.audit(s, who, "maintenance_create", now, body.site, None, window=w.id, host=body.host)
        return _window_json(w)


@router.get("/maintenance", summary="Maintenance windows (current and coming unless all=true)")
def list_windows(
    site: str | None = None,
    all: bool = False,
    who: Principal = Depends(person(*PEOPLE)),
    db: Database = Depends(database),
) -> list[dict[str, Any]]:
    q = select(MaintenanceWindow).order_by(MaintenanceWindow.starts_at)
    if who.role == "hospital_contact":
        q = q.where(MaintenanceWindow.site == who.site)
    if site:
        q = q.where(MaintenanceWindow.site == site)
    if not all:
        q = q.where(MaintenanceWindow.ends_at > clocks.now(), MaintenanceWindow.cancelled_at.is_(None))
    with db.session() as s:
        return [_window_json(w) for w in s.scalars(q)]


@router.delete("/maintenance/{window_id}", summary="Cancel a maintenance window")
def cancel_window(
    window_id: int, who: Principal = Depends(person(*STAFF)), db: Database = Depends(database)
) -> dict[str, Any]:
    now = clocks.now()
    with db.session() as s:
        w = s.get(MaintenanceWindow, window_id)
        if w is None:
            raise HTTPException(404, "no such maintenance window")
        if w.cancelled_at is None:
            w.cancelled_at = now
            cases.audit(s, who, "maintenance_cancel", now, w.site, None, window=w.id)
        return _window_json(w)


@router.get("/notifications", summary="Every notification and its outcome, newest first")
def list_notifications(
    case_id: int | None = None,
    status: Literal["pending", "sending", "sent", "failed", "suppressed"] | None = None,
    site: str | None = None,
    limit: int = Query(200, ge=1, le=2000),
    offset: int = Query(0, ge=0),
    who: Principal = Depends(person(*STAFF)),
    db: Database = Depends(database),
) -> list[dict[str, Any]]:
    q = select(Notification).order_by(Notification.id.desc())
    if case_id is not None:
        q = q.where(Notification.case_id == case_id)
    if status:
        q = q.where(Notification.status == status)
    if site:
        q = q.where(Notification.site == site)
    with db.session() as s:
        return [cases.notification_json(n) for n in s.scalars(q.limit(limit).offset(offset))]


@router.get("/audit", summary="Every human action: who, role, what, when")
def audit_log(
    case_id: int | None = None,
    actor: str | None = None,
    limit: int = Query(200, ge=1, le=2000),
    offset: int = Query(0, ge=0),
    who: Principal = Depends(person("service_manager", "admin")),
    db: Database = Depends(database),
) -> list[dict[str, Any]]:
    q = select(AuditEntry).order_by(AuditEntry.id.desc())
    if case_id is not None:
        q = q.where(AuditEntry.case_id == case_id)
    if actor:
        q = q.where(AuditEntry.actor == actor)
    with db.session() as s:
        return [
            {
                "id": a.id,
                "at": a.at.isoformat(),
                "actor": a.actor,
                "role": a.role,
                "action": a.action,
                "site": a.site,
                "case_id": a.case_id,
                "detail": a.detail,
            }
            for a in s.scalars(q.limit(limit).offset(offset))
        ]


@router.get("/plan-text", summary="The plan text in effect for a site (the contract's, or the vendor default)")
def plan_text(request: Request, site: str | None = None, who: Principal = Depends(person(*PEOPLE))) -> dict[str, Any]:
    if site and not sees_site(who, site):
        raise HTTPException(404, "no such site")
    site = site or who.site or "*"
    conf = request.app.state.settings.site(site)
    try:
        plan = workflow.load_plan_text(conf.plan_file)
    except workflow.PlanTextError as exc:
        raise HTTPException(500, f"plan text unusable: {exc}") from None

    def steps(items: tuple[workflow.StepText, ...]) -> list[dict[str, Any]]:
        return [{"key": st.key, "role": st.role, "text": {"zh": st.text.zh, "en": st.text.en}} for st in items]

    return {
        "site": site,
        "source": plan.source,
        "activation": steps(plan.activation),
        "triggers": {str(t): steps(items) for t, items in sorted(plan.triggers.items())},
        "backfill": {"role": plan.backfill_role, "text": {"zh": plan.backfill.zh, "en": plan.backfill.en}},
    }
