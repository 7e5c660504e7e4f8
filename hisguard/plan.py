"""The emergency plan's vocabulary: triggers, service levels, scopes, continuity phases, activation steps.

Everything that names a part of the plan imports it from here, so that the agent, the
server, notifications and web pages all speak the same words (中文 and English).
Section numbers refer to the vendor's plan (see PLAN.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Text:
    """A phrase a person reads, in both languages."""

    zh: str
    en: str

    def get(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh

    def format(self, **values: object) -> Text:
        return Text(self.zh.format(**values), self.en.format(**values))


class Trigger(enum.IntEnum):
    """The six situations of 2.4 that start the emergency plan."""

    HARDWARE = 1
    SOFTWARE = 2
    DATABASE = 3
    DATA_LOSS = 4
    VIRUS = 5
    FORCE_MAJEURE = 6

    @property
    def text(self) -> Text:
        return _TRIGGER_TEXT[self]

    @property
    def short(self) -> Text:
        return _TRIGGER_SHORT[self]


_TRIGGER_TEXT = {
    Trigger.HARDWARE: Text(
        "主干网络、交换设备或主服务器硬件故障，导致部门级或全院瘫痪",
        "Backbone network, switching equipment or main server hardware failure",
    ),
    Trigger.SOFTWARE: Text(
        "服务器、交换设备操作系统或管理系统软件故障，导致硬件不能运行或运行不稳定",
        "Server or switch operating system / management software failure",
    ),
    Trigger.DATABASE: Text(
        "数据库被置疑，库结构、表结构被误删除或无故丢失",
        "Database suspect, or database/table structure deleted or lost",
    ),
    Trigger.DATA_LOSS: Text(
        "子系统大面积数据丢失或数据异常",
        "Large-scale data loss or data anomalies in a subsystem",
    ),
    Trigger.VIRUS: Text(
        "大面积感染病毒或病毒集中爆发，程序被感染",
        "Large-scale virus infection or outbreak",
    ),
    Trigger.FORCE_MAJEURE: Text(
        "硬件设备遭受不可抗力破坏（雷雨、火灾等自然灾害）",
        "Core hardware damaged by force majeure (lightning, fire, natural disaster)",
    ),
}

_TRIGGER_SHORT = {
    Trigger.HARDWARE: Text("硬件/网络故障", "Hardware/network failure"),
    Trigger.SOFTWARE: Text("系统软件故障", "OS/software failure"),
    Trigger.DATABASE: Text("数据库置疑/结构丢失", "Database suspect/structure lost"),
    Trigger.DATA_LOSS: Text("数据丢失/异常", "Data loss/anomaly"),
    Trigger.VIRUS: Text("病毒爆发", "Virus outbreak"),
    Trigger.FORCE_MAJEURE: Text("不可抗力", "Force majeure"),
}


class Severity(str, enum.Enum):
    """The three service levels of 1.4; each fixes the response deadline."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"

    @property
    def text(self) -> Text:
        return _SEVERITY_TEXT[self]

    @property
    def response_within(self) -> timedelta:
        return _RESPONSE_WITHIN[self]

    @property
    def rank(self) -> int:
        """Higher is more severe; used to compare and to never lower silently."""
        return _SEVERITY_RANK[self]

    def raised_to(self, other: Severity) -> Severity:
        return other if other.rank > self.rank else self


_SEVERITY_TEXT = {
    Severity.CRITICAL: Text("全面加急", "Critical"),
    Severity.URGENT: Text("加急", "Urgent"),
    Severity.ROUTINE: Text("常规", "Routine"),
}
_RESPONSE_WITHIN = {
    Severity.CRITICAL: timedelta(minutes=10),
    Severity.URGENT: timedelta(minutes=30),
    Severity.ROUTINE: timedelta(minutes=60),
}
_SEVERITY_RANK = {Severity.ROUTINE: 1, Severity.URGENT: 2, Severity.CRITICAL: 3}


class Scope(str, enum.Enum):
    """How much of the hospital a fault paralyses (部门级 or 全院), or a single host."""

    HOST = "host"
    DEPARTMENT = "department"
    HOSPITAL = "hospital"

    @property
    def text(self) -> Text:
        return _SCOPE_TEXT[self]

    @property
    def suggested_severity(self) -> Severity:
        """Whole hospital → critical, a department → urgent, no business impact → routine (1.4)."""
        return _SCOPE_SEVERITY[self]


_SCOPE_TEXT = {
    Scope.HOST: Text("单机", "Single host"),
    Scope.DEPARTMENT: Text("部门级", "Department"),
    Scope.HOSPITAL: Text("全院", "Whole hospital"),
}
_SCOPE_SEVERITY = {
    Scope.HOST: Severity.ROUTINE,
    Scope.DEPARTMENT: Severity.URGENT,
    Scope.HOSPITAL: Severity.CRITICAL,
}


class ContinuityPhase(enum.IntEnum):
    """Business continuity (2.7): when each group of functions switches to manual work."""

    AFTER_15_MIN = 1
    AFTER_3_HOURS = 2

    @property
    def after(self) -> timedelta:
        return timedelta(minutes=15) if self is ContinuityPhase.AFTER_15_MIN else timedelta(hours=3)

    @property
    def text(self) -> Text:
        if self is ContinuityPhase.AFTER_15_MIN:
            return Text("15 分钟未恢复：转手工操作", "Not recovered in 15 minutes: switch to manual work")
        return Text("3 小时未恢复：转手工操作", "Not recovered in 3 hours: switch to manual work")


class BusinessFunction(str, enum.Enum):
    """The hospital business functions the plan names in 2.7."""

    OUTPATIENT_REGISTRATION = "outpatient_registration"
    INPATIENT_ADMISSION = "inpatient_admission"
    OUTPATIENT_BILLING = "outpatient_billing"
    EMERGENCY_BILLING = "emergency_billing"
    OUTPATIENT_PHARMACY = "outpatient_pharmacy"
    INPATIENT_PHARMACY = "inpatient_pharmacy"
    NURSE_STATION = "nurse_station"
    OPERATING_ROOM = "operating_room"
    MEDICAL_EXAMS = "medical_exams"

    @property
    def text(self) -> Text:
        return _FUNCTION_TEXT[self]

    @property
    def phase(self) -> ContinuityPhase:
        return _FUNCTION_PHASE[self]


_FUNCTION_TEXT = {
    BusinessFunction.OUTPATIENT_REGISTRATION: Text("门诊挂号", "Outpatient registration"),
    BusinessFunction.INPATIENT_ADMISSION: Text("住院登记", "Inpatient admission"),
    BusinessFunction.OUTPATIENT_BILLING: Text("门诊收费", "Outpatient billing"),
    BusinessFunction.EMERGENCY_BILLING: Text("急诊收费", "Emergency billing"),
    BusinessFunction.OUTPATIENT_PHARMACY: Text("门诊药房", "Outpatient pharmacy"),
    BusinessFunction.INPATIENT_PHARMACY: Text("住院药房", "Inpatient pharmacy"),
    BusinessFunction.NURSE_STATION: Text("护士站", "Nurse stations"),
    BusinessFunction.OPERATING_ROOM: Text("手术室", "Operating rooms"),
    BusinessFunction.MEDICAL_EXAMS: Text("医技检查", "Medical technology / examinations"),
}
_FUNCTION_PHASE = {
    f: (
        ContinuityPhase.AFTER_3_HOURS
        if f in (BusinessFunction.NURSE_STATION, BusinessFunction.OPERATING_ROOM, BusinessFunction.MEDICAL_EXAMS)
        else ContinuityPhase.AFTER_15_MIN
    )
    for f in BusinessFunction
}

CONTINUITY_PHASES: dict[ContinuityPhase, tuple[BusinessFunction, ...]] = {
    phase: tuple(f for f in BusinessFunction if f.phase is phase) for phase in ContinuityPhase
}

_FUNCTION_BY_NAME: dict[str, BusinessFunction] = {}
for _f in BusinessFunction:
    _FUNCTION_BY_NAME[_f.value] = _f
    _FUNCTION_BY_NAME[_f.text.zh] = _f
    _FUNCTION_BY_NAME[_f.text.en.lower()] = _f


def business_function(name: str) -> BusinessFunction | None:
    """The plan's business function a department name stands for (门诊挂号, outpatient_billing…), if any."""
    return _FUNCTION_BY_NAME.get(name.strip()) or _FUNCTION_BY_NAME.get(name.strip().lower())


def functions_of(departments: list[str] | tuple[str, ...]) -> list[BusinessFunction]:
    """Business functions named by a list of departments, in the plan's order, without repeats."""
    named = {business_function(d) for d in departments} - {None}
    return [f for f in BusinessFunction if f in named]


@dataclass(frozen=True)
class ActivationStep:
    """One step of starting the plan (2.5), with the role that performs it."""

    key: str
    role: str
    text: Text


# 2.5: the fixed procedure once a fault is reported.
ACTIVATION_STEPS: tuple[ActivationStep, ...] = (
    ActivationStep(
        "record",
        "engineer",
        Text(
            "记录故障描述，初步落实已经和可能产生的影响", "Record the description and the existing and possible impact"
        ),
    ),
    ActivationStep(
        "leadership_informed",
        "engineer",
        Text(
            "确认故障已告知院方领导，若未告知建议立即汇报",
            "Confirm hospital leadership has been told; if not, advise to tell them at once",
        ),
    ),
    ActivationStep(
        "activate",
        "service_manager",
        Text("服务部经理启动应急预案", "The service manager activates the emergency plan"),
    ),
    ActivationStep(
        "hospital_notified",
        "engineer",
        Text("向院方反馈预案启动情况", "Tell the hospital that the plan has started"),
    ),
    ActivationStep(
        "result_fed_back",
        "engineer",
        Text("故障处理完毕，反馈处理结果", "Fault handled: feed back the result"),
    ),
)

ROLES: dict[str, Text] = {
    "viewer": Text("院方信息科", "Hospital IT (viewer)"),
    "hospital_contact": Text("院方联系人", "Hospital contact"),
    "engineer": Text("服务工程师", "Service engineer"),
    "service_manager": Text("服务部经理", "Service manager"),
    "admin": Text("管理员", "Administrator"),
}


def scope_for(hospital_critical: bool, departments: list[str] | tuple[str, ...]) -> Scope:
    """Whole hospital if the failed thing is hospital-critical, else its departments, else the host alone."""
    if hospital_critical:
        return Scope.HOSPITAL
    return Scope.DEPARTMENT if departments else Scope.HOST


def severity_for(scope: Scope, floor: Severity | None = None, cap: Severity | None = None) -> Severity:
    """Suggested severity: from the scope (1.4), raised to `floor` and limited to `cap` if given."""
    severity = scope.suggested_severity
    if floor is not None:
        severity = severity.raised_to(floor)
    if cap is not None and severity.rank > cap.rank:
        severity = cap
    return severity
