"""Post-incident review (2.10): the automatic timeline of a closed case, the investigation's fields, exports.

The timeline is built from the first-hand records (incidents, the case's events, plan steps, clocks,
notifications, dispatch and arrival), never typed from memory. Exports: Markdown and PDF; the PDF
embeds a CJK font found on the machine and refuses (with the reason) rather than print boxes (tofu).
"""

from __future__ import annotations

import functools
import io
import os
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hisguard.plan import BusinessFunction, Scope, Severity, Text, Trigger
from hisguard.server.domain import cases, dispatch, workflow
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.drill_models import Drill, Review
from hisguard.server.storage.models import Case, CaseClock, CaseEvent, Notification

FIELDS: dict[str, Text] = {
    "cause": Text("原因调查", "Cause"),
    "prevention": Text("对院方的预防建议", "Prevention proposal for the hospital"),
    "corrective_actions": Text("纠正措施", "Corrective actions"),
    "preventive_actions": Text("预防措施", "Preventive actions"),
    "accountability": Text("责任认定（迟报、处置不当等）", "Accountability (late reports, wrong handling)"),
}
# Where a CJK font usually is (Debian: fonts-noto-cjk, fonts-wqy-zenhei, fonts-wqy-microhei); HISGUARD_CJK_FONT first.
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
TZ_CN = timezone(timedelta(hours=8))  # times shown as the hospital reads them (China Standard Time)


class ReviewError(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class FontMissing(ReviewError):
    """No font that can draw the review's Chinese text: the PDF is refused, never printed as boxes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # detection | event | step | clock | notification | dispatch | arrival | recovery
    text: Text
    actor: str | None = None


# --- timeline -------------------------------------------------------------------------------------

_CLOCK = {
    "response": Text("响应时限到（第 {n} 梯队无人确认）", "Response deadline reached (tier {n} did not acknowledge)"),
    "continuity": Text("业务连续性时限到（第 {n} 阶段）", "Continuity deadline reached (phase {n})"),
    "written_reply": Text("书面答复时限到（4 小时）", "Written-reply deadline reached (4 hours)"),
}


def _event_text(e: CaseEvent) -> Text | None:
    d = e.detail or {}
    if e.kind == "opened":
        sev = Severity(d.get("severity", "routine"))
        return Text(f"立案，级别{sev.text.zh}", f"Case opened, severity {sev.text.en}")
    if e.kind == "activated":
        return Text(f"启动应急预案（{d.get('reason', '')}）", f"Emergency plan activated ({d.get('reason', '')})")
    if e.kind == "acknowledged":
        return Text("确认响应", "Acknowledged")
    if e.kind == "escalated":
        return Text(f"升级至第 {d.get('tier')} 梯队", f"Escalated to tier {d.get('tier')}")
    if e.kind == "escalation_exhausted":
        return Text("所有梯队均未响应", "No tier acknowledged")
    if e.kind == "continuity":
        names = [BusinessFunction(f).text for f in d.get("functions", []) if f in BusinessFunction._value2member_map_]
        return Text(
            f"第 {d.get('phase')} 阶段业务转手工：" + "、".join(t.zh for t in names),
            f"Phase {d.get('phase')} functions switch to manual work: " + ", ".join(t.en for t in names),
        )
    if e.kind == "severity_raised":
        return Text(
            f"级别提升：{d.get('from')} → {d.get('to')}（{d.get('reason')}）",
            f"Severity raised: {d.get('from')} → {d.get('to')} ({d.get('reason')})",
        )
    if e.kind == "resolved":
        back = "、".join(d.get("backfill") or []) or "无"
        return Text(
            f"案件恢复，补录科室：{back}", f"Case recovered; back-fill: {', '.join(d.get('backfill') or []) or 'none'}"
        )
    if e.kind == "incident_linked":
        return Text(f"并入相关事件 {d.get('key')}", f"Related incident joined: {d.get('key')}")
    if e.kind == "case_merged":
        return Text(f"合并案件 #{d.get('case')}", f"Case #{d.get('case')} merged in")
    if e.kind == "reported":
        return Text("院方报告", "Reported by the hospital")
    if e.kind == "written_reply":
        return Text("书面答复", "Written reply sent")
    if e.kind == "written_reply_overdue":
        return Text("书面答复超时", "Written reply overdue")
    if e.kind in ("step_done", "dispatched", "arrived", "lead_changed", "merged"):
        return None  # shown from their own records below
    return Text(e.kind, e.kind)


def timeline(s: Session, case: Case) -> list[Entry]:
    """Every recorded moment of the case, oldest first (ties keep the order things were recorded in)."""
    out: list[Entry] = []
    for inc in cases.incidents_of(s, case.id):
        out.append(
            Entry(
                inc.opened_at,
                "detection",
                Text(f"检测到：{inc.title_zh}（{inc.host}）", f"Detected: {inc.title_en} ({inc.host})"),
            )
        )
        if inc.resolved_at:
            out.append(
                Entry(
                    inc.resolved_at,
                    "recovery",
                    Text(f"检测恢复：{inc.title_zh}", f"Detected recovered: {inc.title_en}"),
                )
            )
    for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)):
        text = _event_text(e)
        if text is not None:
            out.append(Entry(e.at, "event", text, e.actor))
    for st in workflow.steps_of(s, case.id):
        if st.done_at:
            out.append(
                Entry(st.done_at, "step", Text(f"步骤完成：{st.text_zh}", f"Step done: {st.text_en}"), st.done_by)
            )
    for c in s.scalars(select(CaseClock).where(CaseClock.case_id == case.id).order_by(CaseClock.id)):
        if c.status == "fired" and c.fired_at:
            kind, _, n = c.name.partition(":")
            tmpl = _CLOCK.get(kind, Text(c.name, c.name))
            out.append(Entry(c.fired_at, "clock", tmpl.format(n=n)))
    for n in s.scalars(select(Notification).where(Notification.case_id == case.id).order_by(Notification.id)):
        status = {
            "sent": ("已送达", "delivered"),
            "failed": ("失败", "failed"),
            "suppressed": ("维护期未发", "held (maintenance)"),
        }
        zh, en = status.get(n.status, ("待发", "pending"))
        if n.sent_at:
            zh, en = f"{zh} {_t(n.sent_at)[11:]}", f"{en} {_t(n.sent_at)[11:]}"
        out.append(
            Entry(
                n.created_at,  # when the plan decided to tell; the delivery time follows in the text
                "notification",
                Text(
                    f"通知 {n.contact}（{n.channel}）：{n.subject_zh} — {zh}",
                    f"Notified {n.contact} ({n.channel}): {n.subject_en} — {en}",
                ),
            )
        )
    for d in dispatch.dispatches_of(s, case.id):
        by = f"，须于 {_t(d.arrive_by)} 前到达" if d.arrive_by else ""
        by_en = f", on site by {_t(d.arrive_by)}" if d.arrive_by else ""
        out.append(
            Entry(
                d.dispatched_at,
                "dispatch",
                Text(f"派 {d.engineer} 赴现场：{d.advice_zh}{by}", f"{d.engineer} sent on site: {d.advice_en}{by_en}"),
                d.dispatched_by,
            )
        )
        if d.arrived_at:
            st = dispatch.arrival_status(d, d.arrived_at)
            out.append(
                Entry(
                    d.arrived_at,
                    "arrival",
                    Text(
                        f"{d.engineer} 到达现场（{st['label']['zh']}）",
                        f"{d.engineer} arrived on site ({st['label']['en']})",
                    ),
                    d.arrival_recorded_by,
                )
            )
    # At the same instant, cause before effect: a detection (or recovery) before the case's reaction, a clock
    # before what it set off, notifications last; otherwise the order recorded.
    return sorted(out, key=lambda e: (e.at, _TIE.get(e.kind, 9)))


_TIE = {
    "detection": 0,
    "recovery": 1,
    "clock": 2,
    "event": 3,
    "step": 4,
    "dispatch": 5,
    "arrival": 6,
    "notification": 7,
}


def _t(at: datetime | None) -> str:
    return at.astimezone(TZ_CN).strftime("%Y-%m-%d %H:%M:%S") if at else "—"


# --- the investigation's fields -------------------------------------------------------------------


def review_of(s: Session, case_id: int) -> Review | None:
    return s.get(Review, case_id)


def save(s: Session, case: Case, who: Principal, values: dict[str, str], at: datetime) -> Review:
    if case.status == "open":
        raise ReviewError(f"case {case.id} is still open: the review follows its recovery")
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ReviewError(f"unknown review field(s) {sorted(unknown)}; known: {list(FIELDS)}", 422)
    row = s.get(Review, case.id)
    if row is None:
        row = Review(
            case_id=case.id,
            cause="",
            prevention="",
            corrective_actions="",
            preventive_actions="",
            accountability="",
            updated_at=at,
            updated_by=who.name,
        )
        s.add(row)
    for k, v in values.items():
        setattr(row, k, v)
    row.updated_at, row.updated_by = at, who.name
    cases.audit(s, who, "review", at, case.site, case.id, fields=sorted(values))
    return row


def review_json(s: Session, case: Case) -> dict[str, Any]:
    row = review_of(s, case.id)
    drill = s.scalar(select(Drill).where(Drill.case_id == case.id))
    return {
        "case": cases.case_json(s, case),
        "timeline": [
            {"at": e.at.isoformat(), "kind": e.kind, "text": {"zh": e.text.zh, "en": e.text.en}, "actor": e.actor}
            for e in timeline(s, case)
        ],
        "dispatches": [
            dispatch.dispatch_json(d, case.resolved_at or case.updated_at) for d in dispatch.dispatches_of(s, case.id)
        ],
        "fields": {k: getattr(row, k) if row else "" for k in FIELDS},
        "updated_at": row.updated_at.isoformat() if row else None,
        "updated_by": row.updated_by if row else None,
        "drill": drill.evaluation if drill is not None else None,
    }


# --- exports --------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(s: Session, case: Case) -> str:
    """The review as Markdown: facts, the whole timeline in order, deadlines, steps, the investigation."""
    sev = Severity(case.severity)
    trig = Trigger(case.trigger) if case.trigger in {int(t) for t in Trigger} else None
    site = cases.settings().site(case.site)
    row = review_of(s, case.id)
    mark = "【演练】" if case.drill else ""
    lines = [
        f"# {mark}事故调查报告 / {'[DRILL] ' if case.drill else ''}Incident review — #{case.id}",
        "",
        f"- 医院 / Hospital: {site.name_zh or case.site} {('/ ' + site.name_en) if site.name_en else ''}".rstrip(),
        f"- 故障 / Fault: {case.title_zh} / {case.title_en}",
        f"- 触发条件 / Trigger: {int(trig)} {trig.short.zh} / {trig.short.en}" if trig else "- 触发条件 / Trigger: —",
        f"- 级别 / Severity: {sev.text.zh} / {sev.text.en}（{int(sev.response_within.total_seconds() // 60)} min）",
        f"- 范围 / Scope: {Scope(case.scope).text.zh} / {Scope(case.scope).text.en}",
        f"- 科室 / Departments: {'、'.join(case.departments) or '—'}",
        f"- 发生 / Began: {_t(case.opened_at)}；报告 / Reported: {_t(case.reported_at)}；"
        f"确认 / Acknowledged: {_t(case.acknowledged_at)}；恢复 / Recovered: {_t(case.resolved_at)}",
        "",
        "## 时间线 / Timeline (UTC+8)",
        "",
        "| # | 时间 / Time | 类别 / Kind | 事件 / What | 人员 / By |",
        "|---|---|---|---|---|",
    ]
    for i, e in enumerate(timeline(s, case), 1):
        lines.append(f"| {i} | {_t(e.at)} | {e.kind} | {_cell(e.text.zh)}<br>{_cell(e.text.en)} | {e.actor or '—'} |")
    lines += ["", "## 期限 / Deadlines", "", "| 期限 / Clock | 到期 / Due | 状态 / Status |", "|---|---|---|"]
    for c in s.scalars(select(CaseClock).where(CaseClock.case_id == case.id).order_by(CaseClock.due_at)):
        lines.append(f"| {c.name} | {_t(c.due_at)} | {c.status} |")
    disp = dispatch.dispatches_of(s, case.id)
    if disp:
        lines += ["", "## 现场 / On site (2.9)", ""]
        for d in disp:
            st = dispatch.arrival_status(d, case.resolved_at or case.updated_at)
            lines.append(
                f"- {d.engineer}: {d.advice_zh} / {d.advice_en}；出发 / left {_t(d.dispatched_at)}；"
                f"时限 / due {_t(d.arrive_by)}；到达 / arrived {_t(d.arrived_at)} — "
                f"{st['label']['zh']} / {st['label']['en']}"
            )
    lines += ["", "## 预案步骤 / Plan steps", ""]
    for st in workflow.steps_of(s, case.id):
        done = f"{_t(st.done_at)} {st.done_by}" if st.done_at else "未做 / not done"
        lines.append(f"- [{'x' if st.done_at else ' '}] {st.text_zh} / {st.text_en} — {done}")
    drill = s.scalar(select(Drill).where(Drill.case_id == case.id))
    if drill is not None and drill.evaluation:
        ev = drill.evaluation
        lines += ["", "## 演练评估 / Drill evaluation", ""]
        for m in ev.get("milestones", []):
            limit = f" / {m['deadline_min']:g}" if m.get("deadline_min") else ""
            ok = {True: "（达标 / met）", False: "（未达标 / missed）", None: ""}[m.get("met")]
            took = m["minutes"] if m["minutes"] is not None else "—"
            lines.append(f"- {m['text']['zh']} / {m['text']['en']}: {took}{limit} min{ok}")
        for p in ev.get("auto_problems", []):
            lines.append(f"- 问题 / Problem: {p['zh']} / {p['en']}")
        for p in ev.get("problems", []):
            lines.append(f"- 问题 / Problem: {p}")
        for p in ev.get("improvements", []):
            lines.append(f"- 预案改进 / Plan improvement: {p}")
    lines += ["", "## 调查 / Investigation (2.10)", ""]
    for key, label in FIELDS.items():
        value = getattr(row, key) if row else ""
        lines += [f"### {label.zh} / {label.en}", "", value.strip() or "（待填写 / to be completed）", ""]
    if row:
        lines.append(f"_更新 / Updated: {_t(row.updated_at)} {row.updated_by}_")
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class CjkFont:
    path: Path
    index: int
    chars: frozenset[int]


def _collection_index(path: Path) -> tuple[int, Any]:
    """The face to use from a font file: in a collection, the Simplified Chinese one if named."""
    from fontTools.ttLib import TTCollection, TTFont

    if path.suffix.lower() == ".ttc":
        coll = TTCollection(str(path), lazy=True)
        for i, face in enumerate(coll.fonts):
            name = str(face["name"].getDebugName(1) or "")
            if name.endswith(" SC") or "SC " in name:
                return i, face
        return 0, coll.fonts[0]
    return 0, TTFont(str(path), lazy=True)


def find_cjk_font() -> CjkFont:
    """A font that draws Chinese: HISGUARD_CJK_FONT, else the usual Debian locations. FontMissing if none."""
    return _find_cjk_font(os.environ.get("HISGUARD_CJK_FONT"))


@functools.lru_cache(maxsize=8)
def _find_cjk_font(env: str | None) -> CjkFont:  # cached: reading a CJK collection's glyph map takes a second
    candidates = [Path(env)] if env else [Path(p) for p in CJK_FONTS]
    tried = []
    for path in candidates:
        if not path.is_file():
            tried.append(f"{path} (absent)")
            continue
        try:
            index, face = _collection_index(path)
            chars = frozenset(face.getBestCmap() or {})
        except Exception as exc:  # a broken font file is reported, not drawn with
            tried.append(f"{path} (unreadable: {exc})")
            continue
        if ord("中") not in chars:
            tried.append(f"{path} (no Chinese glyphs)")
            continue
        return CjkFont(path, index, chars)
    raise FontMissing(
        "PDF 导出需要中文字体，未找到 / the PDF export needs a Chinese (CJK) font and none was found: "
        + "; ".join(tried)
        + ". Install fonts-noto-cjk (or fonts-wqy-zenhei), or set HISGUARD_CJK_FONT to a .ttf/.otf/.ttc file."
    )


_MD_BOLD = ("**", "__")


def pdf(s: Session, case: Case) -> bytes:
    """The review as PDF with the CJK font embedded (subset). FontMissing if no font draws every character."""
    from fpdf import FPDF

    # Control characters have no glyph in any font and carry nothing for a reader: left out of the PDF.
    text = "".join(ch for ch in markdown(s, case) if ch in "\n\t" or not unicodedata.category(ch).startswith("C"))
    font = find_cjk_font()
    missing = sorted({ch for ch in text if ord(ch) not in font.chars and ch not in "\n\t"})
    if missing:
        shown = ", ".join(f"U+{ord(c):04X}" for c in missing[:20])
        raise ReviewError(
            f"字体 {font.path} 缺少以下字符，PDF 未生成 / the font {font.path} cannot draw {shown} "
            "(no PDF rather than boxes): edit the review text, or set HISGUARD_CJK_FONT to a font that has them; "
            "the Markdown export has the text as is",
            422,
        )
    doc = FPDF(format="A4")
    doc.set_title(f"Incident review #{case.id}")
    doc.set_creator("hisguard")
    doc.set_auto_page_break(True, margin=15)
    doc.add_font("cjk", fname=str(font.path), collection_font_number=font.index)
    doc.add_page()
    width = doc.w - doc.l_margin - doc.r_margin
    for line in text.splitlines():
        if not line.strip():
            doc.ln(2)
            continue
        size, h = 9.0, 5.0
        if line.startswith("# "):
            size, h, line = 15.0, 8.0, line[2:]
        elif line.startswith("## "):
            size, h, line = 12.0, 7.0, line[3:]
            doc.ln(2)
        elif line.startswith("### "):
            size, h, line = 10.5, 6.0, line[4:]
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            line = "  ".join(c.strip().replace("<br>", " / ") for c in line.strip("|").split(" | "))
        for mark in _MD_BOLD:
            line = line.replace(mark, "")
        line = line.strip("_") if line.startswith("_") else line
        doc.set_font("cjk", size=size)
        doc.multi_cell(width, h, line.replace("\\|", "|"), align="L", new_x="LMARGIN", new_y="NEXT")
    out = io.BytesIO()
    doc.output(out)
    return out.getvalue()
