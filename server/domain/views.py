"""Read-side views for the web console: site tiles, a site's devices and topology, a host's history.

Only reads; every change goes through the domain's actions (cases.acknowledge, cases.do_step, …).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hisguard.plan import Severity
from hisguard.server.domain.cases import group_refs
from hisguard.server.domain.tokens import Principal
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import Agent, AgentStatus, AuditEntry, Case, CaseClock, HealthSample, Incident

_RANK = {sev.value: sev.rank for sev in Severity}


def site_filter(who: Principal) -> str | None:
    """The one site a hospital's person may see; None: every site."""
    return who.site if who.role == "hospital_contact" else None


def may_see(who: Principal, site: str) -> bool:
    only = site_filter(who)
    return only is None or only == site


def is_silent(last_seen: datetime | None, interval_s: float | None, now: datetime, missed: int) -> bool:
    return last_seen is None or now - last_seen > timedelta(seconds=(interval_s or 30.0) * missed)


@dataclass
class Tile:
    site: str
    name_zh: str
    name_en: str
    agents: int = 0
    silent: int = 0
    open_cases: int = 0
    worst: dict[str, Any] | None = None  # id, severity, title_zh/en, deadline, acknowledged, drill

    @property
    def severity(self) -> str | None:
        return self.worst["severity"] if self.worst else None


def site_names(settings: ServerSettings, site: str) -> tuple[str, str]:
    conf = settings.sites.get(site)
    zh = (conf.name_zh if conf else None) or site
    return zh, (conf.name_en if conf else None) or zh


def overview(s: Session, who: Principal, now: datetime, settings: ServerSettings) -> list[Tile]:
    """Every visible site: agents (and how many are silent), the worst open case and its response deadline."""
    only = site_filter(who)
    tiles: dict[str, Tile] = {}

    def tile(site: str) -> Tile:
        if site not in tiles:
            tiles[site] = Tile(site, *site_names(settings, site))
        return tiles[site]

    for site in settings.sites:
        if site != "*" and (only is None or site == only):
            tile(site)
    q = select(Agent.site, Agent.last_seen, Agent.interval_s)
    if only is not None:
        q = q.where(Agent.site == only)
    for site, last_seen, interval in s.execute(q):
        t = tile(site)
        t.agents += 1
        t.silent += is_silent(last_seen, interval, now, settings.silence_heartbeats)
    deadline = (
        select(CaseClock.case_id, func.min(CaseClock.due_at).label("due"))
        .where(CaseClock.status == "pending", CaseClock.name.like("response:%"))
        .group_by(CaseClock.case_id)
        .subquery()
    )
    q2 = (
        select(
            Case.id,
            Case.site,
            Case.severity,
            Case.title_zh,
            Case.title_en,
            Case.acknowledged_at,
            Case.drill,
            deadline.c.due,
        )
        .outerjoin(deadline, deadline.c.case_id == Case.id)
        .where(Case.status == "open")
    )
    if only is not None:
        q2 = q2.where(Case.site == only)
    for cid, site, sev, tzh, ten, acked, drill, due in s.execute(q2):
        t = tile(site)
        t.open_cases += 1
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=now.tzinfo)
        cand = {
            "id": cid,
            "severity": sev,
            "title_zh": tzh,
            "title_en": ten,
            "deadline": due,
            "acknowledged": acked is not None,
            "drill": drill,
        }
        if t.worst is None or _worse(cand, t.worst):
            t.worst = cand
    return sorted(tiles.values(), key=lambda t: (-_RANK.get(t.severity or "", 0), -t.silent, t.site))


def _worse(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ra, rb = _RANK.get(a["severity"], 0), _RANK.get(b["severity"], 0)
    if ra != rb:
        return ra > rb
    if a["acknowledged"] != b["acknowledged"]:
        return not a["acknowledged"]
    far = datetime.max.replace(tzinfo=None)
    da = a["deadline"].replace(tzinfo=None) if a["deadline"] else far
    db = b["deadline"].replace(tzinfo=None) if b["deadline"] else far
    return da < db


# --- one site --------------------------------------------------------------------------------------


@dataclass
class Node:
    """A node of the topology tree: ok False is down, None is unknown."""

    label: str
    ok: bool | None = True
    kind: str = ""
    href: str | None = None
    children: list[Node] = field(default_factory=list)


def _rows(snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    obs = (snapshot or {}).get("observations") or []
    return [o for o in obs if isinstance(o, dict) and isinstance(o.get("check"), str)]


def site_view(s: Session, site: str, now: datetime, settings: ServerSettings) -> dict[str, Any]:
    """Agents, switches and their interfaces, databases, antivirus, and the topology tree of one site."""
    agents = []
    switches: dict[str, dict[str, Any]] = {}
    databases: list[dict[str, Any]] = []
    antivirus: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    root = Node(site, True, "site")
    q = (
        select(Agent, AgentStatus)
        .outerjoin(AgentStatus, AgentStatus.agent_id == Agent.id)
        .where(Agent.site == site)
        .order_by(Agent.name)
    )
    for agent, status in s.execute(q):
        rows = _rows(status.snapshot if status else None)
        silent = is_silent(agent.last_seen, agent.interval_s, now, settings.silence_heartbeats)
        failing = [o for o in rows if o.get("ok") is False]
        agents.append(
            {
                "id": agent.id,
                "name": agent.name,
                "version": agent.version,
                "department": agent.department,
                "last_seen": agent.last_seen,
                "silent": silent,
                "failing": len(failing),
                "backlog": (status.snapshot or {}).get("backlog") if status else None,
            }
        )
        host = Node(agent.name, not silent and not failing, "agent", f"/hosts/{agent.id}")
        root.children.append(host)
        for o in rows:
            check, subject = o["check"], str(o.get("subject", ""))
            if check == "snmp.reachable":
                sw = switches.setdefault(
                    subject, {"name": subject, "ok": o.get("ok"), "ports": [], "agent": agent.name}
                )
                sw["ok"] = o.get("ok")
            elif check == "snmp.interface":
                dev, _, port = subject.partition("/")
                sw = switches.setdefault(dev, {"name": dev, "ok": None, "ports": [], "agent": agent.name})
                sw["ports"].append({"port": port or subject, "ok": o.get("ok"), "status": o.get("value")})
            elif check.startswith("db."):
                databases.append({**o, "agent": agent.name})
            elif check.startswith("av.") or check.startswith("canary"):
                antivirus.append({**o, "agent": agent.name})
            elif check == "ping.reachable":
                host.children.append(Node(subject, o.get("ok"), "ping"))
            elif check == "service.answer":
                services.append({**o, "agent": agent.name})
                host.children.append(Node(str(o.get("name") or subject), o.get("ok"), "service"))
        for sw in switches.values():
            if sw["agent"] == agent.name:
                down = [p for p in sw["ports"] if p["ok"] is False]
                dev = Node(sw["name"], sw["ok"] if sw["ok"] is not None else not down, "switch")
                dev.children = [Node(f"{sw['name']}/{p['port']}", False, "port") for p in down]
                host.children.append(dev)
    # What the open incidents say is cut off behind a failed device (topology children, outbreak hosts).
    for inc in s.scalars(select(Incident).where(Incident.site == site, Incident.status == "open")):
        names, _ = group_refs(inc.evidence)
        if names:
            node = Node(inc.host, False, "incident")
            node.children = [Node(n, False, "behind") for n in sorted(names)]
            root.children.append(node)
    for sw in switches.values():
        sw["ports"].sort(key=lambda p: _natural(p["port"]))
    return {
        "agents": agents,
        "switches": sorted(switches.values(), key=lambda w: w["name"]),
        "databases": databases,
        "antivirus": antivirus,
        "services": services,
        "tree": root,
    }


def _natural(text: str) -> tuple[Any, ...]:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def site_cases(s: Session, site: str, limit: int = 50) -> list[Case]:
    q = select(Case).where(Case.site == site).order_by(Case.status != "open", Case.reported_at.desc()).limit(limit)
    return list(s.scalars(q))


def open_cases(s: Session, who: Principal, limit: int = 200) -> list[Case]:
    q = select(Case).where(Case.status == "open")
    if (only := site_filter(who)) is not None:
        q = q.where(Case.site == only)
    return list(s.scalars(q.order_by(Case.reported_at.desc()).limit(limit)))


# --- one host's history ----------------------------------------------------------------------------

# Chart → which compact sample names (check/subject, "rtt:" for round trips) it draws.
CHARTS = {
    "cpu": ("host.cpu/",),
    "memory": ("host.memory/",),
    "disk": ("host.disk/",),
    "ping_loss": ("ping.reachable/",),
    "ping_rtt": ("rtt:ping.reachable/",),
    "db": ("db.connect/",),  # the login's time (ms); the probe's other values are counts, ages, percents
    "service_latency": ("service.answer/",),  # the service probe's answers carry their latency (ms)
}


def chart_of(name: str) -> str | None:
    return next((chart for chart, prefixes in CHARTS.items() if name.startswith(prefixes)), None)


def host_history(
    s: Session, agent_id: int, since: datetime, until: datetime | None = None
) -> dict[str, dict[str, list[tuple[datetime, float]]]]:
    """chart → series name → [(time, value)] over [since, until], oldest first, downsampled to the chart."""
    from hisguard.server.domain import history

    prefixes = tuple(p for ps in CHARTS.values() for p in ps)
    series = history.load(s, agent_id, since, until or datetime.now(since.tzinfo), prefixes)
    out: dict[str, dict[str, list[tuple[datetime, float]]]] = {c: {} for c in CHARTS}
    for name, points in series.items():
        out[chart_of(name) or ""][name] = points
    return out


def agent(s: Session, agent_id: int) -> tuple[Agent, AgentStatus | None] | None:
    row = s.get(Agent, agent_id)
    return (row, s.get(AgentStatus, agent_id)) if row else None


# --- audit log and change detection ----------------------------------------------------------------


def audit_log(s: Session, limit: int = 200, offset: int = 0) -> list[AuditEntry]:
    return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)))


def fingerprint(s: Session, who: Principal, site: str | None = None, agent_id: int | None = None) -> tuple[Any, ...]:
    """Changes whenever what a page shows may have changed: cases and their timelines, agents coming and going;
    on a site's page its agents' heartbeats, on a host's page its samples (not every heartbeat everywhere)."""
    from hisguard.server.storage.models import CaseEvent

    only = site_filter(who)
    cq = select(func.count(Case.id), func.max(Case.updated_at))
    eq = select(func.max(CaseEvent.id))
    aq = select(func.count(Agent.id))
    if only is not None:
        cq = cq.where(Case.site == only)
        eq = eq.join(Case, Case.id == CaseEvent.case_id).where(Case.site == only)
        aq = aq.where(Agent.site == only)
    parts: list[Any] = [*s.execute(cq).one(), s.scalar(eq), *s.execute(aq).one()]
    if site is not None:
        parts.append(s.scalar(select(func.max(Agent.last_seen)).where(Agent.site == site)))
    if agent_id is not None:
        parts.append(s.scalar(select(func.max(HealthSample.id)).where(HealthSample.agent_id == agent_id)))
    return tuple(str(p) for p in parts)
