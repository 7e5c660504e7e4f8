"""Figures a vendor shows a hospital at contract review: cases by trigger and severity, response times
against the contract's service levels (1.4), on-site arrivals (2.9), drills and training done (2.8).

Drills never count as cases: their figures are only the drills done.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hisguard.plan import Severity, Trigger
from hisguard.server.domain import dispatch
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.drill_models import Dispatch, Drill, Exercise
from hisguard.server.storage.models import Case, PlanInstance


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def real_cases(s: Session, site: str, start: datetime, end: datetime) -> list[Case]:
    """The site's cases reported in [start, end): not drills, not folded into another case."""
    q = select(Case).where(
        Case.site == site,
        Case.drill.is_(False),
        Case.status != "merged",
        Case.reported_at >= start,
        Case.reported_at < end,
    )
    return list(s.scalars(q.order_by(Case.reported_at)))


def site_stats(s: Session, site: str, start: datetime, end: datetime, now: datetime) -> dict[str, Any]:
    rows = real_cases(s, site, start, end)
    by_trigger: dict[str, int] = {}
    by_severity: dict[str, int] = {sev.value: 0 for sev in Severity}
    matrix: dict[str, dict[str, int]] = {}
    for c in rows:
        t = str(c.trigger)  # "0": a request reported by the hospital
        by_trigger[t] = by_trigger.get(t, 0) + 1
        by_severity[c.severity] = by_severity.get(c.severity, 0) + 1
        matrix.setdefault(t, {}).setdefault(c.severity, 0)
        matrix[t][c.severity] += 1
    response: dict[str, Any] = {}
    for sev in Severity:
        these = [c for c in rows if c.severity == sev.value]
        limit = sev.response_within.total_seconds() / 60
        took = [(c.acknowledged_at - c.reported_at).total_seconds() / 60 for c in these if c.acknowledged_at]
        # A case not acknowledged counts as missed once its deadline has passed.
        missed = sum(1 for m in took if m > limit) + sum(
            1 for c in these if not c.acknowledged_at and now > c.reported_at + sev.response_within
        )
        met = sum(1 for m in took if m <= limit)
        response[sev.value] = {
            "cases": len(these),
            "within_min": limit,
            "acknowledged": len(took),
            "met": met,
            "missed": missed,
            "compliance": round(met / (met + missed), 4) if met + missed else None,
            "median_min": _median(took),
            "max_min": round(max(took), 2) if took else None,
        }
    ids = [c.id for c in rows]
    activated = len(list(s.scalars(select(PlanInstance.id).where(PlanInstance.case_id.in_(ids))))) if ids else 0
    recovered = [(c.resolved_at - c.opened_at).total_seconds() / 60 for c in rows if c.resolved_at]
    arrivals = {"dispatched": 0, "on_time": 0, "late": 0, "overdue": 0, "on_the_way": 0}
    if ids:
        for d in s.scalars(select(Dispatch).where(Dispatch.case_id.in_(ids))):
            arrivals["dispatched"] += 1
            arrivals[dispatch.arrival_status(d, now)["state"]] += 1
    drills = list(
        s.scalars(
            select(Drill)
            .where(Drill.site == site, Drill.started_at >= start, Drill.started_at < end)
            .order_by(Drill.id)
        )
    )
    training = list(
        s.scalars(
            select(Exercise).where(
                Exercise.site == site, Exercise.kind == "training", Exercise.at >= start, Exercise.at < end
            )
        )
    )
    return {
        "site": site,
        "cases": len(rows),
        "by_trigger": dict(sorted(by_trigger.items())),
        "trigger_names": {
            str(int(t)): {"zh": t.short.zh, "en": t.short.en} for t in Trigger if str(int(t)) in by_trigger
        },
        "by_severity": by_severity,
        "by_trigger_severity": matrix,
        "response": response,
        "plans_activated": activated,
        "recovery_median_min": _median(recovered),
        "arrivals": arrivals,
        "drills": {
            "started": len(drills),
            "done": sum(1 for d in drills if d.status == "closed"),
            "list": [
                {
                    "id": d.id,
                    "trigger": d.trigger,
                    "status": d.status,
                    "started_at": d.started_at.isoformat(),
                    "case_id": d.case_id,
                }
                for d in drills
            ],
        },
        "training": len(training),
    }


def stats(
    s: Session, settings: ServerSettings, start: datetime, end: datetime, now: datetime, site: str | None = None
) -> dict[str, Any]:
    from hisguard.server.domain.drills import adopt, known_sites

    adopt(s)
    sites = [site] if site else known_sites(s, settings)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "sites": [site_stats(s, name, start, end, now) for name in sites],
    }
