"""Web console over HTTP (no browser): login, CSRF, lockout, headers, site-bound viewers, role-bound
buttons and actions, charts from stored history, language per user, event stream, audit for admins."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain import users
from hisguard.server.domain.clocks import ManualClock
from hisguard.server.domain.tokens import create_agent_token
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import CaseEvent

PASSWORD = "password-123"
HTML = {"Accept": "text/html"}


class Console:
    def __init__(self, tmp_path: Path) -> None:
        self.app = create_app(ServerSettings(data_dir=tmp_path))
        self.client = TestClient(self.app, base_url="http://console.test")
        self.client.__enter__()
        self.db = self.app.state.db
        with self.db.session() as s:
            for name, role, site in [
                ("mgr", "service_manager", None),
                ("eng", "engineer", None),
                ("adm", "admin", None),
                ("renmin-it", "viewer", "renmin"),
                ("zhongyi-it", "viewer", "zhongyi"),
            ]:
                users.create_user(s, name, role, PASSWORD, utcnow(), site)
            self.tokens = {
                "renmin": create_agent_token(s, "his-db1", "renmin"),
                "zhongyi": create_agent_token(s, "zy-app1", "zhongyi"),
            }

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def browser(self) -> TestClient:
        return TestClient(self.app, base_url="http://console.test")

    def login(self, name: str, client: TestClient | None = None) -> TestClient:
        c = client or self.browser()
        page = c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"name": name, "password": PASSWORD, "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
        return c

    def report(self, site: str, agent: str, items: list[dict[str, Any]]) -> None:
        r = self.client.post(
            "/api/v1/reports",
            json={"agent": agent, "version": "0.1", "items": items},
            headers={"Authorization": f"Bearer {self.tokens[site]}"},
        )
        assert r.status_code == 200, r.text


def incident(key: str, severity: str = "critical", host: str = "his-db1") -> dict[str, Any]:
    return {
        "type": "incident",
        "key": key,
        "state": "open",
        "trigger": 1,
        "severity": severity,
        "scope": "hospital" if severity == "critical" else "host",
        "host": host,
        "title_zh": "HIS 数据库服务器宕机",
        "title_en": "HIS database server down",
        "observed_at": utcnow().isoformat(),
    }


def heartbeat(at: datetime, cpu: float, rtt: float) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "observed_at": at.isoformat(),
        "interval_s": 30,
        "snapshot": {
            "observations": [
                {"check": "host.cpu", "subject": "cpu", "ok": True, "value": cpu},
                {"check": "host.memory", "subject": "memory", "ok": True, "value": 40.0},
                {"check": "ping.reachable", "subject": "10.1.0.1", "ok": True, "value": 0.0, "rtt_ms": rtt},
                {"check": "db.connect", "subject": "his", "ok": True, "value": 12.0},
                {"check": "snmp.reachable", "subject": "core-sw", "ok": True, "value": None},
                {"check": "snmp.interface", "subject": "core-sw/Gi1/0/1", "ok": True, "value": 1},
                {"check": "snmp.interface", "subject": "core-sw/Gi1/0/2", "ok": False, "value": 2},
                {"check": "av.protection", "subject": "clamd", "ok": True, "value": None},
            ]
        },
    }


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    c = Console(tmp_path)
    yield c
    c.close()


def test_pages_need_a_login_and_the_login_form_needs_its_csrf_token(console: Console) -> None:
    c = console.browser()
    r = c.get("/cases/1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/cases/1"
    r = c.post("/login", data={"name": "mgr", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303 and "error=csrf" in r.headers["location"]
    assert "hg_session" not in c.cookies
    # A foreign site's form with a stolen token is refused too (Origin checked).
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"name": "mgr", "password": PASSWORD, "csrf": csrf_of(page.text)},
        headers={"Origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert "error=csrf" in r.headers["location"]


def test_session_cookie_and_security_headers(console: Console) -> None:
    c = console.browser()
    page = c.get("/login")
    r = c.post("/login", data={"name": "mgr", "password": PASSWORD, "csrf": csrf_of(page.text)}, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "hg_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain http on loopback; https sets Secure
    home = c.get("/")
    csp = home.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert home.headers["x-frame-options"] == "DENY" and home.headers["x-content-type-options"] == "nosniff"
    assert home.headers["cache-control"] == "no-store"
    # Nothing loads from elsewhere: every script and stylesheet is under /static.
    assert not re.search(r'(src|href)="(https?:)?//', home.text)


def test_https_sets_secure_cookies(tmp_path: Path) -> None:
    app = create_app(ServerSettings(data_dir=tmp_path))
    with TestClient(app, base_url="https://console.test") as c:
        with app.state.db.session() as s:
            users.create_user(s, "mgr", "service_manager", PASSWORD, utcnow())
        page = c.get("/login")
        assert "secure" in page.headers["set-cookie"].lower()
        r = c.post(
            "/login", data={"name": "mgr", "password": PASSWORD, "csrf": csrf_of(page.text)}, follow_redirects=False
        )
        assert "secure" in r.headers["set-cookie"].lower()


def test_lockout_after_repeated_failures_is_shown(console: Console) -> None:
    c = console.browser()
    for _ in range(users.MAX_FAILURES):
        page = c.get("/login")
        r = c.post("/login", data={"name": "eng", "password": "wrong-pass", "csrf": csrf_of(page.text)})
    assert "已锁定" in r.text
    page = c.get("/login")
    r = c.post("/login", data={"name": "eng", "password": PASSWORD, "csrf": csrf_of(page.text)})
    assert "已锁定" in r.text and "hg_session" not in c.cookies


def test_actions_need_the_session_csrf_token(console: Console) -> None:
    console.report("renmin", "his-db1", [incident("host/his-db1/down")])
    c = console.login("mgr")
    r = c.post("/cases/1/do", data={"action": "acknowledge", "csrf": "forged"}, headers=HTML)
    assert r.status_code == 403
    assert "确认响应" in c.get("/cases/1").text  # still not acknowledged: the button is there
    r = c.post("/lang", data={"lang": "en"}, headers=HTML)
    assert r.status_code == 403


def test_viewer_sees_only_its_own_site(console: Console) -> None:
    console.report("renmin", "his-db1", [incident("host/his-db1/down")])
    console.report("zhongyi", "zy-app1", [incident("host/zy-app1/down", "urgent", "zy-app1")])
    zy = console.login("zhongyi-it")
    home = zy.get("/").text
    assert 'data-site="zhongyi"' in home and 'data-site="renmin"' not in home
    assert zy.get("/cases/1", headers=HTML).status_code == 404
    assert zy.get("/sites/renmin", headers=HTML).status_code == 404
    assert zy.get("/hosts/1", headers=HTML).status_code == 404
    assert zy.get("/events?page=site:renmin").status_code == 404
    assert zy.get("/cases/1/review.md").status_code == 404
    r = zy.post("/cases/1/do", data={"action": "step", "step": "confirm_leadership", "csrf": csrf_of(home)})
    assert r.status_code == 404
    assert zy.get("/cases/2").status_code == 200
    mgr = console.login("mgr")
    home = mgr.get("/").text
    assert 'data-site="zhongyi"' in home and 'data-site="renmin"' in home
    # The worst case first, in red.
    assert home.index('data-site="renmin"') < home.index('data-site="zhongyi"')
    assert re.search(r'class="tile sev-critical[^"]*" data-site="renmin"', home)


def test_buttons_and_actions_follow_the_plan_roles(console: Console) -> None:
    console.report("renmin", "his-db1", [incident("host/his-db1/down")])
    eng = console.login("eng")
    page = eng.get("/cases/1").text
    steps = re.findall(r'data-step="([^"]+)"', page)
    forms = re.findall(r'name="step" value="([^"]+)"', page)
    assert steps and forms and set(forms) < set(steps)  # some steps are not the engineer's to do
    manager_only = next(k for k in steps if k not in forms)
    r = eng.post("/cases/1/do", data={"action": "step", "step": manager_only, "csrf": csrf_of(page)})
    assert "is done by a service_manager" in r.text  # refused by the plan engine, shown on the page
    mgr = console.login("mgr")
    page = mgr.get("/cases/1").text
    assert manager_only in re.findall(r'name="step" value="([^"]+)"', page)
    r = mgr.post("/cases/1/do", data={"action": "step", "step": manager_only, "note": "ok", "csrf": csrf_of(page)})
    assert r.status_code == 200 and "✔ mgr" in r.text
    r = mgr.post("/cases/1/do", data={"action": "acknowledge", "csrf": csrf_of(page)})
    assert "btn-acknowledge" not in r.text and "已响应" in r.text
    viewer = console.login("renmin-it")
    page = viewer.get("/cases/1").text
    assert "btn-acknowledge" not in page and "btn-resolve" not in page
    r = viewer.post("/cases/1/do", data={"action": "resolve", "csrf": csrf_of(page)}, headers=HTML)
    assert r.status_code == 403


def test_charts_draw_the_stored_history(console: Console) -> None:
    now = utcnow()
    beats = [heartbeat(now - timedelta(minutes=60 - 5 * i), cpu=10.0 * i, rtt=1.0 + i) for i in range(10)]
    console.report("renmin", "his-db1", beats)
    c = console.login("eng")
    page = c.get("/hosts/1").text
    charts = dict(re.findall(r'data-chart="([a-z_]+)".*?<polyline[^>]*points="([^"]+)"', page, re.S))
    assert {"cpu", "memory", "ping_loss", "ping_rtt", "db"} <= set(charts)
    cpu = [tuple(map(float, p.split(","))) for p in charts["cpu"].split()]
    assert len(cpu) == 10
    xs, ys = [p[0] for p in cpu], [p[1] for p in cpu]
    assert xs == sorted(xs) and len(set(xs)) == 10  # in time order, one point per heartbeat
    # CPU rises 0 → 90 % on a 0-100 axis: y falls (SVG y grows downwards), evenly.
    assert ys == sorted(ys, reverse=True)
    steps = [round(a - b, 1) for a, b in itertools.pairwise(ys)]
    assert max(steps) - min(steps) <= 0.2
    # The last heartbeat is 15 minutes old (interval 30 s): the tile counts the agent silent.
    assert re.search(r'data-site="renmin".*?<b class="silent">1 ', c.get("/").text, re.S)
    site = c.get("/sites/renmin").text
    assert 'class="port down" title="Gi1/0/2"' in site and 'class="port up" title="Gi1/0/1"' in site
    assert "av.protection" in site and "db.connect" in site


def test_language_is_remembered_per_user(console: Console) -> None:
    c = console.login("eng")
    page = c.get("/").text
    assert "总览" in page and 'lang="zh-CN"' in page
    r = c.post("/lang", data={"lang": "en", "next": "/", "csrf": csrf_of(page)})
    assert "Overview" in r.text and 'lang="en"' in r.text
    again = console.login("eng")  # a new session (another device) of the same user
    assert "Overview" in again.get("/").text
    assert "总览" in console.login("mgr").get("/").text


def test_audit_log_is_for_admins(console: Console) -> None:
    console.report("renmin", "his-db1", [incident("host/his-db1/down")])
    mgr = console.login("mgr")
    page = mgr.get("/cases/1").text
    mgr.post("/cases/1/do", data={"action": "acknowledge", "csrf": csrf_of(page)})
    assert mgr.get("/audit", headers=HTML).status_code == 403
    rows = console.login("adm").get("/audit").text
    assert "acknowledge" in rows and "login" in rows and "service_manager" not in rows  # roles are shown by name


def test_event_stream_announces_a_change(console: Console) -> None:
    c = console.login("eng")
    with c.stream("GET", "/events?page=overview") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert any(line.startswith("event: hello") for line in [next(lines), next(lines)])
        console.report("renmin", "his-db1", [incident("host/his-db1/down")])
        seen = []
        for line in lines:
            seen.append(line)
            if line == "event: change" or len(seen) > 20:
                break
        assert "event: change" in seen


def test_drills_page_shows_the_schedule(console: Console) -> None:
    console.report("renmin", "his-db1", [heartbeat(utcnow(), 1.0, 1.0)])
    page = console.login("eng").get("/drills").text
    assert 'id="schedule"' in page and "/sites/renmin" in page
    assert "/sites/zhongyi" not in console.login("renmin-it").get("/drills").text


def test_review_fields_and_exports_after_recovery(console: Console) -> None:
    pytest.importorskip("hisguard.server.domain.review")
    console.report("renmin", "his-db1", [incident("host/his-db1/down")])
    console.report("renmin", "his-db1", [{**incident("host/his-db1/down"), "state": "resolved"}])
    mgr = console.login("mgr")
    page = mgr.get("/cases/1").text
    assert 'id="review"' in page
    r = mgr.post("/cases/1/review", data={"cause": "电源模块故障", "csrf": csrf_of(page)})
    assert "电源模块故障" in r.text
    md = mgr.get("/cases/1/review.md")
    assert md.status_code == 200 and "电源模块故障" in md.text
    assert "attachment" in md.headers["content-disposition"]


def test_api_tokens_keep_working_beside_sessions(console: Console) -> None:
    console.report("renmin", "his-db1", [incident("host/his-db1/down")])
    r = console.client.get("/api/v1/cases")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/json")
    c = console.login("mgr")  # a session cookie is no API credential
    assert c.get("/api/v1/cases").status_code == 401


def test_login_page_language_choice_before_login(console: Console) -> None:
    c = console.browser()
    assert "登录" in c.get("/login").text
    assert "Log in" in c.get("/login?lang=en").text
    assert "Log in" in c.get("/login").text  # remembered in a cookie until someone logs in


def test_backfill_checklist_after_manual_work_is_the_hospitals_to_tick(tmp_path: Path) -> None:
    clock = ManualClock(utcnow())
    app = create_app(ServerSettings(data_dir=tmp_path, clock_interval=0.1), clock=clock)
    with TestClient(app, base_url="http://console.test") as client:
        with app.state.db.session() as s:
            users.create_user(s, "renmin-it", "viewer", PASSWORD, utcnow(), "renmin")
            users.create_user(s, "eng", "engineer", PASSWORD, utcnow())
            token = create_agent_token(s, "his-db1", "renmin")
        auth = {"Authorization": f"Bearer {token}"}
        down = {**incident("host/his-db1/down", "urgent"), "scope": "department", "departments": ["门诊收费"]}
        client.post("/api/v1/reports", json={"agent": "his-db1", "version": "0.1", "items": [down]}, headers=auth)
        clock.advance(minutes=16)  # 2.7: not recovered in 15 minutes, outpatient billing works by hand
        deadline = time.monotonic() + 10
        advised = None
        while advised is None and time.monotonic() < deadline:
            time.sleep(0.1)
            with app.state.db.session() as s:
                advised = s.scalar(select(CaseEvent.id).where(CaseEvent.kind == "continuity"))
        assert advised is not None, "the 15-minute continuity clock fired"
        up = {**down, "state": "resolved"}
        client.post("/api/v1/reports", json={"agent": "his-db1", "version": "0.1", "items": [up]}, headers=auth)
        console = Console.__new__(Console)
        console.app = app
        viewer = console.login("renmin-it")
        page = viewer.get("/cases/1").text
        assert "数据补录" in page and "门诊收费" in page
        keys = re.findall(r'name="step" value="(backfill\.[^"]+)"', page)
        assert keys, "the hospital's back-fill step has its button for the hospital's IT"
        r = viewer.post("/cases/1/do", data={"action": "step", "step": keys[0], "csrf": csrf_of(page)})
        assert "✔ renmin-it" in r.text
        eng_page = console.login("eng").get("/cases/1").text
        assert "数据补录" in eng_page and not re.findall(r'name="step" value="backfill\.', eng_page)
