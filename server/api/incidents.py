"""Engineers' read API: incidents and agents."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from hisguard.plan import Severity
from hisguard.report import utcnow
from hisguard.server.api.deps import require, session
from hisguard.server.domain.incidents import as_json
from hisguard.server.storage.models import Agent, AgentStatus, Incident

router = APIRouter(tags=["engineers"], dependencies=[Depends(require("engineer"))])


@router.get("/incidents", summary="Incidents, newest first")
def list_incidents(
    status: Literal["open", "resolved"] | None = None,
    site: str | None = None,
    trigger: int | None = Query(None, ge=1, le=6),
    severity: Severity | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    s: Session = Depends(session),
) -> list[dict[str, Any]]:
    q = select(Incident).order_by(Incident.opened_at.desc(), Incident.id.desc())
    if status:
        q = q.where(Incident.status == status)
    if site:
        q = q.where(Incident.site == site)
    if trigger:
        q = q.where(Incident.trigger == trigger)
    if severity:
        q = q.where(Incident.severity == severity.value)
    return [as_json(i) for i in s.scalars(q.limit(limit).offset(offset))]


@router.get("/incidents/{incident_id}", summary="One incident")
def get_incident(incident_id: int, s: Session = Depends(session)) -> dict[str, Any]:
    inc = s.get(Incident, incident_id)
    if inc is None:
        raise HTTPException(404, "no such incident")
    return as_json(inc)


@router.get("/agents", summary="Agents, their last heartbeat and version")
def list_agents(request: Request, s: Session = Depends(session)) -> list[dict[str, Any]]:
    missed = request.app.state.settings.silence_heartbeats
    now = utcnow()
    out = []
    for a in s.scalars(select(Agent).order_by(Agent.site, Agent.name)):
        silent = a.last_seen is None or now - a.last_seen > timedelta(seconds=(a.interval_s or 30) * missed)
        out.append(
            {
                "id": a.id,
                "name": a.name,
                "site": a.site,
                "version": a.version,
                "last_seen": a.last_seen.isoformat() if a.last_seen else None,
                "heartbeat_interval_s": a.interval_s,
                "silent": silent,
                "department": a.department,
                "hospital_critical": a.hospital_critical,
            }
        )
    return out


@router.get("/agents/{agent_id}/health", summary="The agent's latest health snapshot")
def agent_health(agent_id: int, s: Session = Depends(session)) -> dict[str, Any]:
    agent = s.get(Agent, agent_id)
    if agent is None:
        raise HTTPException(404, "no such agent")
    status = s.get(AgentStatus, agent_id)
    return {
        "agent": agent.name,
        "site": agent.site,
        "at": status.at.isoformat() if status else None,
        "snapshot": status.snapshot if status else None,
    }
