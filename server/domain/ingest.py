"""Ingest of agents' report batches: idempotent (each item id stored once), incidents keyed by fault."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from hisguard.plan import Text, Trigger, scope_for, severity_for
from hisguard.report import Heartbeat, IncidentEvent, ReportBatch, utcnow
from hisguard.server.domain import cases, clocks, incidents, outbreak
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import Database, claim_receipts, upsert_status
from hisguard.server.storage.models import Agent, HealthSample, Incident, Receipt

SILENT_KEY = "agent-silent/{agent}"
SILENT_TITLE = Text("监测代理 {agent} 失联：服务器宕机或网络中断", "Agent {agent} is silent: server down or cut off")


class WrongAgent(Exception):
    """The batch names another agent than the token's."""


def wrong_agent(who: Principal, batch: ReportBatch) -> str | None:
    """Why this token may not deliver this batch, if the batch names another agent."""
    if batch.agent != who.name:
        return f"this token belongs to agent {who.name!r}, not {batch.agent!r}"
    return None


@dataclass
class Applied:
    """What one batch did: the item ids now stored, how many were repeats, incidents opened or changed."""

    stored: list[str]
    duplicates: int = 0
    touched: list[int] = field(default_factory=list)


def apply_batch(s: Session, who: Principal, batch: ReportBatch) -> tuple[list[str], int, list[int]]:
    """Store one batch; return the item ids now stored, how many were repeats, and incidents opened or changed."""
    done = apply_group(s, [(who, batch)])[0]
    return done.stored, done.duplicates, done.touched


def apply_group(s: Session, entries: Sequence[tuple[Principal, ReportBatch]]) -> list[Applied]:
    """Store several agents' batches in one transaction (the server commits arrivals together).

    Heartbeats, the bulk of the traffic, go in a handful of statements for the whole group; incident
    events take the plan's path one by one. Raises WrongAgent before writing if any batch names
    another agent than its token's.
    """
    for who, batch in entries:
        if mismatch := wrong_agent(who, batch):
            raise WrongAgent(mismatch)
    now = utcnow()
    claimed = claim_receipts(s, [(str(item.id), who.agent_id) for who, batch in entries for item in batch.items], now)
    results: list[Applied] = []
    beats: list[tuple[Principal, Heartbeat]] = []
    touched: dict[str, list[int]] = {}  # per site, in order
    eventful: set[str] = set()  # sites whose batches carried incident events
    detections: set[str] = set()  # … of trigger 5, the only ones outbreak correlation reads
    for who, batch in entries:
        site = who.site or ""
        done = Applied([str(item.id) for item in batch.items])
        results.append(done)
        for item in batch.items:
            item_id = str(item.id)
            if item_id not in claimed:
                done.duplicates += 1
                continue
            claimed.discard(item_id)  # the same id twice: applied once
            if isinstance(item, IncidentEvent):
                eventful.add(site)
                if item.trigger == Trigger.VIRUS:
                    detections.add(site)
                inc = _incident(s, site, who.agent_id, item)
                if inc is not None:
                    done.touched.append(inc)
                    touched.setdefault(site, []).append(inc)
            else:
                beats.append((who, item))
    for site, inc in _heartbeats(s, beats, now):
        touched.setdefault(site, []).append(inc)
    sites = list(dict.fromkeys([*touched, *eventful]))
    for site in sites:
        if site in detections:  # many hosts infected at once: trigger 5
            touched.setdefault(site, []).extend(outbreak.correlate(s, site, touched.get(site, [])))
    # The plan: group into cases, activate, start clocks, queue notifications — in this same transaction.
    # Last, so that incidents server-side correlation opened are picked up as unlinked (one query for all sites).
    unlinked = cases.unlinked_open(s, sites) if sites else {}
    for site in sites:
        cases.sync(s, [*touched.get(site, []), *unlinked.get(site, [])], clocks.now())
    return results


def _incident(s: Session, site: str, agent_id: int | None, ev: IncidentEvent) -> int | None:
    if ev.state == "resolved":
        inc = incidents.resolve(s, site, ev.key, ev.observed_at)
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
    return incidents.open_or_update(s, site, agent_id, fields, ev.observed_at).id


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


def _heartbeats(s: Session, beats: list[tuple[Principal, Heartbeat]], now: datetime) -> list[tuple[str, int]]:
    """A group's heartbeats in four statements; returns the silence incidents they end, as (site, id)."""
    if not beats:
        return []
    newest: dict[int, tuple[Principal, Heartbeat]] = {}
    for who, hb in beats:
        assert who.agent_id is not None
        seen = newest.get(who.agent_id)
        if seen is None or hb.observed_at >= seen[1].observed_at:
            newest[who.agent_id] = (who, hb)
    # The agent row moves only forward in time, and only its small columns change.
    s.execute(
        _AGENT_SEEN,
        [
            {
                "b_id": agent_id,
                "b_at": hb.observed_at,
                "b_interval": hb.interval_s,
                "b_department": hb.department,
                "b_critical": hb.hospital_critical,
                "b_version": str(hb.snapshot.get("version", ""))[:50] or None,
            }
            for agent_id, (_, hb) in sorted(newest.items())  # one lock order for every writer
        ],
    )
    upsert_status(s, [(agent_id, hb.observed_at, hb.snapshot) for agent_id, (_, hb) in sorted(newest.items())])
    s.execute(
        HEALTH_INSERT,
        [{"agent_id": who.agent_id, "at": hb.observed_at, "data": _compact(hb.snapshot)} for who, hb in beats],
    )
    # The agent speaks again: a silence incident about it is over.
    wanted = {(who.site, SILENT_KEY.format(agent=who.name)) for who, _ in newest.values()}
    rows = s.execute(
        select(_INC.c.site, _INC.c.key).where(
            _INC.c.status == "open",
            _INC.c.site.in_({site for site, _ in wanted}),
            _INC.c.key.in_({key for _, key in wanted}),
        )
    ).all()
    ended = []
    for site, key in rows:
        if (site, key) in wanted and (inc := incidents.resolve(s, site, key, now)) is not None:
            ended.append((site, inc.id))
    return ended


_INC = Incident.__table__
_AGENTS = Agent.__table__
_AGENT_SEEN = (
    update(_AGENTS)
    .where(
        _AGENTS.c.id == bindparam("b_id"),
        or_(_AGENTS.c.last_seen.is_(None), _AGENTS.c.last_seen <= bindparam("b_at")),
    )
    .values(
        last_seen=bindparam("b_at"),
        interval_s=bindparam("b_interval"),
        department=bindparam("b_department"),
        hospital_critical=bindparam("b_critical"),
        version=func.coalesce(bindparam("b_version", type_=String), _AGENTS.c.version),
    )
)
HEALTH_INSERT = HealthSample.__table__.insert()


def prune_receipts(db: Database, before: datetime, chunk: int = 5000) -> int:
    """Forget item ids received before `before`, a chunk a transaction (ingest never waits long)."""
    table = Receipt.__table__
    oldest = select(table.c.id).where(table.c.received_at < before).limit(chunk)
    total = 0
    while True:
        with db.write_session() as s:
            n = s.execute(delete(table).where(table.c.id.in_(oldest.scalar_subquery()))).rowcount
        total += n
        if n < chunk:
            return total


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
