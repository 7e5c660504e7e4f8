"""Incidents: opened, re-detected and resolved under a stable key, one open incident per fault."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from hisguard.plan import Severity
from hisguard.server.storage.models import Incident

# Statements the ingest path runs per incident are built once (building them cost more than running them).
_FIND_OPEN = select(Incident).where(
    Incident.site == bindparam("site"), Incident.key == bindparam("key"), Incident.status == "open"
)


# Session.info key: ids of incidents this transaction opened and no case has taken yet (spares a lookup).
UNLINKED = "hisguard.unlinked_incidents"


def find_open(s: Session, site: str, key: str) -> Incident | None:
    return s.scalar(_FIND_OPEN, {"site": site, "key": key})


def open_or_update(s: Session, site: str, agent_id: int | None, fields: dict[str, Any], at: datetime) -> Incident:
    """Open the incident for `fields['key']`, or fold a re-detection into the open one.

    Severity is never lowered by a re-detection: only raised (a person lowers it, with a reason).
    """
    inc = find_open(s, site, fields["key"])
    if inc is None:
        inc = Incident(
            site=site, agent_id=agent_id, status="open", opened_at=at, resolved_at=None, updated_at=at, **fields
        )
        s.add(inc)
        s.flush()
        s.info.setdefault(UNLINKED, set()).add(inc.id)  # new in this transaction: in no case yet
        return inc
    inc.severity = Severity(inc.severity).raised_to(Severity(fields["severity"])).value
    for name in ("trigger", "scope", "host", "department", "title_zh", "title_en", "evidence", "functions"):
        setattr(inc, name, fields[name])
    inc.departments = list(dict.fromkeys([*inc.departments, *fields["departments"]]))
    inc.updated_at = at
    return inc


def resolve(s: Session, site: str, key: str, at: datetime) -> Incident | None:
    inc = find_open(s, site, key)
    if inc is not None:
        inc.status = "resolved"
        inc.resolved_at = max(at, inc.opened_at)
        inc.updated_at = at
    return inc


def search(
    s: Session,
    status: str | None = None,
    site: str | None = None,
    trigger: int | None = None,
    severity: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Incident]:
    """Incidents, newest first, filtered."""
    q = select(Incident).order_by(Incident.opened_at.desc(), Incident.id.desc())
    if status:
        q = q.where(Incident.status == status)
    if site:
        q = q.where(Incident.site == site)
    if trigger:
        q = q.where(Incident.trigger == trigger)
    if severity:
        q = q.where(Incident.severity == severity)
    return list(s.scalars(q.limit(limit).offset(offset)))


def as_json(inc: Incident) -> dict[str, Any]:
    from hisguard.plan import Scope, Trigger

    trig = Trigger(inc.trigger)
    sev = Severity(inc.severity)
    return {
        "id": inc.id,
        "key": inc.key,
        "site": inc.site,
        "host": inc.host,
        "trigger": inc.trigger,
        "trigger_name": {"zh": trig.short.zh, "en": trig.short.en},
        "severity": inc.severity,
        "severity_name": {"zh": sev.text.zh, "en": sev.text.en},
        "respond_within_min": int(sev.response_within.total_seconds() // 60),
        "scope": inc.scope,
        "scope_name": {"zh": Scope(inc.scope).text.zh, "en": Scope(inc.scope).text.en},
        "department": inc.department,
        "departments": inc.departments,
        "functions": inc.functions,
        "title_zh": inc.title_zh,
        "title_en": inc.title_en,
        "status": inc.status,
        "opened_at": inc.opened_at.isoformat(),
        "resolved_at": inc.resolved_at.isoformat() if inc.resolved_at else None,
        "updated_at": inc.updated_at.isoformat(),
        "evidence": inc.evidence,
    }


def get(s: Session, incident_id: int) -> Incident | None:
    return s.get(Incident, incident_id)
