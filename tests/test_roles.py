"""Roles on people's tokens: who may activate, who does which step, what a hospital contact sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hisguard.server.domain.clocks import ManualClock
from hisguard.server.domain.tokens import create_engineer_token
from tests.test_cases import (  # the fixtures smtp and http come with their functions
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    incident,
    site_settings,
    smtp_fixture,  # noqa: F401
)


@pytest.fixture
def srv(smtp: SmtpSink, http: HttpSink, tmp_path: Path):
    s = Server(site_settings(smtp, http, tmp_path), ManualClock())
    s.token("his-db-01", agent=True)
    s.token("li", "engineer")
    s.token("mgr", "service_manager")
    s.token("root", "admin")
    s.token("zhang", "hospital_contact", site="renmin")
    s.token("qian", "hospital_contact", site="xiehe")
    yield s
    s.close()


def _urgent_case(srv: Server) -> int:
    srv.report(incident(srv.clock, severity="urgent", scope="department"))
    (case,) = srv.get("/cases", "li").json()
    assert case["plan"] is None
    return case["id"]


def test_hospital_contact_cannot_activate_engineer_and_manager_can(srv: Server) -> None:
    cid = _urgent_case(srv)
    r = srv.post(f"/cases/{cid}/activate", "zhang", {"reason": "我们要启动"})
    assert r.status_code == 403 and "hospital_contact" in r.json()["detail"]
    assert srv.post(f"/cases/{cid}/acknowledge", "zhang").status_code == 403
    assert srv.post(f"/cases/{cid}/severity", "zhang", {"severity": "critical", "reason": "x"}).status_code == 403
    assert srv.post(f"/cases/{cid}/activate", "his-db-01").status_code == 403  # an agent token
    r = srv.post(f"/cases/{cid}/activate", "mgr", {"reason": "门诊收费全部停摆"})
    assert r.status_code == 200 and r.json()["plan"]["activated_by"] == "mgr"
    assert srv.post(f"/cases/{cid}/activate", "li").status_code == 409  # once


def test_engineer_cannot_do_the_managers_step(srv: Server) -> None:
    cid = _urgent_case(srv)
    srv.post(f"/cases/{cid}/activate", "li", {"reason": "部门级瘫痪"})
    r = srv.post(f"/cases/{cid}/steps/activate", "li")
    assert r.status_code == 403 and "service_manager" in r.json()["detail"]
    assert srv.post(f"/cases/{cid}/steps/record", "zhang").status_code == 403  # the engineer's step
    r = srv.post(f"/cases/{cid}/steps/record", "li", {"note": "门诊收费 12 台工作站断网"})
    assert r.status_code == 200
    r = srv.post(f"/cases/{cid}/steps/activate", "mgr", {"note": "同意启动"})
    assert r.status_code == 200
    steps = {st["key"]: st for st in r.json()["steps"]}
    assert steps["record"]["done_by"] == "li" and steps["activate"]["done_by"] == "mgr"
    assert steps["activate"]["done_at"] == srv.clock.now().isoformat()
    assert srv.post(f"/cases/{cid}/steps/activate", "mgr").status_code == 409  # already done
    assert srv.post(f"/cases/{cid}/steps/nonexistent", "mgr").status_code == 404
    # Every human action is in the audit log, with the role; only a manager or admin reads it.
    assert srv.get("/audit", "li").status_code == 403
    log = srv.get("/audit", "root", case_id=cid).json()
    assert [(a["actor"], a["role"], a["action"]) for a in reversed(log)] == [
        ("li", "engineer", "activate"),
        ("li", "engineer", "step_done"),
        ("mgr", "service_manager", "step_done"),
    ]


def test_hospital_contact_sees_only_its_hospital(srv: Server) -> None:
    cid = _urgent_case(srv)
    assert [c["id"] for c in srv.get("/cases", "zhang").json()] == [cid]
    assert srv.get("/cases", "qian").json() == []
    assert srv.get(f"/cases/{cid}", "qian").status_code == 404
    assert srv.get("/incidents", "zhang").status_code == 403  # the engineers' raw view
    r = srv.post("/requests", "zhang", {"site": "xiehe", "title_zh": "别家医院"})
    assert r.status_code == 403


def test_hospital_contact_does_the_backfill_step(srv: Server) -> None:
    srv.report(incident(srv.clock))
    (case,) = srv.get("/cases", "li").json()
    srv.clock.advance(minutes=16)
    srv.tick()
    srv.report(incident(srv.clock, state="resolved"))
    steps = srv.get(f"/cases/{case['id']}", "zhang").json()["steps"]
    key = next(st["key"] for st in steps if st["phase"] == "backfill")
    assert srv.post(f"/cases/{case['id']}/steps/{key}", "li").status_code == 403
    r = srv.post(f"/cases/{case['id']}/steps/{key}", "zhang", {"note": "已补录 37 笔挂号"})
    assert r.status_code == 200
    assert next(st for st in r.json()["steps"] if st["key"] == key)["done_by"] == "zhang"


def test_tokens_without_a_role_stay_engineers(srv: Server) -> None:
    with srv.db.session() as s:
        srv.tokens["old"] = create_engineer_token(s, "old")
    assert srv.get("/incidents", "old").status_code == 200
    assert srv.get("/cases", "old").status_code == 200


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    if not (tmp_path / "cli.sqlite3").exists():
        subprocess.run([sys.executable, "-m", "hisguard.server.cli", "init", "--db", db], check=True, timeout=60)
    return subprocess.run(
        [sys.executable, "-m", "hisguard.server.cli", "token", "create", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_creates_role_tokens(tmp_path: Path) -> None:
    out = _cli(tmp_path, "--engineer", "zhang", "--role", "hospital_contact")
    assert out.returncode == 2 and "--site" in out.stderr
    out = _cli(tmp_path, "--engineer", "zhang", "--role", "hospital_contact", "--site", "renmin")
    assert out.returncode == 0, out.stderr
    assert "hospital_contact zhang at site renmin" in out.stdout and out.stdout.strip().splitlines()[-1].startswith(
        "hgh_"
    )
    out = _cli(tmp_path, "--engineer", "wang", "--role", "service_manager")
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1].startswith("hge_")
    out = _cli(tmp_path, "--engineer", "x", "--role", "boss")
    assert out.returncode == 2 and "invalid choice" in out.stderr
