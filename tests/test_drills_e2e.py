"""A drill end to end from the agent's command line: a real `hisguard-agent drill` process delivers the
simulated incident through its outbox to a real `hisguard-server run` process, which activates the plan
and notifies a real SMTP server (aiosmtpd) and webhook receiver, every message marked 演练/DRILL; the team
acknowledges and works the steps over the API, the agent reports the recovery, the drill is closed with
an evaluation of step timings, and the statistics count it as a drill done, never as a case."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.procs import ServerProc, wait_until
from tests.test_cases import HttpSink, SmtpSink, http_fixture, smtp_fixture  # noqa: F401

SITE = "renmin"


def _server_config(smtp: SmtpSink, http: HttpSink) -> str:
    return f"""
clock_interval = 0.5
vendor_city = "郑州"

[server.notify]
smtp_port = {smtp.port}
interval = 0.2
timeout = 5

[server.sites.{SITE}]
name_zh = "人民医院"
name_en = "Renmin Hospital"
city = "洛阳"
tiers = [["li"]]
managers = ["mgr"]
hospital = ["xxk"]

[server.sites.{SITE}.contacts.li]
email = "li@vendor.example"

[server.sites.{SITE}.contacts.mgr]
email = "mgr@vendor.example"

[server.sites.{SITE}.contacts.xxk]
email = "it@hospital.example"
webhook = "{http.url}/hook"
"""


def _agent(srv: ServerProc, tmp_path: Path) -> Path:
    token = srv.agent_token("his-db-01", SITE)
    work = tmp_path / "agent"
    work.mkdir()
    cfg = work / "agent.toml"
    cfg.write_text(
        f'[agent]\nname = "his-db-01"\nstate_dir = "state"\nhospital_critical = true\n\n'
        f'[server]\nurl = "{srv.url}"\ntoken = "{token}"\ntimeout = 5\n',
        encoding="utf-8",
    )
    return cfg


def _agent_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hisguard.agent.cli", "drill", "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cfg.parent,
    )


class Api:
    def __init__(self, srv: ServerProc, token: str) -> None:
        self.base, self.headers = f"{srv.url}/api/v1", {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.base + path, params=params, headers=self.headers, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: Any = None) -> Any:
        r = httpx.post(self.base + path, json=body, headers=self.headers, timeout=30)
        assert r.status_code in (200, 201), r.text
        return r.json()


def test_drill_from_the_agent_cli_through_delivery_activation_notifications_and_closing(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    srv = ServerProc(tmp_path / "server", extra_config=_server_config(smtp, http))
    manager = srv.cli("token", "create", "--engineer", "mgr", "--role", "service_manager")
    cfg = _agent(srv, tmp_path)
    srv.start()
    try:
        eng, mgr = Api(srv, srv.engineer_token), Api(srv, manager)

        out = _agent_cli(cfg, "--trigger", "1")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "drill started" in out.stdout and "delivered" in out.stdout

        (case,) = wait_until(lambda: eng.get("/cases"), 10, what="the drill's case")
        assert case["drill"] is True and case["severity"] == "critical" and case["plan"]["activated_by"] == "system"
        assert case["title"]["en"] == "Simulated fault (whole hospital): Hardware/network failure"

        # Real notifications, each marked as a drill: engineer and manager by e-mail, the hospital by
        # e-mail and webhook.
        wait_until(lambda: len(smtp.messages) >= 3, 15, what="activation e-mails")
        subjects = sorted(str(m["Subject"]) for _, m in smtp.messages)
        assert all(s.startswith("【演练】") and "[DRILL]" in s for s in subjects), subjects
        assert {str(m["To"]) for _, m in smtp.messages} >= {"li@vendor.example", "mgr@vendor.example"}
        hook = wait_until(lambda: http.at("/hook"), 15, what="webhook")[0]["body"]
        assert hook["data"]["case"]["drill"] is True and hook["subject"]["zh"].startswith("【演练】")

        # The team works the drill: acknowledgement, the 2.5 steps, an engineer sent on site (outside the
        # vendor's city, whole hospital: go now by chartered or service car) who arrives.
        cid = case["id"]
        eng.post(f"/cases/{cid}/acknowledge", {"note": "演练：已响应"})
        eng.post(f"/cases/{cid}/steps/record")
        eng.post(f"/cases/{cid}/steps/leadership_informed")
        mgr.post(f"/cases/{cid}/steps/activate")
        eng.post(f"/cases/{cid}/steps/hospital_notified")
        sent = eng.post(f"/cases/{cid}/dispatch", {"engineer": "李工"})
        assert sent["advice"]["mode"] == "chartered_or_service_car"
        assert "包车或服务车立即出发" in sent["advice"]["text"]["zh"]
        eng.post(f"/cases/{cid}/arrival")

        # The agent reports the simulated fault over; the case recovers.
        out = _agent_cli(cfg, "--trigger", "1", "--end")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_until(lambda: eng.get(f"/cases/{cid}")["status"] == "resolved", 10, what="the case recovered")
        eng.post(f"/cases/{cid}/steps/result_fed_back")

        (drill,) = eng.get("/drills", site=SITE)
        assert drill["source"] == "agent" and drill["case_id"] == cid and drill["status"] == "running"
        closed = mgr.post(
            f"/drills/{drill['id']}/close",
            {"problems": ["院方信息科电话无人接听"], "improvements": ["预案联系人表增加信息科备用手机"]},
        )
        ev = closed["evaluation"]
        steps = {st["key"]: st for st in ev["steps"]}
        for key in ("record", "leadership_informed", "activate", "hospital_notified", "result_fed_back"):
            assert steps[key]["done_at"] and steps[key]["minutes"] is not None and steps[key]["minutes"] >= 0
        for key in ("record", "leadership_informed", "activate", "hospital_notified"):
            assert steps[key]["deadline_min"] == 10 and steps[key]["met"] is True
        ms = {m["name"]: m for m in ev["milestones"]}
        assert ms["acknowledged"]["met"] is True and ms["arrived"]["minutes"] is not None
        assert ev["skipped"] == [k for k in steps if k.startswith("t1.")]  # the hardware checklist (2.6) was skipped
        assert ev["notifications"]["marked_drill"] is True and ev["notifications"]["sent"] >= 4
        assert ev["problems"] == ["院方信息科电话无人接听"]

        # Drills stay out of the real figures.
        st = eng.get("/stats", site=SITE)["sites"][0]
        assert st["cases"] == 0 and st["by_trigger"] == {} and st["response"]["critical"]["cases"] == 0
        assert st["drills"]["done"] == 1 and st["arrivals"]["dispatched"] == 0

        # The review of the drill carries the evaluation.
        md = httpx.get(f"{eng.base}/cases/{cid}/review.md", headers=eng.headers, timeout=10).text
        assert md.startswith("# 【演练】事故调查报告") and "## 演练评估 / Drill evaluation" in md
        assert "院方信息科电话无人接听" in md

        # The server's CLI starts a drill too; the running server delivers its notifications.
        before = len(smtp.messages)
        line = srv.cli("drill", "start", "--site", SITE, "--trigger", "5", "--by", "王经理")
        assert "plan activated" in line and "marked 演练/DRILL" in line
        wait_until(lambda: len(smtp.messages) >= before + 3, 15, what="CLI drill e-mails")
        assert all(str(m["Subject"]).startswith("【演练】") for _, m in smtp.messages[before:])
        drills = eng.get("/drills", site=SITE)
        newest = drills[0]
        assert (newest["source"], newest["trigger"], newest["started_by"]) == ("server", 5, "王经理")
        assert eng.get("/stats", site=SITE)["sites"][0]["cases"] == 0
    finally:
        srv.stop()


def test_drill_sent_while_the_server_is_down_waits_in_the_outbox_and_is_delivered_later(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    from hisguard.agent.store import StateStore

    srv = ServerProc(tmp_path / "server", extra_config=_server_config(smtp, http))
    cfg = _agent(srv, tmp_path)
    out = _agent_cli(cfg, "--trigger", "3")
    assert out.returncode == 1 and "kept in the outbox" in out.stdout
    store = StateStore(cfg.parent / "state" / "agent.sqlite3")
    assert store.backlog() == 1 and store.peek(1)[0].body["drill"] is True
    store.close()
    again = _agent_cli(cfg, "--trigger", "3")
    assert again.returncode == 2 and "already open" in again.stderr

    srv.start()
    try:
        # The agent's next delivery (here `hisguard-agent once`) sends what waited in the outbox.
        once = subprocess.run(
            [sys.executable, "-m", "hisguard.agent.cli", "once", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cfg.parent,
        )
        assert "delivered 2 reports" in once.stdout, once.stdout + once.stderr  # the drill and a heartbeat
        eng = Api(srv, srv.engineer_token)
        (case,) = eng.get("/cases")
        assert case["drill"] and case["trigger"] == 3 and case["status"] == "open"
        assert case["plan"] is not None  # database trigger, whole hospital: critical, the plan started
        out = _agent_cli(cfg, "--trigger", "3", "--end")
        assert out.returncode == 0 and "(1 reports)" in out.stdout, out.stdout + out.stderr
        wait_until(lambda: eng.get(f"/cases/{case['id']}")["status"] == "resolved", 10, what="recovered")
        assert eng.get("/stats", site=SITE)["sites"][0]["cases"] == 0
        assert _agent_cli(cfg, "--trigger", "3", "--end").returncode == 2  # nothing open any more
    finally:
        srv.stop()
