"""Virus outbreak correlation (trigger 5, plan 2.6(5)): detections on many hosts of one hospital in a short time.

When `outbreak_hosts` or more hosts of a site report a detection (antivirus hit, tripped canary, rename
burst) within `outbreak_window_min` minutes, one whole-hospital incident opens that names the host
incidents as evidence (the case engine groups them under it), with what 2.6(5) asks to confirm: the time
of the outbreak (first detection) and its range (hosts, servers among them, spread in hosts per minute).
While it is open, later detections of the site join it; it resolves when every incident it groups has.
Times are the agents' detection times (observed_at), so a late delivery still lands in the right window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hisguard.plan import Scope, Severity, Text, Trigger
from hisguard.server.domain import cases, incidents
from hisguard.server.storage.models import Incident

KEY = "outbreak/trigger5"
# Checks (agent/classify.py) that mean "this host is infected", as opposed to protection off or stale signatures.
DETECTION_CHECKS = frozenset(
    {
        "av.detection",
        "av.detection.server",
        "canary.tripped",
        "canary.tripped.server",
        "canary.rename_burst",
        "canary.rename_burst.server",
    }
)
TITLE = Text(
    "全院病毒集中爆发：{hosts} 台主机在 {minutes:g} 分钟内检出病毒{servers_zh}",
    "Hospital-wide virus outbreak: detections on {hosts} hosts within {minutes:g} min{servers_en}",
)


@dataclass(frozen=True)
class Rule:
    hosts: int
    window: timedelta


def rule() -> Rule:
    conf = cases.settings()
    return Rule(conf.outbreak_hosts, timedelta(minutes=conf.outbreak_window_min))


def is_detection(inc: Incident) -> bool:
    ev = inc.evidence if isinstance(inc.evidence, dict) else {}
    return inc.trigger == int(Trigger.VIRUS) and inc.key != KEY and ev.get("check") in DETECTION_CHECKS


def _grouped_ids(inc: Incident) -> list[int]:
    return [m["id"] for m in inc.evidence.get("incidents", []) if isinstance(m, dict) and isinstance(m.get("id"), int)]


def _first_per_host(members: list[Incident]) -> dict[str, datetime]:
    first: dict[str, datetime] = {}
    for inc in members:
        if inc.host not in first or inc.opened_at < first[inc.host]:
            first[inc.host] = inc.opened_at
    return first


def _burst(cands: list[Incident], need: int, window: timedelta) -> list[Incident] | None:
    """The earliest run of detections within `window` that covers `need` distinct hosts, if any."""
    j = 0
    for i in range(len(cands)):
        j = max(j, i)
        while j + 1 < len(cands) and cands[j + 1].opened_at - cands[i].opened_at <= window:
            j += 1
        run = cands[i : j + 1]
        if len({c.host for c in run}) >= need:
            return run
    return None


def _fields(site: str, members: list[Incident], r: Rule) -> tuple[dict[str, Any], datetime]:
    members = sorted(members, key=lambda m: (m.opened_at, m.id))
    first = _first_per_host(members)
    start, last = min(first.values()), max(first.values())
    # Spread: hosts per minute from the first detection to the latest newly hit host (at least one minute).
    minutes = max((last - start).total_seconds() / 60, 1.0)
    servers = sorted({m.host for m in members if str(m.evidence.get("check", "")).endswith(".server")})
    title = TITLE.format(
        hosts=len(first),
        minutes=round((last - start).total_seconds() / 60, 1),
        servers_zh=f"（含服务器 {len(servers)} 台，需立即到场）" if servers else "（仅工作站，电话指导查杀隔离）",
        servers_en=f" ({len(servers)} servers hit: engineers on site)" if servers else " (workstations only)",
    )
    departments = list(dict.fromkeys(d for m in members for d in m.departments))
    functions = list(dict.fromkeys(f for m in members for f in m.functions))
    evidence = {
        "check": "outbreak",
        "first_detection_at": start.isoformat(),
        "latest_host_at": last.isoformat(),
        "host_count": len(first),
        "spread_hosts_per_min": round(len(first) / minutes, 2),
        "affected_hosts": [
            {"machine": h, "first_at": t.isoformat()} for h, t in sorted(first.items(), key=lambda x: x[1])
        ],
        "servers_hit": servers,
        "threshold": {"hosts": r.hosts, "window_min": r.window.total_seconds() / 60},
        # Read by the case engine (cases.GROUP_FIELDS): the host incidents this outbreak stands for.
        "incidents": [
            {
                "id": m.id,
                "key": m.key,
                "machine": m.host,
                "at": m.opened_at.isoformat(),
                "threat": m.evidence.get("threat"),
                "file": m.evidence.get("file") or m.evidence.get("path"),
            }
            for m in members
        ],
    }
    fields = {
        "key": KEY,
        "host": site,
        "trigger": int(Trigger.VIRUS),
        "severity": Severity.CRITICAL.value,
        "scope": Scope.HOSPITAL.value,
        "department": None,
        "departments": departments,
        "functions": functions,
        "title_zh": title.zh,
        "title_en": title.en,
        "evidence": evidence,
    }
    return fields, max(m.opened_at for m in members)


def correlate(s: Session, site: str, touched: Iterable[int]) -> list[int]:
    """After a batch: open, grow or resolve the site's outbreak incident. Returns its id if it changed."""
    changed = [inc for iid in dict.fromkeys(touched) if (inc := s.get(Incident, iid)) is not None and is_detection(inc)]
    if not changed:
        return []
    r = rule()
    current = incidents.find_open(s, site, KEY)
    if current is not None:
        grouped = set(_grouped_ids(current))
        fresh = [c for c in changed if c.id not in grouped and c.status == "open"]
        members = [m for iid in grouped if (m := s.get(Incident, iid)) is not None] + fresh
        if fresh:
            fields, at = _fields(site, members, r)
            incidents.open_or_update(s, site, None, fields, max(at, current.updated_at))
            return [current.id]
        if all(m.status != "open" for m in members):
            ends = [m.resolved_at for m in members if m.resolved_at] or [current.updated_at]
            incidents.resolve(s, site, KEY, max(ends))
            return [current.id]
        return []
    opened = [c for c in changed if c.status == "open"]
    if not opened:
        return []
    lo = min(c.opened_at for c in opened) - r.window
    hi = max(c.opened_at for c in opened) + r.window
    q = (
        select(Incident)
        .where(Incident.site == site, Incident.trigger == int(Trigger.VIRUS), Incident.opened_at.between(lo, hi))
        .order_by(Incident.opened_at, Incident.id)
    )
    rows = list(s.scalars(q))
    # Detections an earlier (now resolved) outbreak already accounted for do not start another.
    done = {iid for inc in rows if inc.key == KEY for iid in _grouped_ids(inc)}
    cands = [c for c in rows if is_detection(c) and c.id not in done]
    run = _burst(cands, r.hosts, r.window)
    if run is None:
        return []
    # Everything of the site still open and detected since the run began belongs to the outbreak too.
    members = list(
        {
            m.id: m for m in [*run, *(c for c in cands if c.status == "open" and c.opened_at >= run[0].opened_at)]
        }.values()
    )
    fields, at = _fields(site, members, r)
    return [incidents.open_or_update(s, site, None, fields, at).id]
