"""Drills and training (2.8), their schedule, and the contract-review statistics."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hisguard.plan import Scope, Trigger
from hisguard.report import Name
from hisguard.server.api.deps import database
from hisguard.server.api.roles import PEOPLE, STAFF, person, sees_site
from hisguard.server.domain import cases, clocks, drills, stats
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import Database
from hisguard.server.storage.drill_models import Drill

router = APIRouter(tags=["drills"], lifespan=drills.lifespan)
Site = Name  # visible text, as in agents' reports
Line = Annotated[str, Field(max_length=4000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class StartBody(_Body):
    site: Site
    trigger: Trigger
    scope: Scope = Scope.HOSPITAL
    departments: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=50)


class CloseBody(_Body):
    problems: list[Line] = Field(default_factory=list, max_length=100)
    improvements: list[Line] = Field(default_factory=list, max_length=100)


class TrainingBody(_Body):
    site: Site
    topic: Annotated[str, Field(min_length=1, max_length=2000)]
    at: datetime | None = Field(None, description="When it took place (default: now)")


def _utc(at: datetime, name: str) -> datetime:
    """A time given by a caller, in UTC; 422 without a time zone or outside what a database stores."""
    if at.tzinfo is None:
        raise HTTPException(422, f"{name} needs a time zone (e.g. 2026-01-01T09:00:00+08:00)")
    try:
        at = at.astimezone(timezone.utc)
    except OverflowError:
        raise HTTPException(422, f"{name} is out of range") from None
    if not 1970 <= at.year <= 9998:
        raise HTTPException(422, f"{name} is out of range (years 1970-9998)")
    return at


def _site_for(who: Principal, site: str | None) -> str | None:
    if who.role == "hospital_contact":
        if site and site != who.site:
            raise HTTPException(403, "a hospital contact sees its own hospital only")
        return who.site
    return site


@router.post("/drills", status_code=201, summary="Start a drill: a simulated incident through the whole plan")
def start_drill(
    body: StartBody, who: Principal = Depends(person(*STAFF)), db: Database = Depends(database)
) -> dict[str, Any]:
    try:
        with db.session() as s:
            drill = drills.start(s, body.site, body.trigger, who.name, clocks.now(), body.scope, body.departments)
            cases.audit(s, who, "drill_started", clocks.now(), body.site, drill.case_id, drill=drill.id)
            return drills.drill_json(s, drill, clocks.now())
    except drills.DrillError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/drills", summary="Drills, newest first (with their evaluation)")
def list_drills(
    site: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    who: Principal = Depends(person(*PEOPLE)),
    db: Database = Depends(database),
) -> list[dict[str, Any]]:
    site = _site_for(who, site)
    with db.session() as s:
        drills.adopt(s)
        q = select(Drill).order_by(Drill.started_at.desc(), Drill.id.desc())
        if site:
            q = q.where(Drill.site == site)
        return [drills.drill_json(s, d, clocks.now()) for d in s.scalars(q.limit(limit))]


def _drill(s: Any, who: Principal, drill_id: int) -> Drill:
    drills.adopt(s)
    drill = s.get(Drill, drill_id)
    if drill is None or not sees_site(who, drill.site):
        raise HTTPException(404, "no such drill")
    return drill


@router.get("/drills/{drill_id}", summary="One drill and its evaluation (so far, while it runs)")
def get_drill(
    drill_id: int, who: Principal = Depends(person(*PEOPLE)), db: Database = Depends(database)
) -> dict[str, Any]:
    with db.session() as s:
        return drills.drill_json(s, _drill(s, who, drill_id), clocks.now())


@router.post("/drills/{drill_id}/close", summary="End a drill: recover, close the case, keep the evaluation")
def close_drill(
    drill_id: int,
    body: CloseBody | None = None,
    who: Principal = Depends(person(*STAFF)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    body = body or CloseBody()
    try:
        with db.session() as s:
            drill = _drill(s, who, drill_id)
            drills.close(s, drill, who, body.problems, body.improvements, clocks.now())
            return drills.drill_json(s, drill, clocks.now())
    except (drills.DrillError, cases.CaseError) as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.post("/training", status_code=201, summary="Record a training session held at a site (quarterly)")
def record_training(
    body: TrainingBody, who: Principal = Depends(person(*STAFF)), db: Database = Depends(database)
) -> dict[str, Any]:
    now = clocks.now()
    at = _utc(body.at, "at") if body.at else now
    if at > now + timedelta(days=1):
        raise HTTPException(422, "at is in the future: record a training once it has taken place")
    with db.session() as s:
        row = drills.record_training(s, who, body.site, at, body.topic)
        return {"id": row.id, "site": row.site, "at": row.at.isoformat(), "topic": row.topic}


@router.get("/schedule", summary="Training and drill schedule per site: last done, next due, overdue")
def get_schedule(
    request: Request,
    site: str | None = None,
    who: Principal = Depends(person(*PEOPLE)),
    db: Database = Depends(database),
) -> list[dict[str, Any]]:
    site = _site_for(who, site)
    with db.session() as s:
        return drills.schedule(s, request.app.state.settings, clocks.now(), site)


@router.get("/stats", summary="Per site and period: cases by trigger and severity, response times, drills done")
def get_stats(
    request: Request,
    site: str | None = None,
    start: datetime | None = Query(None, alias="from", description="Start (default: 365 days ago)"),
    end: datetime | None = Query(None, alias="to", description="End, exclusive (default: now)"),
    who: Principal = Depends(person(*PEOPLE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    site = _site_for(who, site)
    now = clocks.now()
    end = _utc(end, "to") if end else now + timedelta(seconds=1)  # up to now, including this second
    start = _utc(start, "from") if start else end - timedelta(days=365)
    if start >= end:
        raise HTTPException(422, "from must be before to")
    with db.session() as s:
        return stats.stats(s, request.app.state.settings, start, end, now, site)
