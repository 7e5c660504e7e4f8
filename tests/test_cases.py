"""Cases: grouping by key, parent/children and outbreak; severity only rises; maintenance holds messages.

Also the shared fixtures of the plan-engine tests: a real SMTP server (aiosmtpd), a real local HTTP
receiver for webhook / WeCom / DingTalk robot payloads, and the app on a hand-moved clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hisguard.server.app import create_app
from hisguard.server.domain.clocks import ManualClock
from hisguard.server.domain.tokens import create_agent_token, create_engineer_token
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import Case, CaseEvent, Notification
from tests.support.peers import need
from tests.support.procs import free_port

SITE = "renmin"
DING_SECRET = "SEC-test-secret"


# --- peers ----------------------------------------------------------------------------------------


class SmtpSink:
    """A real SMTP server (aiosmtpd) on loopback keeping every message it receives."""

    def __init__(self) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            need(False, "needs aiosmtpd (pip install -e .[test])")
            raise
        self.messages: list[tuple[float, EmailMessage]] = []
        self.port = free_port()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.original_content, policy=policy.default)
                sink.messages.append((time.time(), msg))  # type: ignore[arg-type]
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        return [m for _, m in self.messages if address in str(m["To"])]


class HttpSink:
    """A real HTTP server answering like a webhook, a WeCom robot and a DingTalk robot.

    Paths: /hook (any JSON → 200), /wecom/send?key=K, /dingtalk/send?access_token=T (errcode answers;
    DingTalk checks the signature). `fail[path] = n` makes the next n requests to a path fail.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                rec = {"path": parts.path, "query": parse_qs(parts.query), "body": body, "at": time.time()}
                with sink.lock:
                    sink.requests.append(rec)
                    failing = sink.fail.get(parts.path, 0)
                    if failing:
                        sink.fail[parts.path] = failing - 1
                status, answer = 200, {"errcode": 0, "errmsg": "ok"}
                if parts.path.startswith("/dingtalk"):
                    q = rec["query"]
                    ts, sign = q.get("timestamp", [""])[0], q.get("sign", [""])[0]
                    mac = hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
                    if base64.b64encode(mac).decode() != unquote_plus(sign) and sign != base64.b64encode(mac).decode():
                        answer = {"errcode": 310000, "errmsg": "sign not match"}
                if failing:
                    if parts.path.startswith(("/wecom", "/dingtalk")):
                        answer = {"errcode": 45009, "errmsg": "api freq out of limit"}
                    else:
                        status = 503
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def at(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(prefix)]


@pytest.fixture(name="smtp")
def smtp_fixture() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.stop()


@pytest.fixture(name="http")
def http_fixture() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.stop()


def site_settings(smtp: SmtpSink, http: HttpSink, tmp_path: Path, **site: Any) -> ServerSettings:
    """Renmin hospital: three on-call tiers, a service manager, the hospital's IT office."""
    contacts = {
        "li": {"name": "李工", "email": "li@vendor.example"},
        "zhao": {"name": "赵工", "email": "zhao@vendor.example", "wecom": f"{http.url}/wecom/send?key=WK1"},
        "mgr": {
            "name": "王经理",
            "email": "mgr@vendor.example",
            "dingtalk": f"{http.url}/dingtalk/send?access_token=DT1",
            "dingtalk_secret": DING_SECRET,
            "mobile": "13800000000",
        },
        "xxk": {"name": "信息科", "email": "it@hospital.example", "webhook": f"{http.url}/hook"},
    }
    conf = {
        "name_zh": "人民医院",
        "name_en": "Renmin Hospital",
        "contacts": contacts,
        "tiers": [["li"], ["zhao"], ["mgr"]],
        "managers": ["mgr"],
        "hospital": ["xxk"],
        **site,
    }
    return ServerSettings.model_validate(
        {
            "data_dir": str(tmp_path),
            "watchdog_interval": 600,
            "clock_interval": 60,  # the tests fire clocks by hand (runner.tick()) after moving the clock
            "sites": {SITE: conf},
            "notify": {"smtp_port": smtp.port, "interval": 0.2, "backoff": 30, "max_attempts": 3, "timeout": 5},
        }
    )


class Server:
    """The app in-process (its lifespan: migrations, clock runner, dispatcher) on a hand-moved clock."""

    def __init__(self, settings: ServerSettings, clock: ManualClock) -> None:
        self.settings = settings
        self.clock = clock
        self.app: FastAPI = create_app(settings, clock)
        self.client = TestClient(self.app)
        self.client.__enter__()
        self.db = self.app.state.db
        self.tokens: dict[str, str] = {}

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def token(self, who: str, role: str | None = None, site: str | None = None, agent: bool = False) -> str:
        with self.db.session() as s:
            if agent:
                tok = create_agent_token(s, who, site or SITE)
            else:
                tok = create_engineer_token(s, who, role or "engineer", site)
        self.tokens[who] = tok
        return tok

    def post(self, path: str, who: str, body: Any = None) -> Any:
        return self.client.post(f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def get(self, path: str, who: str, **params: Any) -> Any:
        return self.client.get(f"/api/v1{path}", params=params, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def report(self, *events: dict[str, Any], agent: str = "his-db-01") -> Any:
        r = self.post("/reports", agent, {"agent": agent, "version": "0.1.0", "items": list(events)})
        assert r.status_code == 200, r.text
        return r

    def tick(self) -> list[int]:
        return self.app.state.clock_runner.tick()

    def events(self, case_id: int, kind: str) -> list[CaseEvent]:
        with self.db.session() as s:
            return list(s.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id, CaseEvent.kind == kind)))

    def notifications(self, **where: Any) -> list[Notification]:
        with self.db.session() as s:
            q = select(Notification).order_by(Notification.id)
            for k, v in where.items():
                q = q.where(getattr(Notification, k) == v)
            return list(s.scalars(q))


def incident(clock: ManualClock, key: str = "core-sw/ping.reachable/10.0.0.1", state: str = "open", **kw: Any) -> dict:
    body = {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": key,
        "state": state,
        "trigger": 1,
        "severity": "critical",
        "scope": "hospital",
        "host": "core-sw",
        "departments": ["门诊挂号", "门诊收费", "门诊药房", "护士站", "手术室"],
        "functions": [
            "outpatient_registration",
            "outpatient_billing",
            "outpatient_pharmacy",
            "nurse_station",
            "operating_room",
        ],
        "title_zh": "核心交换机 网络不可达",
        "title_en": "Core switch unreachable",
        "observed_at": clock.now().isoformat(),
        "evidence": {"subject": "10.0.0.1"},
    }
    body.update(kw)
    return body


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> Iterator[Server]:
    srv = Server(site_settings(smtp, http, tmp_path), ManualClock())
    srv.token("his-db-01", agent=True)
    srv.token("ws-07", agent=True)
    srv.token("li", "engineer")
    srv.token("mgr", "service_manager")
    yield srv
    srv.close()


def cases_of(srv: Server, **params: Any) -> list[dict[str, Any]]:
    r = srv.get("/cases", "li", **params)
    assert r.status_code == 200, r.text
    return r.json()


# --- tests ----------------------------------------------------------------------------------------


def test_redetection_and_same_key_stay_one_case_and_severity_never_drops(server: Server) -> None:
    server.report(incident(server.clock, severity="urgent", scope="department"))
    server.report(incident(server.clock, severity="critical"))  # re-detected, worse
    server.report(incident(server.clock, severity="routine", scope="host"))  # re-detected, milder
    (case,) = cases_of(server)
    assert case["severity"] == "critical" and case["scope"] == "hospital"
    full = server.get(f"/cases/{case['id']}", "li").json()
    assert len(full["incidents"]) == 1
    assert [e["kind"] for e in full["events"]].count("opened") == 1


def test_children_of_a_failed_parent_join_its_case(server: Server) -> None:
    # Two hosts behind an access switch were reported first (two cases), then the switch with them folded in.
    for h in ("ws-07", "ws-08"):
        server.report(incident(server.clock, key=f"{h}/ping.reachable", host=h, severity="urgent", scope="department"))
    first = min(c["id"] for c in cases_of(server))
    server.report(
        incident(
            server.clock,
            key="acc-sw-2/ping.reachable/10.1.0.1",
            host="acc-sw-2",
            severity="urgent",
            scope="department",
            title_zh="门诊楼接入交换机 网络不可达",
            title_en="Outpatient access switch unreachable",
            evidence={"children": ["ws-07", "ws-08", "ws-09"]},
        )
    )
    # A later child report joins the switch's case too.
    server.report(incident(server.clock, key="ws-09/ping.reachable", host="ws-09", severity="routine", scope="host"))
    (case,) = cases_of(server, status="open")
    assert case["id"] == first  # the earliest report keeps its clocks
    assert case["title"]["en"] == "Outpatient access switch unreachable"
    full = server.get(f"/cases/{case['id']}", "li").json()
    assert sorted(i["host"] for i in full["incidents"]) == ["acc-sw-2", "ws-07", "ws-08", "ws-09"]
    (merged,) = cases_of(server, status="merged")
    assert merged["merged_into"] == case["id"]
    assert {c["status"] for c in server.get(f"/cases/{merged['id']}", "li").json()["clocks"]} == {"cancelled"}


def test_hosts_folded_by_the_agents_topology_join_the_switch_case(server: Server) -> None:
    # The shape agent/topology.py gives a parent: evidence["folded"] = [{check, subject, …}] of its children.
    for ip in ("10.2.0.7", "10.2.0.8"):
        server.report(
            incident(
                server.clock,
                key=f"his-db-01/ping.reachable/{ip}",
                host="his-db-01",
                severity="urgent",
                scope="department",
                evidence={"check": "ping.reachable", "subject": ip},
            )
        )
    unrelated = incident(
        server.clock,
        key="his-db-01/host.disk//data",
        host="his-db-01",
        trigger=2,
        severity="urgent",
        scope="department",
        evidence={"check": "host.disk", "subject": "/data"},
    )
    server.report(unrelated)
    assert len(cases_of(server, status="open")) == 3
    server.report(
        incident(
            server.clock,
            key="his-db-01/snmp.reachable/10.2.0.1",
            host="his-db-01",
            severity="urgent",
            scope="department",
            evidence={
                "check": "snmp.reachable",
                "subject": "10.2.0.1",
                "node": "acc-sw-3",
                "folded": [
                    {"check": "ping.reachable", "subject": "10.2.0.7", "name": "门诊收费 07"},
                    {"check": "ping.reachable", "subject": "10.2.0.8", "name": "门诊收费 08"},
                ],
                "folded_count": 2,
            },
        )
    )
    open_cases = cases_of(server, status="open")
    assert len(open_cases) == 2  # the switch with its two hosts, and the unrelated disk
    switch = next(c for c in open_cases if c["trigger"] == 1)
    keys = sorted(i["key"] for i in server.get(f"/cases/{switch['id']}", "li").json()["incidents"])
    assert keys == [
        "his-db-01/ping.reachable/10.2.0.7",
        "his-db-01/ping.reachable/10.2.0.8",
        "his-db-01/snmp.reachable/10.2.0.1",
    ]


def test_outbreak_incident_groups_host_incidents(server: Server) -> None:
    hosts = [f"ws-{i:02d}" for i in range(1, 6)]
    for h in hosts:
        server.report(
            incident(
                server.clock,
                key=f"{h}/av.detection/eicar",
                host=h,
                trigger=5,
                severity="routine",
                scope="host",
                departments=[],
                functions=[],
                title_zh=f"{h} 检出病毒",
                title_en=f"{h}: virus detected",
            )
        )
    assert len(cases_of(server, status="open")) == 5
    server.report(
        incident(
            server.clock,
            key="outbreak/renmin/5",
            host="renmin",
            trigger=5,
            severity="critical",
            scope="hospital",
            departments=[],
            functions=[],
            title_zh="病毒集中爆发：5 台主机",
            title_en="Virus outbreak: 5 hosts",
            evidence={"incidents": [{"key": f"{h}/av.detection/eicar", "host": h} for h in hosts]},
        )
    )
    (case,) = cases_of(server, status="open")
    assert case["trigger"] == 5 and case["severity"] == "critical" and case["plan"] is not None
    assert len(server.get(f"/cases/{case['id']}", "li").json()["incidents"]) == 6


def test_engineer_raises_severity_with_reason_and_cannot_lower_it(server: Server) -> None:
    server.report(incident(server.clock, severity="routine", scope="host", functions=[], departments=[]))
    (case,) = cases_of(server)
    assert case["plan"] is None
    r = server.post(f"/cases/{case['id']}/severity", "li", {"severity": "urgent", "reason": ""})
    assert r.status_code == 422
    r = server.post(
        f"/cases/{case['id']}/severity", "li", {"severity": "critical", "reason": "院长办公室打来电话：全院停摆"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["severity"] == "critical" and r.json()["plan"]["activated_by"] == "system"
    r = server.post(f"/cases/{case['id']}/severity", "li", {"severity": "urgent", "reason": "looks better"})
    assert r.status_code == 422 and "never lowered" in r.json()["detail"]
    # A milder re-detection does not lower it either.
    server.report(incident(server.clock, severity="routine", scope="host", functions=[], departments=[]))
    assert cases_of(server)[0]["severity"] == "critical"


def test_maintenance_window_holds_notifications_but_records_everything(server: Server, smtp: SmtpSink) -> None:
    now = server.clock.now()
    r = server.post(
        "/maintenance",
        "li",
        {
            "site": SITE,
            "host": "core-sw",
            "starts_at": (now - timedelta(minutes=5)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(),
            "reason": "更换核心交换机电源 / replacing the core switch PSU",
        },
    )
    assert r.status_code == 201, r.text
    server.report(incident(server.clock))
    (case,) = cases_of(server)
    assert case["plan"] is not None  # recording goes on
    rows = server.notifications(case_id=case["id"])
    assert rows and {n.status for n in rows} == {"suppressed"}
    time.sleep(0.5)
    assert smtp.messages == []
    # Another device of the site is not covered by the window.
    server.report(incident(server.clock, key="his-db/ping.reachable/10.0.0.9", host="his-db"))
    other = next(c for c in cases_of(server) if c["id"] != case["id"])
    assert {n.status for n in server.notifications(case_id=other["id"])} <= {"pending", "sending", "sent"}
    with server.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 2


def test_contract_plan_text_overrides_the_default_and_bad_files_are_named(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    from hisguard.server.domain import workflow

    contract = tmp_path / "renmin-plan.toml"
    contract.write_text(
        """
source = "人民医院运维合同 2026 附件三"
[activation.record]
zh = "记录故障现象、影响科室及报告人"
en = "Record the symptoms, the departments hit and who reported it"
[[trigger.1]]
key = "call_noc"
role = "engineer"
zh = "致电院方网络值班室"
en = "Call the hospital's network duty room"
""",
        encoding="utf-8",
    )
    srv = Server(site_settings(smtp, http, tmp_path, plan_file=str(contract)), ManualClock())
    try:
        srv.token("his-db-01", agent=True)
        srv.token("li", "engineer")
        srv.report(incident(srv.clock))
        (case,) = cases_of(srv)
        full = srv.get(f"/cases/{case['id']}", "li").json()
        assert full["plan"]["source"] == "人民医院运维合同 2026 附件三"
        steps = {st["key"]: st for st in full["steps"]}
        assert steps["record"]["text"]["zh"] == "记录故障现象、影响科室及报告人"
        assert steps["activate"]["role"] == "service_manager"  # keys and roles of 2.5 stay
        assert [k for k in steps if k.startswith("t1.")] == ["t1.call_noc"]
        text = srv.get("/plan-text", "li", site=SITE).json()
        assert text["triggers"]["1"][0]["key"] == "call_noc" and len(text["triggers"]["3"]) == 4
    finally:
        srv.close()

    bad = tmp_path / "bad-plan.toml"
    bad.write_text('[[trigger.3]]\nkey = "x"\nrole = "janitor"\nzh = "扫地"\nen = "sweep"\n', encoding="utf-8")
    with pytest.raises(workflow.PlanTextError, match=r"bad-plan.toml: trigger.3\[0\]: role 'janitor'"):
        create_app(site_settings(smtp, http, tmp_path, plan_file=str(bad)), ManualClock())
    bad.write_text("[activation.nonexistent]\nzh = 'x'\nen = 'y'\n", encoding="utf-8")
    workflow.load_plan_text.cache_clear()
    with pytest.raises(workflow.PlanTextError, match=r"activation\.nonexistent: not a step of 2\.5"):
        workflow.load_plan_text(bad)


def test_silent_agent_opens_a_case_and_its_return_resolves_it(server: Server) -> None:
    from hisguard.report import utcnow
    from hisguard.server.domain.ingest import raise_silent_agents

    def heartbeat(at: Any) -> dict[str, Any]:
        return {
            "type": "heartbeat",
            "id": str(uuid.uuid4()),
            "observed_at": at.isoformat(),
            "interval_s": 30,
            "department": "门诊收费",
        }

    server.report(heartbeat(utcnow() - timedelta(minutes=10)))
    with server.db.session() as s:
        assert len(raise_silent_agents(s, utcnow(), 3)) == 1
    (case,) = cases_of(server)
    assert case["key"] == "agent-silent/his-db-01" and case["severity"] == "urgent"
    assert case["departments"] == ["门诊收费"] and case["affected_functions"] == ["outpatient_billing"]
    server.report(heartbeat(utcnow()))
    assert cases_of(server)[0]["status"] == "resolved"
