"""Agents as engineers see them: last heard, silent or not, and the latest health snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hisguard.server.storage.models import Agent, AgentStatus


def is_silent(agent: Agent, now: datetime, missed_heartbeats: int) -> bool:
    if agent.last_seen is None:
        return True
    return now - agent.last_seen > timedelta(seconds=(agent.interval_s or 30) * missed_heartbeats)


def overview(s: Session, now: datetime, missed_heartbeats: int) -> list[dict[str, Any]]:
    return [
        {
            "id": a.id,
            "name": a.name,
            "site": a.site,
            "version": a.version,
            "last_seen": a.last_seen.isoformat() if a.last_seen else None,
            "heartbeat_interval_s": a.interval_s,
            "silent": is_silent(a, now, missed_heartbeats),
            "department": a.department,
            "hospital_critical": a.hospital_critical,
        }
        for a in s.scalars(select(Agent).order_by(Agent.site, Agent.name))
    ]


def health(s: Session, agent_id: int) -> dict[str, Any] | None:
    agent = s.get(Agent, agent_id)
    if agent is None:
        return None
    status = s.get(AgentStatus, agent_id)
    return {
        "agent": agent.name,
        "site": agent.site,
        "at": status.at.isoformat() if status else None,
        "snapshot": status.snapshot if status else None,
    }
