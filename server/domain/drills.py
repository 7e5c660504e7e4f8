"""Drills and training (2.8): a simulated incident through the whole plan, its evaluation, the schedule.

A drill is a case marked `drill`: it runs the real workflow (activation, steps, clocks, notifications,
each message marked 演练/DRILL) and is left out of real statistics. Closing it evaluates how long each
step took against the plan's deadlines, which steps were skipped, and records the problems and the
improvements to the plan. Training is due every quarter, a drill every six months; the schedule counts
from the last one done (or from when it first saw the site) and reminds the managers once per due date.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hisguard.plan import (
    CONTINUITY_PHASES,
    ContinuityPhase,
    Scope,
    Severity,
    Text,
    Trigger,
    functions_of,
    severity_for,
)
from hisguard.server.domain import cases, clocks, incidents, workflow
from hisguard.server.domain.tokens import Principal
from hisguard.server.notify import outbox
from hisguard.server.notify.outbox import Message
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.db import Database
from hisguard.server.storage.drill_models import Dispatch, Drill, Exercise, ExerciseSchedule, ScheduleReminder
from hisguard.server.storage.models import Agent, Case, CaseEvent, Incident, Notification

log = logging.getLogger("hisguard.server.drills")
EVERY = {"training": timedelta(days=91), "drill": timedelta(days=182)}  # 2.8: quarterly, at least half-yearly
KIND_TEXT = {"training": Text("应急预案培训", "Emergency plan training"), "drill": Text("应急演练", "Emergency drill")}
SCHEDULE_CHECK_S = 300.0
DRILL_KEY = "drill/{where}/T{trigger}/{at:%Y%m%dT%H%M%S}"


class DrillError(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def drill_title(trigger: Trigger, scope: Scope) -> Text:
    return Text(
        f"模拟故障（{scope.text.zh}）：{trigger.short.zh}",
        f"Simulated fault ({scope.text.en.lower()}): {trigger.short.en}",
    )


# --- starting, adopting, closing ------------------------------------------------------------------


def start(
    s: Session,
    site: str,
    trigger: Trigger,
    who: str,
    at: datetime,
    scope: Scope = Scope.HOSPITAL,
    departments: list[str] | None = None,
) -> Drill:
    """Start a drill from the server (CLI or API): a synthetic incident and its case, through the real plan."""
    departments = list(departments or [])
    if scope is Scope.DEPARTMENT and not departments:
        raise DrillError("a department-level drill needs --department (which department is down)", 422)
    key = DRILL_KEY.format(where=site, trigger=int(trigger), at=at)
    title = drill_title(trigger, scope)
    fields = {
        "key": key,
        "host": f"drill:{site}"[:200],
        "trigger": int(trigger),
        "severity": severity_for(scope).value,
        "scope": scope.value,
        "department": departments[0] if departments else None,
        "departments": departments,
        "functions": [f.value for f in functions_of(departments)],
        "title_zh": title.zh,
        "title_en": title.en,
        "evidence": {"drill": True, "check": "drill", "started_by": who},
    }
    if incidents.find_open(s, site, key) is not None:
        raise DrillError(f"a drill of trigger {int(trigger)} at {site} started this very second is still open")
    inc = incidents.open_or_update(s, site, None, fields, at)
    case_ids = cases.sync(s, [inc.id], at)
    drill = Drill(
        site=site,
        trigger=int(trigger),
        scope=scope.value,
        source="server",
        started_by=who,
        started_at=at,
        case_id=case_ids[0] if case_ids else None,
        incident_key=key,
        status="running",
        problems=[],
        improvements=[],
    )
    s.add(drill)
    s.flush()
    return drill


def adopt(s: Session) -> list[Drill]:
    """Drills started by an agent (`hisguard-agent drill`) arrive as drill cases: give each its drill row."""
    have = select(Drill.case_id).where(Drill.case_id.is_not(None))
    new = []
    for case in s.scalars(select(Case).where(Case.drill.is_(True), Case.id.not_in(have)).order_by(Case.id)):
        if case.status == "merged":
            continue
        lead = s.get(Incident, case.lead_incident_id) if case.lead_incident_id else None
        who = str(lead.evidence.get("started_by") or lead.host) if lead and isinstance(lead.evidence, dict) else "agent"
        drill = Drill(
            site=case.site,
            trigger=case.trigger,
            scope=case.scope,
            source="agent",
            started_by=who[:200],
            started_at=case.reported_at,
            case_id=case.id,
            incident_key=case.key,
            status="running",
            problems=[],
            improvements=[],
        )
        s.add(drill)
        new.append(drill)
    s.flush()
    return new


def close(
    s: Session, drill: Drill, who: Principal, problems: list[str], improvements: list[str], at: datetime
) -> dict[str, Any]:
    """End the drill: the simulated fault recovers (if it has not), the case closes, the evaluation is kept."""
    if drill.status == "closed":
        raise DrillError(f"drill {drill.id} was closed by {drill.closed_by} at {drill.closed_at.isoformat()}")
    case = s.get(Case, drill.case_id) if drill.case_id else None
    if case is not None and case.status == "merged" and case.merged_into:
        case = s.get(Case, case.merged_into)
    if case is not None:
        # The synthetic incidents recover now unless the agent already reported them recovered.
        open_incs = [i for i in cases.incidents_of(s, case.id) if i.status == "open"]
        for inc in open_incs:
            incidents.resolve(s, inc.site, inc.key, at)
        if open_incs:
            cases.sync(s, [i.id for i in open_incs], at)
        elif case.status == "open":
            cases.resolve(s, case, who, "drill closed", at)
    drill.problems = [p.strip() for p in problems if p.strip()]
    drill.improvements = [p.strip() for p in improvements if p.strip()]
    drill.status, drill.closed_at, drill.closed_by = "closed", at, who.name
    drill.evaluation = evaluate(s, drill, at)
    s.add(
        Exercise(
            site=drill.site, kind="drill", at=at, topic=f"drill {drill.id}", recorded_by=who.name, drill_id=drill.id
        )
    )
    cases.audit(s, who, "drill_closed", at, drill.site, drill.case_id, drill=drill.id)
    return drill.evaluation


# --- evaluation -----------------------------------------------------------------------------------


def _mins(a: datetime | None, b: datetime | None) -> float | None:
    return round((b - a).total_seconds() / 60, 2) if a is not None and b is not None else None


def _judge(took: float | None, within: timedelta | None) -> bool | None:
    if took is None or within is None:
        return None
    return took <= within.total_seconds() / 60


def recovery_deadline(case: Case) -> timedelta | None:
    """Recover before the first business functions switch to manual work (2.7), if any are affected."""
    hit = set(cases.affected_functions(case))
    for phase in ContinuityPhase:
        if hit & set(CONTINUITY_PHASES[phase]):
            return phase.after
    return None


def evaluate(s: Session, drill: Drill, at: datetime) -> dict[str, Any]:
    """How the drill went: each step's time from the report against the plan's deadlines, what was skipped."""
    case = s.get(Case, drill.case_id) if drill.case_id else None
    if case is None:
        return {
            "case": None,
            "steps": [],
            "milestones": [],
            "skipped": [],
            "problems": list(drill.problems),
            "auto_problems": [{"zh": "演练没有形成案件", "en": "The drill produced no case"}],
            "improvements": list(drill.improvements),
        }
    sev = Severity(case.severity)
    t0 = case.reported_at
    respond = sev.response_within
    inst = workflow.plan_of(s, case.id)
    steps = []
    for st in workflow.steps_of(s, case.id):
        # Starting the plan (2.5) is part of responding: its steps are due within the service level's time.
        within = respond if st.phase == "activation" else None
        took = _mins(t0, st.done_at)
        steps.append(
            {
                "key": st.key,
                "phase": st.phase,
                "role": st.role,
                "text": {"zh": st.text_zh, "en": st.text_en},
                "done_at": st.done_at.isoformat() if st.done_at else None,
                "done_by": st.done_by,
                "minutes": took,
                "deadline_min": within.total_seconds() / 60 if within else None,
                "met": _judge(took, within) if st.done_at else (False if within else None),
            }
        )
    rec_within = recovery_deadline(case)
    ms: list[dict[str, Any]] = [
        {
            "name": "detected",
            "text": {"zh": "检测到故障", "en": "Fault detected"},
            "at": case.opened_at,
            "minutes": _mins(t0, case.opened_at),
            "deadline_min": None,
        },
        {
            "name": "reported",
            "text": {"zh": "服务器收到报告", "en": "Server received the report"},
            "at": t0,
            "minutes": 0.0,
            "deadline_min": None,
        },
        {
            "name": "acknowledged",
            "text": {"zh": "确认响应", "en": "Acknowledged"},
            "at": case.acknowledged_at,
            "minutes": _mins(t0, case.acknowledged_at),
            "deadline_min": respond.total_seconds() / 60,
        },
        {
            "name": "activated",
            "text": {"zh": "启动应急预案", "en": "Plan activated"},
            "at": inst.activated_at if inst else None,
            "minutes": _mins(t0, inst.activated_at if inst else None),
            "deadline_min": respond.total_seconds() / 60,
        },
        {
            "name": "recovered",
            "text": {"zh": "恢复", "en": "Recovered"},
            "at": case.resolved_at,
            "minutes": _mins(case.opened_at, case.resolved_at),
            "deadline_min": rec_within.total_seconds() / 60 if rec_within else None,
        },
    ]
    for d in s.scalars(select(Dispatch).where(Dispatch.case_id == case.id).order_by(Dispatch.id)):
        within = (d.arrive_by - d.dispatched_at) if d.arrive_by else None
        ms.append(
            {
                "name": "arrived",
                "text": {"zh": f"{d.engineer} 到达现场", "en": f"{d.engineer} on site"},
                "at": d.arrived_at,
                "minutes": _mins(d.dispatched_at, d.arrived_at),
                "deadline_min": within.total_seconds() / 60 if within else None,
            }
        )
    for m in ms:
        m["met"] = _judge(m["minutes"], timedelta(minutes=m["deadline_min"]) if m["deadline_min"] else None)
        if m["at"] is None and m["deadline_min"] is not None:
            m["met"] = False
        m["at"] = m["at"].isoformat() if m["at"] else None
    skipped = [st for st in steps if st["done_at"] is None]
    events = list(s.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)))
    notes = list(s.scalars(select(Notification).where(Notification.case_id == case.id)))
    auto: list[dict[str, str]] = []
    for m in ms:
        if m["met"] is False:
            auto.append(
                {
                    "zh": f"{m['text']['zh']}超过时限（{m['minutes']} / {m['deadline_min']:g} 分钟）"
                    if m["minutes"] is not None
                    else f"{m['text']['zh']}未完成",
                    "en": f"{m['text']['en']} missed its deadline ({m['minutes']} / {m['deadline_min']:g} min)"
                    if m["minutes"] is not None
                    else f"{m['text']['en']}: not done",
                }
            )
    for st in steps:
        if st["met"] is False and st["done_at"]:
            auto.append(
                {
                    "zh": f"步骤超时：{st['text']['zh']}（{st['minutes']} 分钟）",
                    "en": f"Step late: {st['text']['en']} ({st['minutes']} min)",
                }
            )
    for st in skipped:
        auto.append({"zh": f"步骤未做：{st['text']['zh']}", "en": f"Step skipped: {st['text']['en']}"})
    escalations = [e for e in events if e.kind in ("escalated", "escalation_exhausted")]
    if escalations:
        auto.append(
            {
                "zh": f"无人及时响应，升级 {len(escalations)} 次",
                "en": f"Nobody acknowledged in time: escalated {len(escalations)} time(s)",
            }
        )
    failed = [n for n in notes if n.status == "failed"]
    if failed:
        auto.append({"zh": f"{len(failed)} 条通知发送失败", "en": f"{len(failed)} notification(s) failed"})
    return {
        "case": case.id,
        "site": case.site,
        "trigger": case.trigger,
        "severity": case.severity,
        "scope": case.scope,
        "reported_at": t0.isoformat(),
        "evaluated_at": at.isoformat(),
        "milestones": ms,
        "steps": steps,
        "skipped": [st["key"] for st in skipped],
        "continuity_fired": [e.detail.get("phase") for e in events if e.kind == "continuity"],
        "escalations": len(escalations),
        "notifications": {
            "total": len(notes),
            "sent": sum(n.status == "sent" for n in notes),
            "failed": len(failed),
            "marked_drill": all(
                n.subject_zh.startswith("【演练】") and n.subject_en.startswith("[DRILL]") for n in notes
            ),
        },
        "auto_problems": auto,
        "problems": list(drill.problems),
        "improvements": list(drill.improvements),
    }


def drill_json(s: Session, drill: Drill, at: datetime) -> dict[str, Any]:
    trig = Trigger(drill.trigger)
    return {
        "id": drill.id,
        "site": drill.site,
        "trigger": drill.trigger,
        "trigger_name": {"zh": trig.short.zh, "en": trig.short.en},
        "scope": drill.scope,
        "source": drill.source,
        "started_by": drill.started_by,
        "started_at": drill.started_at.isoformat(),
        "case_id": drill.case_id,
        "status": drill.status,
        "closed_at": drill.closed_at.isoformat() if drill.closed_at else None,
        "closed_by": drill.closed_by,
        "problems": drill.problems,
        "improvements": drill.improvements,
        # While running, the evaluation so far; once closed, the one kept at closing.
        "evaluation": drill.evaluation if drill.status == "closed" else evaluate(s, drill, at),
    }


# --- training and the schedule --------------------------------------------------------------------


def record_training(s: Session, who: Principal, site: str, at: datetime, topic: str) -> Exercise:
    row = Exercise(site=site, kind="training", at=at, topic=topic, recorded_by=who.name)
    s.add(row)
    s.flush()
    cases.audit(s, who, "training", at, site, None, topic=topic)
    return row


def known_sites(s: Session, settings: ServerSettings) -> list[str]:
    names = {n for n in settings.sites if n != "*"}
    names |= set(s.scalars(select(Agent.site).distinct()))
    names |= set(s.scalars(select(Case.site).distinct()))
    return sorted(names)


def _since(s: Session, site: str, at: datetime) -> ExerciseSchedule:
    row = s.get(ExerciseSchedule, site)
    if row is None:
        try:
            with s.begin_nested():  # a concurrent first check of the same site wins; its start stands
                row = ExerciseSchedule(site=site, since=at)
                s.add(row)
        except IntegrityError:
            row = s.get(ExerciseSchedule, site, populate_existing=True)
            assert row is not None
    return row


def schedule(s: Session, settings: ServerSettings, at: datetime, site: str | None = None) -> list[dict[str, Any]]:
    """For each site: the last training and drill, when the next is due, and whether it is overdue."""
    adopt(s)  # drills an agent started count (and are listed) from the first look at the schedule
    out = []
    for name in [site] if site else known_sites(s, settings):
        row = _since(s, name, at)
        entry: dict[str, Any] = {"site": name, "since": row.since.isoformat()}
        for kind, every in EVERY.items():
            last = s.scalar(select(func.max(Exercise.at)).where(Exercise.site == name, Exercise.kind == kind))
            due = (last or row.since) + every
            entry[kind] = {
                "last": last.isoformat() if last else None,
                "every_days": every.days,
                "due_at": due.isoformat(),
                "overdue": at > due,
                "overdue_days": max(0, (at - due).days) if at > due else 0,
                "text": {"zh": KIND_TEXT[kind].zh, "en": KIND_TEXT[kind].en},
            }
        out.append(entry)
    return out


def remind_overdue(s: Session, settings: ServerSettings, at: datetime) -> list[ScheduleReminder]:
    """Tell each overdue site's managers (and first on-call tier) once per due date."""
    sent = []
    for entry in schedule(s, settings, at):
        site = entry["site"]
        for kind in EVERY:
            info = entry[kind]
            if not info["overdue"]:
                continue
            due = datetime.fromisoformat(info["due_at"])
            exists = s.scalar(
                select(ScheduleReminder.id).where(
                    ScheduleReminder.site == site, ScheduleReminder.kind == kind, ScheduleReminder.due_at == due
                )
            )
            if exists is not None:
                continue
            row = ScheduleReminder(site=site, kind=kind, due_at=due, sent_at=at)
            try:
                with s.begin_nested():  # another check (replica, request) may have sent it this instant
                    s.add(row)
            except IntegrityError:
                continue
            conf = settings.site(site)
            audience = [*conf.managers, *(conf.tiers[0] if conf.tiers else [])]
            outbox.enqueue(s, settings, site, None, audience, reminder_message(settings, site, kind, info), at)
            sent.append(row)
    return sent


def reminder_message(settings: ServerSettings, site: str, kind: str, info: dict[str, Any]) -> Message:
    conf = settings.site(site)
    name = Text(conf.name_zh or site, conf.name_en or conf.name_zh or site)
    what = KIND_TEXT[kind]
    last_zh = info["last"][:10] if info["last"] else "尚无记录"
    last_en = info["last"][:10] if info["last"] else "none recorded"
    every = "每季度" if kind == "training" else "至少每半年"
    every_en = "every quarter" if kind == "training" else "at least every six months"
    subject = Text(f"【{what.zh}逾期】{name.zh}", f"[{what.en} overdue] {name.en}")
    body = Text(
        f"{name.zh}的{what.zh}已逾期 {info['overdue_days']} 天（预案要求{every}一次；上次：{last_zh}；"
        f"应于 {info['due_at'][:10]} 前完成）。请安排。",
        f"{what.en} at {name.en} is {info['overdue_days']} day(s) overdue (the plan asks for one {every_en}; "
        f"last: {last_en}; due by {info['due_at'][:10]}). Please schedule it.",
    )
    return Message(
        f"{kind}_overdue",
        subject,
        body,
        {"site": site, "kind": kind, **{k: info[k] for k in ("last", "due_at", "overdue_days")}},
    )


class ScheduleRunner:
    """Checks the schedule at start and every SCHEDULE_CHECK_S seconds, on the plan engine's clock."""

    def __init__(self, db: Database, settings: ServerSettings, interval: float = SCHEDULE_CHECK_S) -> None:
        self.db, self.settings, self.interval = db, settings, interval

    def tick(self) -> list[ScheduleReminder]:
        with self.db.session() as s:
            adopt(s)
            return remind_overdue(s, self.settings, clocks.now())

    async def run(self) -> None:
        while True:
            try:
                sent = await asyncio.to_thread(self.tick)
                if sent:
                    log.warning("training/drill overdue: reminded %s", [(r.site, r.kind) for r in sent])
            except Exception:
                log.exception("schedule check failed")
            await asyncio.sleep(self.interval)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan (after its migrations): the schedule check."""
    runner = ScheduleRunner(app.state.db, app.state.settings)
    app.state.schedule_runner = runner
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def cli_start(settings: ServerSettings, site: str, trigger: int, scope: str, departments: list[str], by: str) -> int:
    """`hisguard-server drill start`: the drill is written to the database; the server sends its messages."""
    import sys

    cases.configure(settings)
    db = Database(settings.db_url)
    db.migrate()
    try:
        with db.session() as s:
            at = clocks.now()
            drill = start(s, site, Trigger(trigger), by, at, Scope(scope), departments)
            case = s.get(Case, drill.case_id) if drill.case_id else None
            plan = workflow.plan_of(s, drill.case_id) if drill.case_id else None
            queued = len(list(s.scalars(select(Notification.id).where(Notification.case_id == drill.case_id))))
            print(
                f"演练 / drill {drill.id}: site {site}, trigger {trigger}, case {drill.case_id}, "
                f"severity {case.severity if case else '-'}, plan {'activated' if plan else 'not activated'}, "
                f"{queued} notifications queued (marked 演练/DRILL)"
            )
    except DrillError as exc:
        print(f"drill start: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    return 0
