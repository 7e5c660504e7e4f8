"""Ingest of agents' report batches: idempotent (each item id stored once), incidents keyed by fault."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from hisguard.plan import Text, Trigger, scope_for, severity_for
from hisguard.report import Heartbeat, IncidentEvent, ReportBatch, utcnow
from hisguard.server.domain import cases, clocks, incidents, outbreak
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import claim_receipts, upsert_status
from hisguard.server.storage.models import Agent, HealthSample, Incident

SILENT_KEY = "agent-silent/{agent}"
SILENT_TITLE = Text("监测代理 {agent} 失联：服务器宕机或网络中断", "Agent {agent} is silent: server down or cut off")


class WrongAgent(Exception):
    """The batch names another agent than the token's."""


def apply_batch(s: Session, who: Principal, batch: ReportBatch) -> tuple[list[str], int, list[int]]:
    """Store a batch; return the item ids now stored, how many were repeats, and incidents opened or changed."""
    if batch.agent != who.name:
        raise WrongAgent(f"this token belongs to agent {who.name!r}, not {batch.agent!r}")
    agent = s.get(Agent, who.agent_id)
    assert agent is not None
    ids = [str(item.id) for item in batch.items]
    now = utcnow()
    # One bulk insert of the receipts claims the items; those another replica already stored are skipped.
    claimed = claim_receipts(s, agent.id, ids, now)
    touched: list[int] = []
    duplicates = 0
    for item in batch.items:
        item_id = str(item.id)
        if item_id not in claimed:
            duplicates += 1
            continue
        claimed.discard(item_id)  # the same id twice in one batch: applied once
        if isinstance(item, IncidentEvent):
            inc = _incident(s, agent, item)
            if inc is not None:
                touched.append(inc)
        else:
            recovered = _heartbeat(s, agent, item, now)
            if recovered is not None:
                touched.append(recovered)
    touched.extend(outbreak.correlate(s, agent.site, touched))  # many hosts infected at once: trigger 5
    # The plan: group into cases, activate, start clocks, queue notifications — in this same transaction.
    # Keep this last: incidents opened by server-side correlation above are picked up as unlinked.
    if touched or any(isinstance(item, IncidentEvent) for item in batch.items):
        # (A batch of heartbeats that changed no incident has nothing for the plan: skip the queries.)
        cases.sync(s, [*touched, *cases.unlinked_open(s, agent.site)], clocks.now())
    return ids, duplicates, touched


def _incident(s: Session, agent: Agent, ev: IncidentEvent) -> int | None:
    if ev.state == "resolved":
        inc = incidents.resolve(s, agent.site, ev.key, ev.observed_at)
        return inc.id if inc else None
    fields = {
        "key": ev.key,
        "host": ev.host,
        "trigger": int(ev.trigger),
        "severity": ev.severity.value,
        "scope": ev.scope.value,
        "department": ev.department,
        "departments": ev.departments,
        "functions": [f.value for f in ev.functions],
        "title_zh": ev.title_zh,
        "title_en": ev.title_en,
        "evidence": {**ev.evidence, "drill": True} if ev.drill else ev.evidence,  # a drill's case is marked (2.8)
    }
    return incidents.open_or_update(s, agent.site, agent.id, fields, ev.observed_at).id


def _compact(snapshot: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in snapshot.get("observations", []):
        if not isinstance(row, dict):
            continue
        name = f"{row.get('check')}/{row.get('subject')}"
        if isinstance(row.get("value"), (int, float)):
            out[name] = row["value"]
        if isinstance(row.get("rtt_ms"), (int, float)):
            out[f"rtt:{name}"] = row["rtt_ms"]
    return out


def _heartbeat(s: Session, agent: Agent, hb: Heartbeat, now: datetime) -> int | None:
    if agent.last_seen is None or hb.observed_at >= agent.last_seen:
        agent.last_seen = max(hb.observed_at, agent.last_seen or hb.observed_at)
        agent.interval_s = hb.interval_s
        agent.department = hb.department
        agent.hospital_critical = hb.hospital_critical
        agent.version = str(hb.snapshot.get("version", agent.version or ""))[:50] or agent.version
        upsert_status(s, agent.id, hb.observed_at, hb.snapshot)  # one statement, only the status row
    s.execute(HEALTH_INSERT, {"agent_id": agent.id, "at": hb.observed_at, "data": _compact(hb.snapshot)})
    # The agent speaks again: a silence incident about it is over (looked up by the partial unique index).
    key = SILENT_KEY.format(agent=agent.name)
    if s.execute(_SILENT_OPEN, {"site": agent.site, "key": key}).first() is None:
        return None
    inc = incidents.resolve(s, agent.site, key, now)
    return inc.id if inc is not None else None


HEALTH_INSERT = HealthSample.__table__.insert()
_SILENT_OPEN = (
    select(Incident.__table__.c.id)
    .where(
        Incident.__table__.c.site == bindparam("site"),
        Incident.__table__.c.key == bindparam("key"),
        Incident.__table__.c.status == "open",
    )
    .limit(1)
)


def raise_silent_agents(
    s: Session, now: datetime, missed_heartbeats: int, listening_since: datetime | None = None
) -> list[int]:
    """Open a trigger-1 incident for each agent silent for more than `missed_heartbeats` intervals.

    Silence counts from when this server began listening at the earliest: while the server
    itself was down, agents could not be heard, and their spooled reports are still arriving.
    """
    opened = []
    for agent in s.scalars(select(Agent).where(Agent.last_seen.is_not(None))):
        interval = agent.interval_s or 30.0
        heard = max(agent.last_seen, listening_since) if listening_since else agent.last_seen
        if now - heard <= timedelta(seconds=interval * missed_heartbeats):
            continue
        key = SILENT_KEY.format(agent=agent.name)
        if incidents.find_open(s, agent.site, key) is not None:
            continue
        departments = [agent.department] if agent.department else []
        scope = scope_for(agent.hospital_critical, departments)
        title = SILENT_TITLE.format(agent=agent.name)
        fields = {
            "key": key,
            "host": agent.name,
            "trigger": int(Trigger.HARDWARE),
            "severity": severity_for(scope).value,
            "scope": scope.value,
            "department": agent.department,
            "departments": departments,
            "functions": [],
            "title_zh": title.zh,
            "title_en": title.en,
            "evidence": {
                "last_seen": agent.last_seen.isoformat(),
                "interval_s": interval,
                "missed_heartbeats": missed_heartbeats,
            },
        }
        opened.append(incidents.open_or_update(s, agent.site, agent.id, fields, now).id)
    if opened:
        cases.sync(s, opened, clocks.now())
    return opened
