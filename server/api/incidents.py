"""Engineers' read API: incidents and agents."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy.orm import Session

from hisguard.plan import Severity
from hisguard.report import utcnow
from hisguard.server.api.deps import require, session
from hisguard.server.domain import agents, incidents

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
    found = incidents.search(s, status, site, trigger, severity.value if severity else None, limit, offset)
    return [incidents.as_json(i) for i in found]


@router.get("/incidents/{incident_id}", summary="One incident")
def get_incident(incident_id: int, s: Session = Depends(session)) -> dict[str, Any]:
    inc = incidents.get(s, incident_id)
    if inc is None:
        raise HTTPException(404, "no such incident")
    return incidents.as_json(inc)


@router.get("/agents", summary="Agents, their last heartbeat and version")
def list_agents(request: Request, s: Session = Depends(session)) -> list[dict[str, Any]]:
    return agents.overview(s, utcnow(), request.app.state.settings.silence_heartbeats)


@router.get("/agents/{agent_id}/health", summary="The agent's latest health snapshot")
def agent_health(agent_id: int, s: Session = Depends(session)) -> dict[str, Any]:
    found = agents.health(s, agent_id)
    if found is None:
        raise HTTPException(404, "no such agent")
    return found
