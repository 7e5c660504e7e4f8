import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain.ingest import raise_silent_agents
from hisguard.server.domain.tokens import create_agent_token, create_engineer_token
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import HealthSample, Incident, Receipt


@pytest.fixture
def server(tmp_path):
    app = create_app(ServerSettings(data_dir=tmp_path, watchdog_interval=600))
    with TestClient(app) as client:
        db = app.state.db
        with db.session() as s:
            agent = create_agent_token(s, "his-db-01", "renmin")
            other = create_agent_token(s, "ws-07", "renmin")
            eng = create_engineer_token(s, "wang")
        client.tokens = {"agent": agent, "other": other, "engineer": eng}
        client.db = db
        yield client


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def event(key="his-db-01/ping.reachable/198.18.0.2", state="open", **kw):
    body = {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": key,
        "state": state,
        "trigger": 1,
        "severity": "urgent",
        "scope": "department",
        "host": "his-db-01",
        "department": "门诊收费",
        "departments": ["门诊收费"],
        "functions": ["outpatient_billing"],
        "title_zh": "门诊收费工作站 网络不可达",
        "title_en": "Outpatient billing workstation unreachable",
        "observed_at": utcnow().isoformat(),
        "evidence": {"subject": "198.18.0.2", "备注": "中文证据"},
    }
    body.update(kw)
    return body


def post(client, items, token="agent", agent="his-db-01"):
    return client.post(
        "/api/v1/reports", json={"agent": agent, "version": "0.1.0", "items": items}, headers=auth(client.tokens[token])
    )


def count(client, model):
    with client.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_report_stores_incident_with_plan_fields_and_chinese_intact(server):
    r = post(server, [event()])
    assert r.status_code == 200, r.text
    (inc,) = server.get("/api/v1/incidents", headers=auth(server.tokens["engineer"])).json()
    assert inc["trigger"] == 1 and inc["severity"] == "urgent" and inc["scope"] == "department"
    assert inc["department"] == "门诊收费" and inc["functions"] == ["outpatient_billing"]
    assert inc["title_zh"] == "门诊收费工作站 网络不可达" and inc["evidence"]["备注"] == "中文证据"
    assert inc["site"] == "renmin" and inc["status"] == "open" and inc["resolved_at"] is None
    one = server.get(f"/api/v1/incidents/{inc['id']}", headers=auth(server.tokens["engineer"])).json()
    assert one == inc


def test_same_report_twice_is_stored_once_and_redetection_reuses_the_incident(server):
    ev = event()
    assert post(server, [ev]).json()["duplicates"] == 0
    assert post(server, [ev]).json() == {"stored": [ev["id"]], "duplicates": 1}
    post(server, [event(severity="critical", scope="hospital")])  # re-detected, worse
    post(server, [event(severity="routine")])  # never silently lowered
    (inc,) = server.get("/api/v1/incidents", headers=auth(server.tokens["engineer"])).json()
    assert inc["severity"] == "critical"
    post(server, [event(state="resolved")])
    (inc,) = server.get("/api/v1/incidents", headers=auth(server.tokens["engineer"])).json()
    assert inc["status"] == "resolved" and inc["resolved_at"]
    post(server, [event()])  # the same fault again later is a new incident
    assert len(server.get("/api/v1/incidents", headers=auth(server.tokens["engineer"])).json()) == 2


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(trigger=7), "trigger"),
        (lambda e: e.update(severity="panic"), "severity"),
        (lambda e: e.pop("key"), "key"),
        (lambda e: e.update(observed_at="2026-01-01T08:00:00"), "time zone"),
        (lambda e: e.update(unexpected=1), "unexpected"),
    ],
)
def test_malformed_report_is_422_with_reason_and_stores_nothing(server, mutate, reason):
    good, bad = event(), event()
    mutate(bad)
    r = post(server, [good, bad])
    assert r.status_code == 422
    assert reason in r.text
    assert count(server, Incident) == 0 and count(server, Receipt) == 0


def test_not_json_is_422(server):
    r = server.post(
        "/api/v1/reports",
        content=b"{not json",
        headers={**auth(server.tokens["agent"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 422


@pytest.mark.parametrize("headers", [{}, auth("hga_wrong"), {"Authorization": "Basic abc"}])
def test_missing_or_wrong_token_is_401_and_stores_nothing(server, headers):
    r = server.post("/api/v1/reports", json={"agent": "his-db-01", "version": "1", "items": [event()]}, headers=headers)
    assert r.status_code == 401
    assert count(server, Incident) == 0
    assert server.get("/api/v1/incidents", headers=headers).status_code == 401


def test_tokens_are_bound_to_their_role_and_agent(server):
    assert post(server, [event()], token="engineer").status_code == 403
    assert post(server, [event()], token="other").status_code == 403  # ws-07's token posing as his-db-01
    assert server.get("/api/v1/incidents", headers=auth(server.tokens["agent"])).status_code == 403
    assert count(server, Incident) == 0


def hb(at, **kw):
    return {
        "type": "heartbeat",
        "id": str(uuid.uuid4()),
        "observed_at": at.isoformat(),
        "interval_s": 10,
        "hospital_critical": True,
        "snapshot": {
            "version": "0.1.0",
            "observations": [
                {"job": "host", "check": "host.cpu", "subject": "cpu", "ok": True, "value": 12.5},
                {
                    "job": "net",
                    "check": "ping.reachable",
                    "subject": "198.18.0.2",
                    "ok": True,
                    "value": 0,
                    "rtt_ms": 0.4,
                },
            ],
        },
        **kw,
    }


def test_heartbeat_updates_agent_and_keeps_history(server):
    assert post(server, [hb(utcnow())]).status_code == 200
    agents = {a["name"]: a for a in server.get("/api/v1/agents", headers=auth(server.tokens["engineer"])).json()}
    assert agents["his-db-01"]["version"] == "0.1.0" and agents["his-db-01"]["silent"] is False
    assert agents["ws-07"]["last_seen"] is None and agents["ws-07"]["silent"] is True
    with server.db.session() as s:
        (sample,) = s.scalars(select(HealthSample)).all()
        assert sample.data == {
            "host.cpu/cpu": 12.5,
            "ping.reachable/198.18.0.2": 0,
            "rtt:ping.reachable/198.18.0.2": 0.4,
        }


def test_silent_agent_raises_trigger_1_once_and_resolves_when_heard(server):
    post(server, [hb(utcnow() - timedelta(seconds=100))])
    with server.db.session() as s:  # a server that just came back gives agents time to speak
        assert raise_silent_agents(s, utcnow(), 3, listening_since=utcnow() - timedelta(seconds=5)) == []
    with server.db.session() as s:
        assert len(raise_silent_agents(s, utcnow(), 3)) == 1
    with server.db.session() as s:
        assert raise_silent_agents(s, utcnow(), 3) == []  # already open: not again
    (inc,) = server.get("/api/v1/incidents", headers=auth(server.tokens["engineer"])).json()
    assert inc["trigger"] == 1 and inc["scope"] == "hospital" and inc["severity"] == "critical"
    assert "his-db-01" in inc["title_zh"] and inc["status"] == "open"
    post(server, [hb(utcnow())])
    (inc,) = server.get("/api/v1/incidents", headers=auth(server.tokens["engineer"])).json()
    assert inc["status"] == "resolved"


def test_openapi_is_served(server):
    spec = server.get("/openapi.json").json()
    assert "/api/v1/reports" in spec["paths"] and "/api/v1/incidents/{incident_id}" in spec["paths"]


def test_times_are_utc_aware(server):
    post(server, [event(observed_at=datetime(2026, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=8))).isoformat())])
    (inc,) = server.get("/api/v1/incidents", headers=auth(server.tokens["engineer"])).json()
    assert inc["opened_at"].startswith("2026-01-01T00:00:00") and inc["opened_at"].endswith("+00:00")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00", "1969-12-31T00:00:00Z"])
def test_times_out_of_range_are_422_not_500(server, when):
    r = post(server, [event(observed_at=when)])
    assert r.status_code == 422 and "out of range" in r.text
    assert count(server, Incident) == 0


@pytest.mark.parametrize("field", ["key", "host"])
@pytest.mark.parametrize("value", ["\x1e", "   ", "his\x00db"])
def test_blank_or_control_character_names_are_422(server, field, value):
    r = post(server, [event(**{field: value})])
    assert r.status_code == 422 and field in r.text
    assert "visible text" in r.text or "at least 1 character" in r.text  # blanks are stripped first
    assert count(server, Incident) == 0
