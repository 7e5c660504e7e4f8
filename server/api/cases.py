"""The plan's API: cases, acknowledgement, severity, activation, steps, written replies, hospital requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from hisguard.plan import Severity, Text
from hisguard.server.api.deps import database
from hisguard.server.api.roles import PEOPLE, STAFF, person, sees_site
from hisguard.server.domain import cases, clocks
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Case

router = APIRouter(tags=["cases"])
T = TypeVar("T")
Note = Annotated[str, Field(max_length=4000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NoteBody(_Body):
    note: Note | None = None


class SeverityBody(_Body):
    severity: Severity
    reason: Annotated[str, Field(min_length=1, max_length=4000)]


class ActivateBody(_Body):
    reason: Note = ""


class ReplyBody(_Body):
    text: Annotated[str, Field(min_length=1, max_length=20000)]


class RequestBody(_Body):
    site: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    title_zh: Annotated[str, Field(min_length=1, max_length=500)]
    title_en: Annotated[str, Field(max_length=500)] | None = None
    description: Annotated[str, Field(max_length=20000)] = ""
    severity: Severity = Severity.ROUTINE


def _case(s: Session, who: Principal, case_id: int) -> Case:
    case = s.get(Case, case_id)
    if case is None or not sees_site(who, case.site):
        raise HTTPException(404, "no such case")
    return case


def _act(db: Database, who: Principal, case_id: int, fn: Callable[[Session, Case], T]) -> dict[str, Any]:
    """Run a person's action on a case in one transaction (committed before answering)."""
    try:
        with db.session() as s:
            case = _case(s, who, case_id)
            fn(s, case)
            s.flush()
            return cases.case_json(s, case, full=True)
    except cases.CaseError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/cases", summary="Cases, newest first (a hospital contact sees only its hospital)")
def list_cases(
    status: Literal["open", "resolved", "merged"] | None = None,
    site: str | None = None,
    severity: Severity | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    who: Principal = Depends(person(*PEOPLE)),
    db: Database = Depends(database),
) -> list[dict[str, Any]]:
    q = select(Case).order_by(Case.reported_at.desc(), Case.id.desc())
    if who.role == "hospital_contact":
        q = q.where(Case.site == who.site)
    if status:
        q = q.where(Case.status == status)
    if site:
        q = q.where(Case.site == site)
    if severity:
        q = q.where(Case.severity == severity.value)
    with db.session() as s:
        return [cases.case_json(s, c) for c in s.scalars(q.limit(limit).offset(offset))]


@router.get("/cases/{case_id}", summary="One case: incidents, plan steps, clocks, timeline, notifications")
def get_case(
    case_id: int, who: Principal = Depends(person(*PEOPLE)), db: Database = Depends(database)
) -> dict[str, Any]:
    with db.session() as s:
        return cases.case_json(s, _case(s, who, case_id), full=True)


@router.post("/cases/{case_id}/acknowledge", summary="Acknowledge: someone responds (stops escalation)")
def acknowledge(
    case_id: int,
    body: NoteBody | None = None,
    who: Principal = Depends(person(*STAFF)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    note = body.note if body else None
    return _act(db, who, case_id, lambda s, c: cases.acknowledge(s, c, who, note, clocks.now()))


@router.post("/cases/{case_id}/severity", summary="Raise the severity, with a reason (never lowered)")
def raise_severity(
    case_id: int, body: SeverityBody, who: Principal = Depends(person(*STAFF)), db: Database = Depends(database)
) -> dict[str, Any]:
    return _act(
        db, who, case_id, lambda s, c: cases.raise_severity(s, c, who, body.severity, body.reason, clocks.now())
    )


@router.post("/cases/{case_id}/activate", summary="Start the emergency plan for a case not started automatically")
def activate(
    case_id: int,
    body: ActivateBody | None = None,
    who: Principal = Depends(person(*STAFF)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    reason = body.reason if body else ""
    return _act(db, who, case_id, lambda s, c: cases.activate(s, c, who, reason, clocks.now()))


@router.post("/cases/{case_id}/steps/{key}", summary="Record a plan step as done (by a person of the step's role)")
def do_step(
    case_id: int,
    key: str,
    body: NoteBody | None = None,
    who: Principal = Depends(person(*PEOPLE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    note = body.note if body else None
    return _act(db, who, case_id, lambda s, c: cases.do_step(s, c, who, key, note, clocks.now()))


@router.post("/cases/{case_id}/reply", summary="Record the written reply to a reported request (1.2: within 4 h)")
def written_reply(
    case_id: int, body: ReplyBody, who: Principal = Depends(person(*STAFF)), db: Database = Depends(database)
) -> dict[str, Any]:
    return _act(db, who, case_id, lambda s, c: cases.written_reply(s, c, who, body.text, clocks.now()))


@router.post("/cases/{case_id}/resolve", summary="Close a case whose incidents are all over (or a reported request)")
def resolve(
    case_id: int,
    body: NoteBody | None = None,
    who: Principal = Depends(person(*STAFF)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    note = body.note if body else None
    return _act(db, who, case_id, lambda s, c: cases.resolve(s, c, who, note, clocks.now()))


@router.post("/requests", status_code=201, summary="Report a request or fault by hand (hospital contact or engineer)")
def report_request(
    body: RequestBody, who: Principal = Depends(person(*PEOPLE)), db: Database = Depends(database)
) -> dict[str, Any]:
    if who.role == "hospital_contact":
        if body.site and body.site != who.site:
            raise HTTPException(403, "a hospital contact reports for its own hospital only")
        site = who.site
    else:
        site = body.site
    if not site:
        raise HTTPException(422, "site is required")
    title = Text(body.title_zh, body.title_en or body.title_zh)
    with db.session() as s:
        case = cases.report_request(s, who, site, title, body.description, body.severity, clocks.now())
        s.flush()
        return cases.case_json(s, case, full=True)
