"""The plan's clocks on a hand-moved clock: activation at once, escalation at 10 min, continuity at
15 min and 3 h, back-fill after recovery, the 4-hour written reply — and a restart in the middle."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from hisguard.plan import ACTIVATION_STEPS, ContinuityPhase
from hisguard.server.domain import cases, clocks
from hisguard.server.domain.clocks import ManualClock
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import CaseClock, CaseEvent
from tests.test_cases import (  # the fixtures smtp and http come with their functions
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    incident,
    site_settings,
    smtp_fixture,  # noqa: F401
    wait_for,
)

REGISTRATION_BILLING_PHARMACY = ["outpatient_registration", "outpatient_billing", "outpatient_pharmacy"]


def _start(settings, clock: ManualClock) -> Server:
    srv = Server(settings, clock)
    for who, role in (("li", "engineer"), ("mgr", "service_manager")):
        srv.token(who, role)
    srv.token("his-db-01", agent=True)
    return srv


def _counts(db: Database, case_id: int) -> dict[str, int]:
    with db.session() as s:
        rows = s.execute(
            select(CaseEvent.kind, func.count()).where(CaseEvent.case_id == case_id).group_by(CaseEvent.kind)
        )
        return dict(rows.all())


def test_critical_trigger1_case_through_escalation_continuity_restart_and_backfill(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    clock = ManualClock()
    settings = site_settings(smtp, http, tmp_path)
    srv = _start(settings, clock)
    t0 = clock.now()

    # A critical trigger-1 report: the plan is active when the POST returns.
    started = time.monotonic()
    srv.report(incident(clock))
    (case,) = srv.get("/cases", "li").json()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    cid = case["id"]
    assert case["plan"]["activated_at"] == t0.isoformat() and case["plan"]["activated_by"] == "system"
    full = srv.get(f"/cases/{cid}", "li").json()
    keys = [st["key"] for st in full["steps"]]
    assert keys[: len(ACTIVATION_STEPS)] == [st.key for st in ACTIVATION_STEPS]
    assert [k for k in keys if k.startswith("t1.")] == [
        "t1.confirm",
        "t1.onsite_protect_data",
        "t1.warranty",
        "t1.supplier_advised",
        "t1.written_report",
    ]
    due = {c["name"]: c["due_at"] for c in full["clocks"]}
    assert due == {
        "response:1": (t0 + timedelta(minutes=10)).isoformat(),
        "continuity:1": (t0 + timedelta(minutes=15)).isoformat(),
        "continuity:2": (t0 + timedelta(hours=3)).isoformat(),
    }
    # Tier 1 and the manager hear of the activation; the hospital hears the plan started.
    first = wait_for(lambda: smtp.to("li@vendor.example"), what="activation e-mail to tier 1")
    assert "应急预案已启动" in first[0]["Subject"] and "Emergency plan activated" in first[0]["Subject"]
    wait_for(lambda: smtp.to("it@hospital.example"), what="plan-started e-mail to the hospital")
    assert smtp.to("zhao@vendor.example") == []

    # 9 minutes: nothing yet. 10 minutes, not acknowledged: tier 2.
    clock.advance(minutes=9)
    srv.tick()
    assert "escalated" not in _counts(srv.db, cid)
    clock.advance(minutes=1)
    srv.tick()
    (esc,) = srv.events(cid, "escalated")
    assert esc.detail["tier"] == 2 and esc.detail["contacts"] == ["zhao"]
    mail = wait_for(lambda: smtp.to("zhao@vendor.example"), what="escalation e-mail to tier 2")
    assert "第 2 梯队" in mail[0]["Subject"] and "tier 2" in mail[0]["Subject"]
    wecom = wait_for(lambda: http.at("/wecom"), what="WeCom escalation")
    assert wecom[0]["body"]["msgtype"] == "markdown" and "第 2 梯队" in wecom[0]["body"]["markdown"]["content"]

    # The server stops at 12 minutes and comes back at 16: the 15-minute advisory fires once, on start.
    clock.advance(minutes=2)
    srv.close()
    clock.advance(minutes=4)
    srv = _start(settings, clock)
    srv.tick()
    srv.tick()
    (adv,) = srv.events(cid, "continuity")
    assert adv.detail == {"phase": int(ContinuityPhase.AFTER_15_MIN), "functions": REGISTRATION_BILLING_PHARMACY}
    hook = wait_for(lambda: [r for r in http.at("/hook") if r["body"]["event"] == "continuity"], what="advisory")
    assert hook[0]["body"]["data"]["functions"] == REGISTRATION_BILLING_PHARMACY
    text_zh = hook[0]["body"]["text"]["zh"]
    assert (
        "门诊挂号、门诊收费、门诊药房" in text_zh
        and "住院登记" not in text_zh
        and "护士站" not in text_zh.split("\n")[0]
    )
    mail = wait_for(
        lambda: [m for m in smtp.to("it@hospital.example") if "业务连续性" in m["Subject"]], what="advisory e-mail"
    )
    body = mail[0].get_content()
    assert "Outpatient registration, Outpatient billing, Outpatient pharmacy" in body
    assert "Inpatient admission" not in body and "Emergency billing" not in body
    # Nothing fired twice across the restart.
    counts = _counts(srv.db, cid)
    assert counts["escalated"] == 1 and counts["continuity"] == 1 and counts["activated"] == 1

    # 3 hours: nurse stations and operating rooms (only those the case affects).
    clock.set(t0 + timedelta(hours=3))
    srv.tick()
    advisories = sorted(srv.events(cid, "continuity"), key=lambda e: e.id)
    assert [e.detail for e in advisories] == [
        {"phase": 1, "functions": REGISTRATION_BILLING_PHARMACY},
        {"phase": 2, "functions": ["nurse_station", "operating_room"]},
    ]
    # Escalation went on while nobody answered: tier 3 at 20 min, then the managers are told.
    assert [e.detail["tier"] for e in srv.events(cid, "escalated")] == [2, 3]

    # Recovered: a back-fill step per department that worked by hand, for the hospital contact.
    srv.report(incident(clock, state="resolved"))
    full = srv.get(f"/cases/{cid}", "li").json()
    assert full["status"] == "resolved"
    backfill = [st for st in full["steps"] if st["phase"] == "backfill"]
    assert [st["text"]["zh"].split("：")[0] for st in backfill] == [
        "门诊挂号",
        "门诊收费",
        "门诊药房",
        "护士站",
        "手术室",
    ]
    assert {st["role"] for st in backfill} == {"hospital_contact"}
    mail = wait_for(
        lambda: [m for m in smtp.to("it@hospital.example") if "已恢复" in m["Subject"]], what="recovery e-mail"
    )
    assert "- 门诊挂号" in mail[0].get_content() and "- Operating rooms" in mail[0].get_content()
    # After recovery no clock is left pending, and ticking again fires nothing.
    assert [c for c in full["clocks"] if c["status"] == "pending"] == []
    assert srv.tick() == []
    srv.close()


def test_acknowledgement_stops_escalation(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    clock = ManualClock()
    srv = _start(site_settings(smtp, http, tmp_path), clock)
    srv.report(incident(clock, severity="urgent", scope="department", functions=[], departments=["信息科"]))
    (case,) = srv.get("/cases", "li").json()
    assert case["plan"] is None  # urgent trigger 1: not activated unless the site's policy says so
    clock.advance(minutes=29)
    r = srv.post(f"/cases/{case['id']}/acknowledge", "li", {"note": "正在远程查看"})
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "li"
    clock.advance(hours=2)
    srv.tick()
    assert srv.events(case["id"], "escalated") == []
    assert {c["status"] for c in r.json()["clocks"]} == {"cancelled"}
    srv.close()


def test_site_policy_activates_urgent_cases_of_chosen_triggers(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    clock = ManualClock()
    srv = _start(site_settings(smtp, http, tmp_path, urgent_triggers=[3]), clock)
    srv.report(incident(clock, key="db/suspect", trigger=3, severity="urgent", scope="department"))
    srv.report(incident(clock, key="sw/cpu", trigger=2, severity="urgent", scope="department"))
    by_trigger = {c["trigger"]: c for c in srv.get("/cases", "li").json()}
    assert by_trigger[3]["plan"] is not None and by_trigger[2]["plan"] is None
    steps = [st["key"] for st in srv.get(f"/cases/{by_trigger[3]['id']}", "li").json()["steps"]]
    assert "t3.recover_data" in steps and not any(k.startswith("t1.") for k in steps)
    srv.close()


def test_written_reply_commitment_four_hours(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    clock = ManualClock()
    srv = _start(site_settings(smtp, http, tmp_path), clock)
    srv.token("zhang", "hospital_contact", site="renmin")
    body = {"title_zh": "门诊收费打印发票重复", "description": "传真报告：发票打印两张"}
    r = srv.post("/requests", "zhang", body)
    assert r.status_code == 201, r.text
    late = r.json()["id"]
    r = srv.post("/requests", "zhang", {**body, "title_zh": "检验报告打印乱码"})
    answered = r.json()["id"]
    clock.advance(hours=3)
    assert srv.post(f"/cases/{answered}/reply", "li", {"text": "原因：打印模板错误，已修正。"}).status_code == 200
    clock.advance(hours=1)
    srv.tick()
    assert len(srv.events(late, "written_reply_overdue")) == 1
    assert srv.events(answered, "written_reply_overdue") == []
    wait_for(lambda: [m for m in smtp.to("mgr@vendor.example") if "书面答复超时" in m["Subject"]], what="overdue")
    srv.close()


def test_concurrent_runners_fire_each_clock_once(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    """Two processes' runners on one database (here two engines on one SQLite file) never double a clock."""
    clock = ManualClock()
    srv = _start(site_settings(smtp, http, tmp_path), clock)
    for i in range(20):
        srv.report(incident(clock, key=f"host-{i}/ping", host=f"host-{i}"))
    clock.advance(hours=4)
    other = Database(srv.settings.db_url)
    runners = [clocks.ClockRunner(srv.db, cases.on_clock), clocks.ClockRunner(other, cases.on_clock)]
    fired: list[list[int]] = [[], []]
    threads = [threading.Thread(target=lambda i=i: fired[i].extend(runners[i].tick())) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.dispose()
    with srv.db.session() as s:
        total = s.scalar(select(func.count()).select_from(CaseClock).where(CaseClock.status == "fired"))
        pending = s.scalar(select(func.count()).select_from(CaseClock).where(CaseClock.status == "pending"))
        esc = s.scalar(select(func.count()).select_from(CaseEvent).where(CaseEvent.kind == "escalated"))
    ids = fired[0] + fired[1]
    assert len(ids) == len(set(ids)) == total
    # Per case: the 10-minute response clock (→ tier 2) and both continuity clocks, once each.
    assert total == 60 and esc == 20
    assert pending == 20  # each case's tier-2 response clock, scheduled once
    srv.close()
