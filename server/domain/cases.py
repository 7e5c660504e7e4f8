"""Cases: one per fault, grouping its incidents; activation of the plan; what each clock does when due.

Grouping: an incident joins the open case that already holds an incident with its key; an incident
named in an open incident's evidence (a host behind a failed switch, a host of an outbreak) joins
that incident's case; an incident that names others (a parent, an outbreak) gathers their cases
into one. Severity only rises, unless a person changes it with a reason (and even then only up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from hisguard.plan import (
    BusinessFunction,
    ContinuityPhase,
    Scope,
    Severity,
    Text,
    Trigger,
    business_function,
    functions_of,
)
from hisguard.server.domain import clocks, incidents, workflow
from hisguard.server.domain.tokens import Principal
from hisguard.server.notify import outbox
from hisguard.server.notify.outbox import Message
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import AuditEntry, Case, CaseClock, CaseEvent, CaseIncident, Incident

log = logging.getLogger("hisguard.server.cases")
_settings = ServerSettings()
_SCOPE_RANK = {Scope.HOST.value: 1, Scope.DEPARTMENT.value: 2, Scope.HOSPITAL.value: 3}
# Evidence fields through which an incident names the incidents it stands for: the agent's topology
# fold ("folded": [{check, subject, …}]), the server's outbreak correlation ("incidents": [{id, key, …}]).
GROUP_FIELDS = ("children", "child_keys", "folded", "incidents", "incident_keys", "members", "hosts")
REPLY_WITHIN_H = 4  # 1.2: written reply within 4 hours to a reported request


class CaseError(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def configure(settings: ServerSettings) -> None:
    """Sites, contacts and policy the plan engine works with (set by the app at start)."""
    global _settings
    _settings = settings


def settings() -> ServerSettings:
    return _settings


# --- grouping -------------------------------------------------------------------------------------


def group_refs(evidence: dict[str, Any]) -> tuple[set[str], set[int]]:
    """Names (keys or host names) and incident ids an incident's evidence groups."""
    names: set[str] = set()
    ids: set[int] = set()
    for name in GROUP_FIELDS:
        value = evidence.get(name) if isinstance(evidence, dict) else None
        if not isinstance(value, list):
            continue
        for item in value:
            if isinstance(item, str):
                names.add(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                ids.add(item)
            elif isinstance(item, dict):
                for k in ("key", "host", "machine", "device", "name"):
                    if isinstance(item.get(k), str):
                        names.add(item[k])
                if isinstance(item.get("check"), str) and item.get("subject") is not None:
                    names.add(f"{item['check']}/{item['subject']}")  # the agent's folded condition
                if isinstance(item.get("id"), int):
                    ids.add(item["id"])
                if isinstance(item.get("incident_id"), int):
                    ids.add(item["incident_id"])
    return names, ids


def _names(inc: Incident | Row[Any]) -> set[str]:
    """What a grouping incident's evidence may call this incident by."""
    names = {inc.key, inc.host}
    ev = inc.evidence if isinstance(inc.evidence, dict) else {}
    if isinstance(ev.get("check"), str) and ev.get("subject") is not None:
        names.add(f"{ev['check']}/{ev['subject']}")
    return names


# Statements run per incident on ingest are built once (building them cost more than running them).
_OPEN_LINKED = (
    select(Incident.id, Incident.key, Incident.host, Incident.evidence, Incident.status, CaseIncident.case_id)
    .join(CaseIncident, CaseIncident.incident_id == Incident.id)
    .join(Case, Case.id == CaseIncident.case_id)
    .where(Incident.site == bindparam("site"), Case.status == "open")
)
_INCIDENTS_OF = (
    select(Incident)
    .join(CaseIncident, CaseIncident.incident_id == Incident.id)
    .where(CaseIncident.case_id == bindparam("case_id"))
    .order_by(Incident.opened_at, Incident.id)
)
_UNLINKED_OPEN = (
    select(Incident.site, Incident.id)
    .outerjoin(CaseIncident, CaseIncident.incident_id == Incident.id)
    .where(
        Incident.site.in_(bindparam("sites", expanding=True)),
        Incident.status == "open",
        CaseIncident.case_id.is_(None),
    )
    .order_by(Incident.id)
)


def _open_linked(s: Session, site: str) -> list[Row[Any]]:
    """The site's incidents in open cases, as the columns grouping reads (no entities: this runs per new incident)."""
    return list(s.execute(_OPEN_LINKED, {"site": site}))


def case_of(s: Session, incident_id: int) -> Case | None:
    if incident_id in s.info.get(incidents.UNLINKED, ()):
        return None
    link = s.get(CaseIncident, incident_id)
    return s.get(Case, link.case_id) if link else None


def incidents_of(s: Session, case_id: int) -> list[Incident]:
    return list(s.scalars(_INCIDENTS_OF, {"case_id": case_id}))


def unlinked_open(s: Session, sites: Iterable[str]) -> dict[str, list[int]]:
    """Open incidents of these sites not yet in a case (e.g. opened by a server-side correlation), by site."""
    out: dict[str, list[int]] = {}
    for site, incident_id in s.execute(_UNLINKED_OPEN, {"sites": list(sites)}):
        out.setdefault(site, []).append(incident_id)
    return out


def _new_case(s: Session, inc: Incident, at: datetime) -> Case:
    case = Case(
        site=inc.site,
        key=inc.key,
        source="agent",
        lead_incident_id=inc.id,
        trigger=inc.trigger,
        severity=inc.severity,
        scope=inc.scope,
        host=inc.host,
        departments=list(inc.departments),
        functions=list(inc.functions),
        title_zh=inc.title_zh,
        title_en=inc.title_en,
        status="open",
        opened_at=min(inc.opened_at, at),
        reported_at=at,
        escalation_tier=1,
        updated_at=at,
        drill=bool(inc.evidence.get("drill")) if isinstance(inc.evidence, dict) else False,
    )
    s.add(case)
    s.flush()
    s.info.setdefault(clocks.NEW_CASES, set()).add(case.id)
    event(s, case, "opened", at, None, {"incident": inc.id, "severity": case.severity})
    return case


def _link(s: Session, case: Case, inc: Incident, reason: str, at: datetime) -> None:
    fresh = s.info.get(incidents.UNLINKED, set())
    link = None if inc.id in fresh else s.get(CaseIncident, inc.id)
    fresh.discard(inc.id)
    if link is None:
        s.add(CaseIncident(incident_id=inc.id, case_id=case.id, linked_at=at, reason=reason))
    elif link.case_id != case.id:
        link.case_id, link.reason = case.id, reason
    else:
        return
    s.flush()
    if reason != "opened":
        event(s, case, "incident_linked", at, None, {"incident": inc.id, "key": inc.key, "reason": reason})


def _merge(s: Session, child: Case, into: Case, at: datetime) -> None:
    """Fold a case into the one that explains it; its clocks stop, its timeline stays."""
    for inc in incidents_of(s, child.id):
        _link(s, into, inc, "merged", at)
    child.status, child.merged_into, child.updated_at = "merged", into.id, at
    clocks.cancel(s, child.id)
    into.opened_at = min(into.opened_at, child.opened_at)
    into.reported_at = min(into.reported_at, child.reported_at)
    if child.acknowledged_at and not into.acknowledged_at:
        into.acknowledged_at, into.acknowledged_by = child.acknowledged_at, child.acknowledged_by
    into.severity = Severity(into.severity).raised_to(Severity(child.severity)).value
    event(s, child, "merged", at, None, {"into": into.id})
    event(s, into, "case_merged", at, None, {"case": child.id})


def _place(s: Session, inc: Incident, at: datetime) -> tuple[Case, bool]:
    """The case this open incident belongs to (found, joined or new); True if the case is new."""
    names, ids = group_refs(inc.evidence)
    names.discard(inc.key)
    ids.discard(inc.id)
    case = case_of(s, inc.id)
    created = False
    if case is not None and case.status == "merged" and case.merged_into:
        case = s.get(Case, case.merged_into)
    if case is None or case.status != "open":
        case = None
        # (A re-detection already in its open case skips this scan of the site's open cases.)
        linked = _open_linked(s, inc.site)
        # Same fault key already in an open case.
        same = [o.case_id for o in linked if o.key == inc.key and o.id != inc.id]
        # A failed parent or an outbreak whose evidence names this incident.
        own = _names(inc)
        parent = []
        for o in linked:
            if o.status == "open" and o.id != inc.id:
                their_names, their_ids = group_refs(o.evidence)
                if own & their_names or inc.id in their_ids:
                    parent.append(o.case_id)
        # Cases of the incidents this one names (it is their parent, or their outbreak).
        members = [o.case_id for o in linked if o.id != inc.id and (_names(o) & names or o.id in ids)]
        for cid, reason in ((same, "same_key"), (parent, "child"), (members, "grouped")):
            if cid:
                case = s.get(Case, min(cid))
                _link(s, case, inc, reason, at)
                break
        if case is None:
            case = _new_case(s, inc, at)
            _link(s, case, inc, "opened", at)
            created = True
    if names or ids:
        # This incident explains the others: it leads the case, and their cases fold into it.
        if case.lead_incident_id != inc.id:
            case.lead_incident_id, case.key, case.trigger = inc.id, inc.key, inc.trigger
            case.title_zh, case.title_en, case.host = inc.title_zh, inc.title_en, inc.host
            event(s, case, "lead_changed", at, None, {"incident": inc.id, "key": inc.key})
        others = {o.case_id for o in _open_linked(s, inc.site) if _names(o) & names or o.id in ids}
        for cid in sorted(others - {case.id}):
            other_case = s.get(Case, cid)
            if other_case is not None and other_case.status == "open":
                _merge(s, other_case, case, at)
    return case, created


def _absorb(case: Case, incs: Iterable[Incident]) -> None:
    """Severity, scope, departments and functions from the case's incidents: they only grow."""
    for inc in incs:
        case.severity = Severity(case.severity).raised_to(Severity(inc.severity)).value
        if _SCOPE_RANK.get(inc.scope, 0) > _SCOPE_RANK.get(case.scope, 0):
            case.scope = inc.scope
        case.departments = list(dict.fromkeys([*case.departments, *inc.departments]))
        case.functions = list(dict.fromkeys([*case.functions, *inc.functions]))


def affected_functions(case: Case) -> list[BusinessFunction]:
    """The business functions the case stops: named by its incidents or departments; all of them hospital-wide."""
    named = {BusinessFunction(f) for f in case.functions if f in BusinessFunction._value2member_map_}
    named |= set(functions_of(case.departments))
    if not named and case.scope == Scope.HOSPITAL.value:
        named = set(BusinessFunction)
    return [f for f in BusinessFunction if f in named]


# --- ingest hook ----------------------------------------------------------------------------------


def sync(s: Session, incident_ids: Iterable[int], at: datetime | None = None) -> list[int]:
    """Bring cases up to date with these incidents (opened, re-detected or resolved); return case ids."""
    at = at or clocks.now()
    touched: list[int] = []
    for iid in dict.fromkeys(incident_ids):
        inc = s.get(Incident, iid)
        if inc is None:
            continue
        if inc.status == "open":
            case, created = _place(s, inc, at)
            before = case.severity
            _absorb(case, [i for i in incidents_of(s, case.id) if i.status == "open"])
            case.updated_at = at
            _after_change(s, case, at, created, raised_from=None if created else before)
        else:
            case = case_of(s, inc.id)
            if case is None:
                # Opened and cleared before the server heard of it (delivered late): still a case, on record.
                case, created = _place(s, inc, at)
                _absorb(case, [inc])
                _after_change(s, case, at, created, raised_from=None)
            if case.status != "open":
                continue
            if all(i.status != "open" for i in incidents_of(s, case.id)):
                _recovered(s, case, at, None)
        touched.append(case.id)
    return list(dict.fromkeys(touched))


def should_activate(case: Case) -> bool:
    sev = Severity(case.severity)
    if sev is Severity.CRITICAL:
        return True
    return sev is Severity.URGENT and case.trigger in _settings.site(case.site).urgent_triggers


def _after_change(s: Session, case: Case, at: datetime, created: bool, raised_from: str | None) -> None:
    sev = Severity(case.severity)
    if case.status != "open":
        return
    if not case.acknowledged_at:
        clocks.schedule(s, case.id, "response:1", case.reported_at + sev.response_within)
    for phase in ContinuityPhase:
        if any(f.phase is phase for f in affected_functions(case)):
            clocks.schedule(s, case.id, f"continuity:{int(phase)}", case.opened_at + phase.after)
    activated = False
    if should_activate(case) and workflow.plan_of(s, case.id) is None:
        reason = f"automatic: {sev.value} case, trigger {case.trigger}"
        activated = _activate(s, case, at, "system", reason)
    if created and not activated:
        _notify(s, case, tier_audience(case, 1), "opened", at)
    elif raised_from is not None and Severity(raised_from).rank < sev.rank and not activated:
        _notify(s, case, tier_audience(case, case.escalation_tier), "severity_raised", at)


def plan_text_for(site: str) -> workflow.PlanText:
    """The contract's plan text for a site; if its file went bad since start, the vendor default (logged):
    a broken file must never stop the plan from starting."""
    try:
        return workflow.load_plan_text(_settings.site(site).plan_file)
    except workflow.PlanTextError:
        log.exception("plan text for site %s unusable; using the default", site)
        return workflow.load_plan_text(None)


def check_plan_texts(settings: ServerSettings) -> None:
    """Load every site's plan text once at start, so a bad contract file is reported before it is needed."""
    for conf in settings.sites.values():
        workflow.load_plan_text(conf.plan_file)


def _activate(s: Session, case: Case, at: datetime, by: str, reason: str) -> bool:
    plan = plan_text_for(case.site)
    inst = workflow.start_plan(s, case, plan, at, by, reason)
    if inst is None:
        return False
    event(s, case, "activated", at, None if by == "system" else by, {"reason": reason, "plan": plan.source})
    conf = _settings.site(case.site)
    _notify(s, case, [*tier_audience(case, 1), *conf.managers], "activated", at)
    _notify(s, case, conf.hospital, "plan_started_hospital", at)
    return True


def _recovered(s: Session, case: Case, at: datetime, by: str | None) -> None:
    case.status, case.resolved_at, case.updated_at = "resolved", at, at
    clocks.cancel(s, case.id, "response")
    clocks.cancel(s, case.id, "continuity")
    manual = _went_manual(s, case)
    departments = backfill_departments(case, manual)
    event(s, case, "resolved", at, by, {"backfill": [d.zh for d in departments]})
    if departments:
        plan = plan_text_for(case.site)
        workflow.add_backfill(s, case, plan, departments)
    conf = _settings.site(case.site)
    audience = [n for t in range(1, case.escalation_tier + 1) for n in tier_audience(case, t)]
    if workflow.plan_of(s, case.id) is not None or departments:
        audience += conf.hospital
    _notify(s, case, audience, "recovered", at, backfill=departments)


_CONTINUITY_EVENTS = select(CaseEvent).where(CaseEvent.case_id == bindparam("case_id"), CaseEvent.kind == "continuity")


def _went_manual(s: Session, case: Case) -> list[BusinessFunction]:
    """Functions a continuity advisory told to work by hand."""
    out: set[BusinessFunction] = set()
    for ev in s.scalars(_CONTINUITY_EVENTS, {"case_id": case.id}):
        out |= {BusinessFunction(f) for f in ev.detail.get("functions", [])}
    return [f for f in BusinessFunction if f in out]


def backfill_departments(case: Case, manual: list[BusinessFunction]) -> list[Text]:
    """One entry per department that worked by hand: its own name if the case names it, else the function's."""
    out: list[Text] = []
    covered: set[BusinessFunction] = set()
    for dept in case.departments:
        f = business_function(dept)
        if f in manual and f not in covered:
            out.append(Text(dept, f.text.en) if dept != f.text.en else Text(f.text.zh, dept))
            covered.add(f)
    out += [f.text for f in manual if f not in covered]
    return out


# --- clocks ---------------------------------------------------------------------------------------


def on_clock(s: Session, clock: CaseClock, at: datetime) -> None:
    """What a due clock does; called once per clock, in the transaction that marks it fired."""
    case = s.get(Case, clock.case_id)
    if case is None:
        return
    kind, _, arg = clock.name.partition(":")
    if kind == "response":
        if case.status != "open" or case.acknowledged_at is not None:
            return
        tier = int(arg or 1)
        tiers = _settings.site(case.site).tiers
        within = Severity(case.severity).response_within
        if tier < len(tiers):
            case.escalation_tier = max(case.escalation_tier, tier + 1)
            event(s, case, "escalated", at, None, {"tier": tier + 1, "contacts": tiers[tier]})
            _notify(s, case, tiers[tier], "escalated", at, tier=tier + 1, minutes=int(within.total_seconds() // 60))
            clocks.schedule(s, case.id, f"response:{tier + 1}", at + within)
        else:
            event(s, case, "escalation_exhausted", at, None, {"tier": tier})
            _notify(s, case, _settings.site(case.site).managers, "unanswered", at, tier=tier)
    elif kind == "continuity":
        if case.status != "open":
            return
        phase = ContinuityPhase(int(arg))
        functions = [f for f in affected_functions(case) if f.phase is phase]
        if not functions:
            return
        event(s, case, "continuity", at, None, {"phase": int(phase), "functions": [f.value for f in functions]})
        conf = _settings.site(case.site)
        audience = [*conf.hospital, *tier_audience(case, 1)]
        _notify(s, case, audience, "continuity", at, phase=phase, functions=functions)
    elif kind == "written_reply":
        if case.written_reply_at is not None:
            return
        event(s, case, "written_reply_overdue", at, None, {})
        _notify(s, case, [*tier_audience(case, 1), *_settings.site(case.site).managers], "written_reply_overdue", at)


def tier_audience(case: Case, tier: int) -> list[str]:
    tiers = _settings.site(case.site).tiers
    return list(tiers[tier - 1]) if 0 < tier <= len(tiers) else []


# --- people's actions -----------------------------------------------------------------------------


def audit(
    s: Session, who: Principal, action: str, at: datetime, site: str | None, case_id: int | None, **detail: Any
) -> None:
    s.add(AuditEntry(at=at, actor=who.name, role=who.role, action=action, site=site, case_id=case_id, detail=detail))


def event(s: Session, case: Case, kind: str, at: datetime, actor: str | None, detail: dict[str, Any]) -> None:
    s.add(CaseEvent(case_id=case.id, at=at, kind=kind, actor=actor, detail=detail))


def acknowledge(s: Session, case: Case, who: Principal, note: str | None, at: datetime) -> None:
    if case.acknowledged_at is not None:
        raise CaseError(
            f"case {case.id} was acknowledged by {case.acknowledged_by} at {case.acknowledged_at.isoformat()}"
        )
    case.acknowledged_at, case.acknowledged_by, case.updated_at = at, who.name, at
    clocks.cancel(s, case.id, "response")
    event(s, case, "acknowledged", at, who.name, {"note": note})
    audit(s, who, "acknowledge", at, case.site, case.id, note=note)


def raise_severity(s: Session, case: Case, who: Principal, severity: Severity, reason: str, at: datetime) -> None:
    current = Severity(case.severity)
    if severity.rank <= current.rank:
        raise CaseError(f"severity is {current.value}; it can only be raised (to a higher level), never lowered", 422)
    if not reason.strip():
        raise CaseError("raising the severity needs a reason", 422)
    case.severity, case.severity_reason, case.updated_at = severity.value, reason.strip(), at
    event(s, case, "severity_raised", at, who.name, {"from": current.value, "to": severity.value, "reason": reason})
    audit(s, who, "raise_severity", at, case.site, case.id, to=severity.value, reason=reason)
    _after_change(s, case, at, False, raised_from=current.value)


def activate(s: Session, case: Case, who: Principal, reason: str, at: datetime) -> None:
    if case.status != "open":
        raise CaseError(f"case {case.id} is {case.status}")
    if not _activate(s, case, at, who.name, reason or f"by {who.role} {who.name}"):
        raise CaseError(f"the plan is already active for case {case.id}")
    audit(s, who, "activate", at, case.site, case.id, reason=reason)


def do_step(s: Session, case: Case, who: Principal, key: str, note: str | None, at: datetime) -> None:
    try:
        step = workflow.do_step(s, case, key, who.name, who.role, at, note)
    except workflow.StepError as exc:
        raise CaseError(str(exc), exc.status) from None
    event(s, case, "step_done", at, who.name, {"step": step.key, "role": who.role, "note": note})
    audit(s, who, "step_done", at, case.site, case.id, step=key, note=note)


def report_request(
    s: Session, who: Principal, site: str, title: Text, description: str, severity: Severity, at: datetime
) -> Case:
    """A request reported by the hospital (phone, fax, e-mail): a case with the 4-hour written-reply clock."""
    case = Case(
        site=site,
        key=f"reported/{at.strftime('%Y%m%dT%H%M%S')}/{who.name}"[:400],
        source="reported",
        trigger=0,
        severity=severity.value,
        scope=Scope.HOST.value,
        departments=[],
        functions=[],
        title_zh=title.zh,
        title_en=title.en,
        description=description,
        status="open",
        opened_at=at,
        reported_at=at,
        escalation_tier=1,
        updated_at=at,
        drill=False,
    )
    s.add(case)
    s.flush()
    event(s, case, "reported", at, who.name, {"description": description})
    audit(s, who, "report_request", at, site, case.id, severity=severity.value)
    clocks.schedule(s, case.id, "written_reply", at + timedelta(hours=REPLY_WITHIN_H))
    clocks.schedule(s, case.id, "response:1", at + severity.response_within)
    _notify(s, case, tier_audience(case, 1), "reported", at)
    return case


def written_reply(s: Session, case: Case, who: Principal, text: str, at: datetime) -> None:
    if case.written_reply_at is not None:
        raise CaseError(f"case {case.id} already has its written reply")
    case.written_reply, case.written_reply_at, case.written_reply_by, case.updated_at = text, at, who.name, at
    clocks.cancel(s, case.id, "written_reply")
    event(s, case, "written_reply", at, who.name, {})
    audit(s, who, "written_reply", at, case.site, case.id)
    _notify(s, case, _settings.site(case.site).hospital, "written_reply", at, reply=text)


def resolve(s: Session, case: Case, who: Principal, note: str | None, at: datetime) -> None:
    if case.status != "open":
        raise CaseError(f"case {case.id} is {case.status}")
    still = [i.key for i in incidents_of(s, case.id) if i.status == "open"]
    if still:
        raise CaseError(f"incidents still open (the agent has not seen them recover): {still}")
    audit(s, who, "resolve", at, case.site, case.id, note=note)
    _recovered(s, case, at, who.name)


# --- messages -------------------------------------------------------------------------------------


def _site_name(site: str) -> Text:
    conf = _settings.site(site)
    return Text(conf.name_zh or site, conf.name_en or conf.name_zh or site)


def _header(case: Case) -> Text:
    sev = Severity(case.severity)
    scope = Scope(case.scope)
    site = _site_name(case.site)
    minutes = int(sev.response_within.total_seconds() // 60)
    trig = Trigger(case.trigger) if case.trigger in {int(t) for t in Trigger} else None
    trig_zh = f"{trig.short.zh}（预案触发条件第 {int(trig)} 项）" if trig else "院方报告"
    trig_en = f"{trig.short.en} (plan trigger {int(trig)})" if trig else "reported by the hospital"
    deps = "、".join(case.departments) or "—"
    return Text(
        f"医院：{site.zh}\n故障：{case.title_zh}\n类别：{trig_zh}\n级别：{sev.text.zh}（{minutes} 分钟内响应）\n"
        f"范围：{scope.text.zh}\n科室：{deps}\n编号：#{case.id}",
        f"Hospital: {site.en}\nFault: {case.title_en}\nKind: {trig_en}\n"
        f"Severity: {sev.text.en} (respond within {minutes} min)\nScope: {scope.text.en}\n"
        f"Departments: {', '.join(case.departments) or '—'}\nCase: #{case.id}",
    )


def message(case: Case, kind: str, **kw: Any) -> Message:
    sev = Severity(case.severity)
    site = _site_name(case.site)
    head = _header(case)
    link = f"\n{_settings.notify.console_url}{case.id}" if _settings.notify.console_url else ""
    tag = Text(f"【{sev.text.zh}】{site.zh}：{case.title_zh}", f"[{sev.text.en}] {site.en}: {case.title_en}")
    extra: dict[str, Any] = {}
    if kind == "opened":
        subject, lead = tag, Text("新故障，请确认响应。", "New fault: please acknowledge.")
    elif kind == "reported":
        subject = Text(f"【院方报告】{site.zh}：{case.title_zh}", f"[Reported] {site.en}: {case.title_en}")
        lead = Text(
            f"院方报告问题，须在 {REPLY_WITHIN_H} 小时内书面答复。\n{case.description or ''}",
            f"The hospital reported a problem: written reply due within {REPLY_WITHIN_H} hours.\n"
            f"{case.description or ''}",
        )
    elif kind == "activated":
        subject = Text(f"【应急预案已启动】{tag.zh}", f"[Emergency plan activated] {tag.en}")
        lead = Text(
            "应急预案已自动启动：请工程师记录故障并确认院方领导已知悉，服务部经理确认启动。",
            "The emergency plan started automatically: the engineer records the fault and confirms hospital "
            "leadership knows; the service manager confirms the activation.",
        )
    elif kind == "plan_started_hospital":
        subject = Text(f"【应急预案已启动】{site.zh}", f"[Emergency plan started] {site.en}")
        lead = Text(
            "我方已启动应急预案，工程师正在处理。请确认已向院领导汇报。",
            "We have started the emergency plan and engineers are on it. Please make sure hospital leadership "
            "has been told.",
        )
    elif kind == "severity_raised":
        subject = Text(f"【级别提升】{tag.zh}", f"[Severity raised] {tag.en}")
        lead = Text(
            f"级别已提升为{sev.text.zh}。{case.severity_reason or ''}",
            f"Severity raised to {sev.text.en}. {case.severity_reason or ''}",
        )
    elif kind == "escalated":
        subject = Text(f"【升级至第 {kw['tier']} 梯队】{tag.zh}", f"[Escalated to tier {kw['tier']}] {tag.en}")
        lead = Text(
            f"{kw['minutes']} 分钟内无人确认响应，已升级至第 {kw['tier']} 梯队。",
            f"Not acknowledged within {kw['minutes']} minutes: escalated to on-call tier {kw['tier']}.",
        )
    elif kind == "unanswered":
        subject = Text(f"【无人响应】{tag.zh}", f"[Unanswered] {tag.en}")
        lead = Text("所有值班梯队均未确认响应。", "No on-call tier has acknowledged this case.")
    elif kind == "continuity":
        phase: ContinuityPhase = kw["phase"]
        functions: list[BusinessFunction] = kw["functions"]
        extra = {"phase": int(phase), "functions": [f.value for f in functions]}
        subject = Text(
            f"【业务连续性】{site.zh}：请转手工操作", f"[Business continuity] {site.en}: switch to manual work"
        )
        lead = Text(
            f"{phase.text.zh}。以下业务请立即转为手工操作：" + "、".join(f.text.zh for f in functions),
            f"{phase.text.en}. These functions switch to manual work now: " + ", ".join(f.text.en for f in functions),
        )
    elif kind == "recovered":
        backfill: list[Text] = kw.get("backfill") or []
        extra = {"backfill": [d.zh for d in backfill]}
        subject = Text(f"【已恢复】{site.zh}：{case.title_zh}", f"[Recovered] {site.en}: {case.title_en}")
        if backfill:
            lead = Text(
                "故障已恢复。请以下科室在工程师指导下补录停机期间手工处理的业务：\n"
                + "\n".join(f"- {d.zh}" for d in backfill),
                "The fault is over. These departments back-fill what they did by hand, guided by the engineer:\n"
                + "\n".join(f"- {d.en}" for d in backfill),
            )
        else:
            lead = Text("故障已恢复。", "The fault is over.")
    elif kind == "written_reply_overdue":
        subject = Text(f"【书面答复超时】{tag.zh}", f"[Written reply overdue] {tag.en}")
        lead = Text(
            f"院方报告已超过 {REPLY_WITHIN_H} 小时未书面答复。", f"No written reply within {REPLY_WITHIN_H} hours."
        )
    elif kind == "written_reply":
        subject = Text(f"【书面答复】{site.zh}：{case.title_zh}", f"[Written reply] {site.en}: {case.title_en}")
        lead = Text(kw.get("reply", ""), kw.get("reply", ""))
    else:  # pragma: no cover - every kind above is named by the code that sends it
        raise ValueError(kind)
    if case.drill:  # 2.8: every message of a drill says so first, in both languages
        subject = Text(f"【演练】{subject.zh}", f"[DRILL] {subject.en}")
        lead = Text(f"【演练，非真实故障】{lead.zh}", f"[DRILL, not a real fault] {lead.en}")
    body = Text(f"{lead.zh}\n\n{head.zh}{link}", f"{lead.en}\n\n{head.en}{link}")
    data = {
        "case": {
            "id": case.id,
            "site": case.site,
            "trigger": case.trigger,
            "severity": case.severity,
            "scope": case.scope,
            "departments": case.departments,
            "functions": case.functions,
            "title": {"zh": case.title_zh, "en": case.title_en},
            "status": case.status,
            "drill": case.drill,
        },
        **extra,
    }
    return Message(kind, subject, body, data)


def _notify(s: Session, case: Case, audience: Iterable[str], kind: str, at: datetime, **kw: Any) -> None:
    audience = list(dict.fromkeys(audience))
    if not audience:
        return
    hosts = {i.host for i in incidents_of(s, case.id)} | ({case.host} if case.host else set())
    outbox.enqueue(s, _settings, case.site, case.id, audience, message(case, kind, **kw), at, hosts)


# --- views ----------------------------------------------------------------------------------------


def case_json(s: Session, case: Case, full: bool = False) -> dict[str, Any]:
    sev = Severity(case.severity)
    inst = workflow.plan_of(s, case.id)
    out: dict[str, Any] = {
        "id": case.id,
        "site": case.site,
        "key": case.key,
        "source": case.source,
        "trigger": case.trigger,
        "severity": case.severity,
        "severity_name": {"zh": sev.text.zh, "en": sev.text.en},
        "severity_reason": case.severity_reason,
        "respond_within_min": int(sev.response_within.total_seconds() // 60),
        "scope": case.scope,
        "host": case.host,
        "departments": case.departments,
        "functions": case.functions,
        "affected_functions": [f.value for f in affected_functions(case)],
        "title": {"zh": case.title_zh, "en": case.title_en},
        "description": case.description,
        "status": case.status,
        "merged_into": case.merged_into,
        "opened_at": case.opened_at.isoformat(),
        "reported_at": case.reported_at.isoformat(),
        "acknowledged_at": case.acknowledged_at.isoformat() if case.acknowledged_at else None,
        "acknowledged_by": case.acknowledged_by,
        "escalation_tier": case.escalation_tier,
        "resolved_at": case.resolved_at.isoformat() if case.resolved_at else None,
        "written_reply_at": case.written_reply_at.isoformat() if case.written_reply_at else None,
        "drill": case.drill,
        "plan": workflow.plan_json(inst),
    }
    if full:
        from hisguard.server.domain.incidents import as_json
        from hisguard.server.storage.models import Notification

        out["incidents"] = [as_json(i) for i in incidents_of(s, case.id)]
        out["steps"] = [workflow.step_json(st) for st in workflow.steps_of(s, case.id)]
        out["clocks"] = [
            {
                "name": c.name,
                "due_at": c.due_at.isoformat(),
                "status": c.status,
                "fired_at": c.fired_at.isoformat() if c.fired_at else None,
            }
            for c in s.scalars(select(CaseClock).where(CaseClock.case_id == case.id).order_by(CaseClock.due_at))
        ]
        out["events"] = [
            {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "detail": e.detail}
            for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id))
        ]
        out["notifications"] = [
            notification_json(n)
            for n in s.scalars(select(Notification).where(Notification.case_id == case.id).order_by(Notification.id))
        ]
    return out


def notification_json(n: Any) -> dict[str, Any]:
    return {
        "id": n.id,
        "case_id": n.case_id,
        "site": n.site,
        "event": n.event,
        "contact": n.contact,
        "channel": n.channel,
        "target": n.target,
        "subject": {"zh": n.subject_zh, "en": n.subject_en},
        "status": n.status,
        "attempts": n.attempts,
        "last_error": n.last_error,
        "created_at": n.created_at.isoformat(),
        "sent_at": n.sent_at.isoformat() if n.sent_at else None,
        "log": n.log,
    }
