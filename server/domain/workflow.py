"""Plan instances and their steps: activation (2.5), the trigger's checklist (2.6), back-fill (2.7).

The plan's wording is data (plan_text.toml beside this file, overridable per contract), so a vendor
adapts it without touching code; the step keys and roles of 2.5 come from hisguard.plan.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hisguard.plan import ACTIVATION_STEPS, Text, Trigger
from hisguard.server.storage.models import Case, PlanInstance, PlanStep

DEFAULT_PLAN = Path(__file__).with_name("plan_text.toml")
STEP_ROLES = ("engineer", "service_manager", "hospital_contact")
# Who may do a step of a role: a service manager (a deputy of the response team, 2.2) may also do an
# engineer's step; nobody else may do the manager's.
MAY_DO: dict[str, frozenset[str]] = {
    "engineer": frozenset({"engineer", "service_manager"}),
    "service_manager": frozenset({"service_manager"}),
    "hospital_contact": frozenset({"hospital_contact"}),
}


class PlanTextError(ValueError):
    """A plan text file that cannot be used, with the file and the entry named."""


class StepError(Exception):
    """A step that cannot be done (unknown, already done, wrong role)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StepText:
    key: str
    role: str
    text: Text


@dataclass(frozen=True)
class PlanText:
    source: str
    activation: tuple[StepText, ...]
    triggers: dict[int, tuple[StepText, ...]]
    backfill_role: str
    backfill: Text

    def checklist(self, trigger: int) -> tuple[StepText, ...]:
        return self.triggers.get(trigger, ())


def _step(entry: Any, where: str) -> StepText:
    if not isinstance(entry, dict):
        raise PlanTextError(f"{where}: expected a table with key, role, zh, en")
    missing = [k for k in ("key", "role", "zh", "en") if not isinstance(entry.get(k), str) or not entry.get(k)]
    if missing:
        raise PlanTextError(f"{where}: missing or empty {', '.join(missing)}")
    if entry["role"] not in STEP_ROLES:
        raise PlanTextError(f"{where}: role {entry['role']!r} is not one of {', '.join(STEP_ROLES)}")
    return StepText(entry["key"], entry["role"], Text(entry["zh"], entry["en"]))


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PlanTextError(f"{path}: {exc}") from None


def _merge(base: PlanText, data: dict[str, Any], path: Path) -> PlanText:
    activation = list(base.activation)
    for key, entry in (data.get("activation") or {}).items():
        idx = next((i for i, s in enumerate(activation) if s.key == key), None)
        if idx is None:
            raise PlanTextError(f"{path}: activation.{key}: not a step of 2.5 ({[s.key for s in activation]})")
        if not isinstance(entry, dict) or not entry.get("zh") or not entry.get("en"):
            raise PlanTextError(f"{path}: activation.{key}: needs zh and en")
        activation[idx] = StepText(key, activation[idx].role, Text(entry["zh"], entry["en"]))
    triggers = dict(base.triggers)
    for name, entries in (data.get("trigger") or {}).items():
        if not str(name).isdigit() or int(name) not in {int(t) for t in Trigger}:
            raise PlanTextError(f"{path}: trigger.{name}: not a trigger 1-6")
        if not isinstance(entries, list):
            raise PlanTextError(f"{path}: trigger.{name}: expected [[trigger.{name}]] entries")
        steps = tuple(_step(e, f"{path}: trigger.{name}[{i}]") for i, e in enumerate(entries))
        if len({s.key for s in steps}) != len(steps):
            raise PlanTextError(f"{path}: trigger.{name}: step keys repeat")
        triggers[int(name)] = steps
    backfill, backfill_role = base.backfill, base.backfill_role
    if "backfill" in data:
        b = data["backfill"]
        if not isinstance(b, dict) or not b.get("zh") or not b.get("en"):
            raise PlanTextError(f"{path}: backfill: needs zh and en (with {{department}})")
        backfill = Text(b["zh"], b["en"])
        backfill_role = b.get("role", backfill_role)
        if backfill_role not in STEP_ROLES:
            raise PlanTextError(f"{path}: backfill.role {backfill_role!r} is not one of {', '.join(STEP_ROLES)}")
    source = str(data.get("source") or path.name)
    return PlanText(source, tuple(activation), triggers, backfill_role, backfill)


@functools.lru_cache(maxsize=64)
def load_plan_text(override: Path | None = None) -> PlanText:
    """The default plan text, adapted by a contract's file if given (cached: files are read once)."""
    base = PlanText(
        "hisguard.plan",
        tuple(StepText(s.key, s.role, s.text) for s in ACTIVATION_STEPS),
        {},
        "hospital_contact",
        Text("{department}", "{department}"),
    )
    plan = _merge(base, _read(DEFAULT_PLAN), DEFAULT_PLAN)
    if override is not None:
        plan = _merge(plan, _read(Path(override)), Path(override))
    return plan


def plan_of(s: Session, case_id: int) -> PlanInstance | None:
    return s.scalar(_PLAN_OF, {"case_id": case_id})


_PLAN_OF = select(PlanInstance).where(PlanInstance.case_id == bindparam("case_id"))


def steps_of(s: Session, case_id: int) -> list[PlanStep]:
    return list(s.scalars(select(PlanStep).where(PlanStep.case_id == case_id).order_by(PlanStep.position)))


def _add_steps(s: Session, case: Case, phase: str, steps: list[StepText], start: int) -> None:
    for i, st in enumerate(steps):
        s.add(
            PlanStep(
                case_id=case.id,
                phase=phase,
                key=st.key,
                position=start + i,
                role=st.role,
                text_zh=st.text.zh,
                text_en=st.text.en,
            )
        )


def start_plan(s: Session, case: Case, plan: PlanText, at: datetime, by: str, reason: str) -> PlanInstance | None:
    """Start the plan for a case once: 2.5's steps, then the trigger's checklist. None if already started."""
    if plan_of(s, case.id) is not None:
        return None
    inst = PlanInstance(
        case_id=case.id,
        trigger=case.trigger,
        plan_source=plan.source[:200],
        activated_at=at,
        activated_by=by,
        reason=reason,
        status="active",
    )
    s.add(inst)
    # Trigger steps share keys across triggers ("confirm"); prefix them so keys stay unique per case.
    checklist = [StepText(f"t{case.trigger}.{st.key}", st.role, st.text) for st in plan.checklist(case.trigger)]
    _add_steps(s, case, "activation", list(plan.activation), 0)
    _add_steps(s, case, "trigger", checklist, 100)
    s.flush()
    return inst


def add_backfill(s: Session, case: Case, plan: PlanText, departments: list[Text]) -> list[PlanStep]:
    """One back-fill step per department that worked by hand (idempotent)."""
    have = {st.key for st in steps_of(s, case.id)}
    added = []
    for i, dept in enumerate(departments):
        key = f"backfill.{dept.en}"
        if key in have:
            continue
        text = Text(plan.backfill.zh.format(department=dept.zh), plan.backfill.en.format(department=dept.en))
        step = PlanStep(
            case_id=case.id,
            phase="backfill",
            key=key[:200],
            position=200 + i,
            role=plan.backfill_role,
            text_zh=text.zh,
            text_en=text.en,
        )
        s.add(step)
        added.append(step)
    s.flush()
    return added


def do_step(s: Session, case: Case, key: str, actor: str, role: str, at: datetime, note: str | None) -> PlanStep:
    """Record a step as done by a person whose role may do it."""
    step = s.scalar(select(PlanStep).where(PlanStep.case_id == case.id, PlanStep.key == key))
    if step is None:
        raise StepError(f"case {case.id} has no step {key!r}", 404)
    if role not in MAY_DO.get(step.role, frozenset()):
        raise StepError(f"step {key!r} is done by a {step.role}, not by a {role}", 403)
    if step.done_at is not None:
        raise StepError(f"step {key!r} was already done by {step.done_by} at {step.done_at.isoformat()}")
    step.done_at, step.done_by, step.note = at, actor, note
    inst = plan_of(s, case.id)
    if inst is not None and inst.status == "active":
        s.flush()
        if all(st.done_at is not None for st in steps_of(s, case.id) if st.phase != "backfill"):
            inst.status, inst.completed_at = "completed", at
    return step


def step_json(st: PlanStep) -> dict[str, Any]:
    return {
        "key": st.key,
        "phase": st.phase,
        "role": st.role,
        "text": {"zh": st.text_zh, "en": st.text_en},
        "done_at": st.done_at.isoformat() if st.done_at else None,
        "done_by": st.done_by,
        "note": st.note,
    }


def plan_json(inst: PlanInstance | None) -> dict[str, Any] | None:
    if inst is None:
        return None
    return {
        "trigger": inst.trigger,
        "source": inst.plan_source,
        "activated_at": inst.activated_at.isoformat(),
        "activated_by": inst.activated_by,
        "reason": inst.reason,
        "status": inst.status,
        "completed_at": inst.completed_at.isoformat() if inst.completed_at else None,
    }
