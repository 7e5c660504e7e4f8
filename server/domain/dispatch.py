"""On-site dispatch (2.9): how engineers travel to a hospital and by when they must be there.

Outside the vendor's home city, a whole-hospital fault means leaving at once by chartered or service
car; a partial fault means arriving within 8 hours. Inside the city, a taxi or the service car.
A city not configured counts as outside: the advice then errs on the side of leaving at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hisguard.plan import Scope, Text
from hisguard.server.domain import cases
from hisguard.server.domain.tokens import Principal
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.drill_models import Dispatch
from hisguard.server.storage.models import Case

PARTIAL_ARRIVAL = timedelta(hours=8)  # 2.9: partial problems outside the city, on site within 8 hours
CHARTERED = "chartered_or_service_car"
TAXI = "taxi_or_service_car"


@dataclass(frozen=True)
class Advice:
    inside_city: bool | None  # None: a city is not configured
    whole_hospital: bool
    mode: str
    go_now: bool
    arrive_within: timedelta | None
    text: Text


def _same_city(a: str | None, b: str | None) -> bool | None:
    if not a or not b:
        return None

    def norm(c: str) -> str:
        c = c.strip().lower()
        return c[:-1] if c.endswith("市") else c

    return norm(a) == norm(b)


def advise(site_city: str | None, vendor_city: str | None, scope: Scope) -> Advice:
    """The plan's travel advice for a hospital in `site_city` and a fault of `scope`."""
    inside = _same_city(site_city, vendor_city)
    whole = scope is Scope.HOSPITAL
    unknown = (
        Text(
            "（医院或公司所在城市未配置，按外地处理）",
            " (the hospital's or vendor's city is not configured: treated as outside the home city)",
        )
        if inside is None
        else Text("", "")
    )
    if inside:
        if whole:
            text = Text(
                "市内客户，全院故障：乘出租车或服务车立即出发。",
                "Inside the city, whole hospital down: go now by taxi or service car.",
            )
        else:
            text = Text("市内客户：乘出租车或服务车前往现场。", "Inside the city: go on site by taxi or service car.")
        return Advice(True, whole, TAXI, whole, None, text)
    if whole:
        text = Text(
            "外地客户，HIS 全院瘫痪：包车或服务车立即出发。" + unknown.zh,
            "Outside the home city, the whole HIS is down: go now by chartered or service car." + unknown.en,
        )
        return Advice(inside, True, CHARTERED, True, None, text)
    hours = int(PARTIAL_ARRIVAL.total_seconds() // 3600)
    text = Text(
        f"外地客户，局部故障：视路程乘包车或服务车，{hours} 小时内到达现场。" + unknown.zh,
        f"Outside the home city, partial fault: by chartered or service car as the distance requires, on site "
        f"within {hours} hours." + unknown.en,
    )
    return Advice(inside, False, CHARTERED, False, PARTIAL_ARRIVAL, text)


def advice_for(settings: ServerSettings, case: Case) -> Advice:
    return advise(settings.site(case.site).city, settings.vendor_city, Scope(case.scope))


def dispatches_of(s: Session, case_id: int) -> list[Dispatch]:
    return list(s.scalars(select(Dispatch).where(Dispatch.case_id == case_id).order_by(Dispatch.id)))


def dispatch(s: Session, settings: ServerSettings, case: Case, who: Principal, engineer: str, at: datetime) -> Dispatch:
    """Send an engineer on site with the plan's advice; the arrival deadline counts from now."""
    if case.status == "merged":
        raise cases.CaseError(f"case {case.id} was merged into case {case.merged_into}")
    adv = advice_for(settings, case)
    row = Dispatch(
        case_id=case.id,
        engineer=engineer,
        mode=adv.mode,
        advice_zh=adv.text.zh,
        advice_en=adv.text.en,
        dispatched_at=at,
        dispatched_by=who.name,
        arrive_by=at + adv.arrive_within if adv.arrive_within else None,
    )
    s.add(row)
    s.flush()
    cases.event(
        s,
        case,
        "dispatched",
        at,
        who.name,
        {
            "dispatch": row.id,
            "engineer": engineer,
            "mode": adv.mode,
            "arrive_by": row.arrive_by.isoformat() if row.arrive_by else None,
        },
    )
    cases.audit(s, who, "dispatch", at, case.site, case.id, engineer=engineer, mode=adv.mode)
    return row


def arrived(s: Session, case: Case, who: Principal, dispatch_id: int | None, at: datetime) -> Dispatch:
    """Record the arrival on site of a dispatched engineer (the latest dispatch without one if not named)."""
    rows = [d for d in dispatches_of(s, case.id) if dispatch_id in (None, d.id)]
    if dispatch_id is not None and not rows:
        raise cases.CaseError(f"case {case.id} has no dispatch {dispatch_id}", 404)
    waiting = [d for d in rows if d.arrived_at is None]
    if not waiting:
        raise cases.CaseError(f"case {case.id}: no dispatched engineer is still on the way")
    row = waiting[-1]
    row.arrived_at, row.arrival_recorded_by = at, who.name
    late = row.arrive_by is not None and at > row.arrive_by
    cases.event(s, case, "arrived", at, who.name, {"dispatch": row.id, "engineer": row.engineer, "late": late})
    cases.audit(s, who, "arrival", at, case.site, case.id, dispatch=row.id)
    return row


def arrival_status(d: Dispatch, now: datetime) -> dict[str, Any]:
    """The arrival against its deadline: on time, late, on the way (overdue or not)."""
    took = (d.arrived_at - d.dispatched_at) if d.arrived_at else None
    if d.arrived_at is not None:
        state = "late" if d.arrive_by and d.arrived_at > d.arrive_by else "on_time"
    else:
        state = "overdue" if d.arrive_by and now > d.arrive_by else "on_the_way"
    label = {
        "on_time": Text("按时到达", "Arrived on time"),
        "late": Text("超时到达", "Arrived late"),
        "overdue": Text("已超过到达时限", "Past the arrival deadline"),
        "on_the_way": Text("在途", "On the way"),
    }[state]
    return {
        "state": state,
        "label": {"zh": label.zh, "en": label.en},
        "minutes": round(took.total_seconds() / 60, 1) if took else None,
    }


def dispatch_json(d: Dispatch, now: datetime) -> dict[str, Any]:
    return {
        "id": d.id,
        "case_id": d.case_id,
        "engineer": d.engineer,
        "mode": d.mode,
        "advice": {"zh": d.advice_zh, "en": d.advice_en},
        "dispatched_at": d.dispatched_at.isoformat(),
        "dispatched_by": d.dispatched_by,
        "arrive_by": d.arrive_by.isoformat() if d.arrive_by else None,
        "arrived_at": d.arrived_at.isoformat() if d.arrived_at else None,
        "arrival": arrival_status(d, now),
    }


def advice_json(adv: Advice) -> dict[str, Any]:
    return {
        "inside_city": adv.inside_city,
        "whole_hospital": adv.whole_hospital,
        "mode": adv.mode,
        "go_now": adv.go_now,
        "arrive_within_h": adv.arrive_within.total_seconds() / 3600 if adv.arrive_within else None,
        "text": {"zh": adv.text.zh, "en": adv.text.en},
    }
