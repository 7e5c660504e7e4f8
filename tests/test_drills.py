"""Drills (2.8): started on the server, the whole plan runs with every message marked 演练/DRILL, the
evaluation times each step against the plan's deadlines; the training/drill schedule reminds when overdue.
Real peers: an aiosmtpd SMTP server and a local HTTP webhook receiver (tests/test_cases.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hisguard.server.domain import drills
from hisguard.server.domain.clocks import ManualClock
from tests.test_cases import (
    SITE,
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    site_settings,
    smtp_fixture,  # noqa: F401
    wait_for,
)


def _server(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> Server:
    srv = Server(site_settings(smtp, http, tmp_path), ManualClock())
    srv.token("li", "engineer")
    srv.token("mgr", "service_manager")
    return srv


def test_server_drill_runs_the_plan_marked_and_is_evaluated_against_the_deadlines(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    srv = _server(smtp, http, tmp_path)
    try:
        r = srv.post("/drills", "li", {"site": SITE, "trigger": 3})
        assert r.status_code == 201, r.text
        drill = r.json()
        case_id = drill["case_id"]
        case = srv.get(f"/cases/{case_id}", "li").json()
        assert case["drill"] is True and case["severity"] == "critical" and case["plan"]["activated_by"] == "system"

        # Real messages to real peers, each saying it is a drill, in both languages.
        mails = wait_for(lambda: len(smtp.messages) >= 3 and smtp.messages, what="activation e-mails")
        for _, msg in mails:
            assert msg["Subject"].startswith("【演练】") and "[DRILL]" in msg["Subject"]
            assert "【演练，非真实故障】" in msg.get_content() and "[DRILL, not a real fault]" in msg.get_content()
        (hook,) = wait_for(lambda: http.at("/hook"), what="hospital webhook")
        assert hook["body"]["data"]["case"]["drill"] is True and hook["body"]["subject"]["en"].startswith("[DRILL]")

        # The team runs the drill: acknowledges after 4 min, records three of the five 2.5 steps, one late.
        srv.clock.advance(minutes=4)
        assert srv.post(f"/cases/{case_id}/acknowledge", "li").status_code == 200
        srv.clock.advance(minutes=2)
        assert srv.post(f"/cases/{case_id}/steps/record", "li").status_code == 200
        srv.clock.advance(minutes=2)
        assert srv.post(f"/cases/{case_id}/steps/activate", "mgr").status_code == 200
        srv.clock.advance(minutes=6)  # 14 min after the report: past the 10-minute service level
        assert srv.post(f"/cases/{case_id}/steps/hospital_notified", "li").status_code == 200

        # Running: the evaluation so far is visible.
        live = srv.get(f"/drills/{drill['id']}", "li").json()
        assert live["status"] == "running" and live["evaluation"]["milestones"][2]["minutes"] == 4.0

        r = srv.post(
            f"/drills/{drill['id']}/close",
            "mgr",
            {"problems": ["备份服务器密码不在值班手册里"], "improvements": ["值班手册增加备份服务器登录步骤"]},
        )
        assert r.status_code == 200, r.text
        done = r.json()
        ev = done["evaluation"]
        assert done["status"] == "closed"
        ms = {m["name"]: m for m in ev["milestones"]}
        assert ms["acknowledged"]["minutes"] == 4.0 and ms["acknowledged"]["deadline_min"] == 10
        assert ms["acknowledged"]["met"] is True
        assert ms["activated"]["minutes"] == 0.0 and ms["activated"]["met"] is True
        assert ms["recovered"]["minutes"] == 14.0 and ms["recovered"]["deadline_min"] == 15  # before manual work
        steps = {st["key"]: st for st in ev["steps"]}
        assert steps["record"]["minutes"] == 6.0 and steps["record"]["met"] is True
        assert steps["activate"]["minutes"] == 8.0 and steps["activate"]["met"] is True
        assert steps["hospital_notified"]["minutes"] == 14.0 and steps["hospital_notified"]["met"] is False
        assert "leadership_informed" in ev["skipped"] and "result_fed_back" in ev["skipped"]
        assert any(k.startswith("t3.") for k in ev["skipped"])  # the database checklist of 2.6 was not worked
        problems_en = [p["en"] for p in ev["auto_problems"]]
        assert any("Step late" in p and "Tell the hospital" in p for p in problems_en)
        assert any("Step skipped" in p for p in problems_en)
        assert ev["problems"] == ["备份服务器密码不在值班手册里"]
        assert ev["improvements"] == ["值班手册增加备份服务器登录步骤"]
        assert ev["notifications"]["marked_drill"] is True and ev["notifications"]["total"] >= 4

        # The case closed with a recovery message, also marked.
        assert srv.get(f"/cases/{case_id}", "li").json()["status"] == "resolved"
        wait_for(lambda: [m for _, m in smtp.messages if "[Recovered]" in m["Subject"]], what="recovered mail")
        assert all(m["Subject"].startswith("【演练】") for _, m in smtp.messages)
        # Closing twice is refused with who closed it.
        again = srv.post(f"/drills/{drill['id']}/close", "mgr", {})
        assert again.status_code == 409 and "closed by mgr" in again.json()["detail"]

        # The drill counts as a drill done, never as a case.
        st = srv.get("/stats", "li", site=SITE).json()["sites"][0]
        assert st["cases"] == 0 and st["by_severity"]["critical"] == 0 and st["drills"]["done"] == 1
    finally:
        srv.close()


def test_bad_drill_requests_are_refused_with_the_reason(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    srv = _server(smtp, http, tmp_path)
    try:
        assert srv.post("/drills", "li", {"site": SITE, "trigger": 7}).status_code == 422
        r = srv.post("/drills", "li", {"site": SITE, "trigger": 1, "scope": "department"})
        assert r.status_code == 422 and "needs --department" in r.json()["detail"]
        srv.token("xxk", "hospital_contact", site=SITE)
        assert srv.post("/drills", "xxk", {"site": SITE, "trigger": 1}).status_code == 403
        assert srv.get("/drills/999", "li").status_code == 404
    finally:
        srv.close()


def test_site_without_a_drill_in_six_months_gets_one_overdue_reminder(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    srv = _server(smtp, http, tmp_path)
    runner: drills.ScheduleRunner = srv.app.state.schedule_runner
    try:
        runner.tick()  # the schedule starts counting for the site now
        sched = srv.get("/schedule", "li").json()
        (site,) = [e for e in sched if e["site"] == SITE]
        assert not site["drill"]["overdue"] and not site["training"]["overdue"]

        # Training held after two months: the quarterly clock restarts from it.
        srv.clock.advance(days=60)
        r = srv.post("/training", "li", {"site": SITE, "topic": "应急预案培训：数据库置疑处置"})
        assert r.status_code == 201
        srv.clock.advance(days=123)  # 183 days without a drill; training 123 days ago (> 91)
        sent = runner.tick()
        assert {(r.site, r.kind) for r in sent} == {(SITE, "drill"), (SITE, "training")}
        (site,) = [e for e in srv.get("/schedule", "li").json() if e["site"] == SITE]
        assert site["drill"]["overdue"] and site["drill"]["overdue_days"] == 1 and site["drill"]["last"] is None
        assert site["training"]["overdue"] and site["training"]["overdue_days"] == 32

        # The managers and the first on-call tier hear of it by e-mail.
        mails = wait_for(
            lambda: (ms := [m for _, m in smtp.messages if "Emergency drill overdue" in m["Subject"]])[1:] and ms,
            what="reminders to the manager and tier 1",
        )
        assert {str(m["To"]) for m in mails} == {"mgr@vendor.example", "li@vendor.example"}
        assert "应急演练已逾期 1 天" in mails[0].get_content() and "at least every six months" in mails[0].get_content()
        # Once per due date, not on every check.
        srv.clock.advance(days=1)
        assert runner.tick() == []

        # A drill done ends the overdue state.
        d = srv.post("/drills", "li", {"site": SITE, "trigger": 1}).json()
        assert srv.post(f"/drills/{d['id']}/close", "li", {}).status_code == 200
        (site,) = [e for e in srv.get("/schedule", "li").json() if e["site"] == SITE]
        assert not site["drill"]["overdue"] and site["drill"]["last"] == srv.clock.now().isoformat()
        due = srv.clock.now() + timedelta(days=182)
        assert site["drill"]["due_at"] == due.isoformat()
    finally:
        srv.close()
