"""Inbound alerts: Alertmanager (payload v4) and Zabbix webhooks mapped onto the plan; a real Alertmanager."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from hisguard.server.app import create_app
from hisguard.server.domain.tokens import create_agent_token, create_engineer_token
from hisguard.server.settings import ServerSettings, load_settings
from tests.support.peers import need_binary
from tests.support.procs import ServerProc, free_port, wait_until

INTEROP_TOML = """
[server.interop.prom]
kind = "alertmanager"
[[server.interop.prom.rules]]
match = { alertname = "HisDatabaseSuspect" }
trigger = 3
scope = "hospital"
[[server.interop.prom.rules]]
match = { job = "blackbox-icmp", alertname = "(Probe|Host)Down" }
trigger = 1
[[server.interop.prom.rules]]
match = { alertname = "UpsOnBattery" }
trigger = 6
severity = "urgent"
department = "门诊收费"

[server.interop.zbx]
kind = "zabbix"
default_trigger = 2
[[server.interop.zbx.rules]]
match = { component = "network", scope = "core" }
trigger = 1
scope = "hospital"
"""


def settings_with_interop(tmp_path: Path) -> ServerSettings:
    f = tmp_path / "server.toml"
    f.write_text(f"[server]\nwatchdog_interval = 600\ndata_dir = '{tmp_path}'\n{INTEROP_TOML}", encoding="utf-8")
    return load_settings(f)


@pytest.fixture
def server(tmp_path: Path):
    app = create_app(settings_with_interop(tmp_path))
    with TestClient(app) as client:
        with app.state.db.session() as s:
            client.tokens = {
                "prom": create_agent_token(s, "prom", "renmin"),
                "zbx": create_agent_token(s, "zbx", "renmin"),
                "agent": create_agent_token(s, "his-db-01", "renmin"),
                "engineer": create_engineer_token(s, "wang"),
            }
        yield client


def post(client: TestClient, kind: str, body: Any, token: str) -> httpx.Response:
    return client.post(
        f"/api/v1/interop/{kind}", json=body, headers={"Authorization": f"Bearer {client.tokens[token]}"}
    )


def incidents(client: TestClient) -> dict[str, dict]:
    r = client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {client.tokens['engineer']}"})
    r.raise_for_status()
    return {i["key"]: i for i in r.json()}


def am_alert(name: str, status: str = "firing", fp: str | None = None, **labels: str) -> dict:
    now = datetime.now(timezone.utc)
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} summary"},
        "startsAt": (now - timedelta(minutes=2)).isoformat(),
        "endsAt": now.isoformat() if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": fp or f"{abs(hash((name, tuple(sorted(labels.items()))))):016x}",
    }


def am_hook(*alerts: dict, status: str = "firing") -> dict:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "hisguard",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def test_alertmanager_alerts_map_to_trigger_scope_severity_and_resolve(server: TestClient) -> None:
    down = am_alert("ProbeDown", fp="aa01", job="blackbox-icmp", instance="core-sw-1", department="住院登记")
    suspect = am_alert("HisDatabaseSuspect", fp="aa02", instance="his-db-01:1433")
    ups = am_alert("UpsOnBattery", fp="aa03", instance="ups-1", severity="critical")
    noise = am_alert("NodeClockSkew", fp="aa04", instance="ws-9")
    r = post(server, "alertmanager", am_hook(down, suspect, ups, noise), "prom")
    assert r.status_code == 200, r.text
    assert r.json()["ignored"] == 1 and len(r.json()["opened"]) == 3
    inc = incidents(server)
    assert set(inc) == {"interop/prom/aa01", "interop/prom/aa02", "interop/prom/aa03"}
    eng = {"Authorization": f"Bearer {server.tokens['engineer']}"}
    cases = server.get("/api/v1/cases", headers=eng).json()
    assert sorted(c["trigger"] for c in cases) == [1, 3, 6]
    d = inc["interop/prom/aa01"]
    assert (d["trigger"], d["scope"], d["severity"], d["departments"]) == (1, "department", "urgent", ["住院登记"])
    assert d["host"] == "core-sw-1" and d["site"] == "renmin"
    assert d["title_zh"] == "Prometheus 告警：ProbeDown: ProbeDown summary（core-sw-1）"
    assert d["title_en"] == "Prometheus alert: ProbeDown: ProbeDown summary (core-sw-1)"
    assert d["evidence"]["labels"]["job"] == "blackbox-icmp"
    s = inc["interop/prom/aa02"]
    assert (s["trigger"], s["scope"], s["severity"]) == (3, "hospital", "critical")
    u = inc["interop/prom/aa03"]  # the rule's severity wins over the label's
    assert (u["trigger"], u["severity"], u["department"], u["functions"]) == (
        6,
        "urgent",
        "门诊收费",
        ["outpatient_billing"],
    )
    # The same alert again (Alertmanager repeats) re-detects, it does not add an incident.
    post(server, "alertmanager", am_hook(down), "prom").raise_for_status()
    assert len(incidents(server)) == 3
    r = post(server, "alertmanager", am_hook(am_alert("ProbeDown", "resolved", fp="aa01"), status="resolved"), "prom")
    assert r.json()["resolved"] and incidents(server)["interop/prom/aa01"]["status"] == "resolved"


def test_zabbix_problem_and_recovery(server: TestClient) -> None:
    problem = {
        "event_id": "48151",
        "event_value": "1",
        "event_name": "Core switch unavailable by ICMP ping",
        "host": "core-sw-1",
        "severity": "4",
        "tags": json.dumps([{"tag": "component", "value": "network"}, {"tag": "scope", "value": "core"}]),
    }
    r = post(server, "zabbix", problem, "zbx")
    assert r.status_code == 200, r.text
    inc = incidents(server)["interop/zbx/48151"]
    assert (inc["trigger"], inc["scope"], inc["severity"], inc["host"]) == (1, "hospital", "critical", "core-sw-1")
    other = {**problem, "event_id": "48152", "event_name": "High CPU", "severity": 2, "tags": []}
    post(server, "zabbix", other, "zbx").raise_for_status()
    inc2 = incidents(server)["interop/zbx/48152"]
    # No rule matches: the default trigger; Zabbix severity 2 (warning) → urgent.
    assert (inc2["trigger"], inc2["scope"], inc2["severity"]) == (2, "host", "urgent")
    post(server, "zabbix", {**problem, "event_value": "0"}, "zbx").raise_for_status()
    assert incidents(server)["interop/zbx/48151"]["status"] == "resolved"


@pytest.mark.parametrize(
    ("kind", "body", "token", "status", "says"),
    [
        ("alertmanager", {**am_hook(), "version": "3"}, "prom", 422, "version"),
        ("alertmanager", {"version": "4"}, "prom", 422, "alerts"),
        ("zabbix", {"event_id": "{EVENT.ID}", "event_value": "1"}, "zbx", 422, "unexpanded Zabbix macro"),
        ("zabbix", {"event_id": "1", "event_value": "1", "tags": "not json"}, "zbx", 422, "TAGSJSON"),
        ("alertmanager", am_hook(), "agent", 403, "not an alert source"),
        ("alertmanager", am_hook(), "zbx", 403, "configured as zabbix"),
        ("zabbix", {"event_id": "1", "event_value": "1"}, "engineer", 403, "agent token"),
    ],
)
def test_bad_posts_are_refused_with_reason_and_store_nothing(server, kind, body, token, status, says) -> None:
    r = post(server, kind, body, token)
    assert r.status_code == status and says in r.text
    assert incidents(server) == {}


def test_bad_rule_pattern_is_a_configuration_error(tmp_path: Path) -> None:
    from hisguard.tomlconfig import ConfigError

    f = tmp_path / "s.toml"
    f.write_text(
        '[server.interop.p]\nkind = "alertmanager"\n[[server.interop.p.rules]]\nmatch = { a = "(" }\ntrigger = 1\n'
    )
    with pytest.raises(ConfigError, match="bad regular expression"):
        load_settings(f)


def test_real_alertmanager_fires_at_the_webhook(tmp_path: Path) -> None:
    am = need_binary("prometheus-alertmanager")
    server = ServerProc(tmp_path / "server", extra_config=INTEROP_TOML)
    token = server.agent_token("prom", "renmin")
    server.start()
    port = free_port()
    conf = tmp_path / "alertmanager.yml"
    conf.write_text(
        "route:\n  receiver: hisguard\n  group_by: ['alertname', 'instance']\n"
        "  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n  - name: hisguard\n    webhook_configs:\n"
        f"      - url: '{server.url}/api/v1/interop/alertmanager'\n"
        "        send_resolved: true\n"
        f"        http_config:\n          authorization:\n            credentials: '{token}'\n"
    )
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            am,
            f"--config.file={conf}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v2"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "alertmanager.log").read_text()[-2000:])
            try:
                return httpx.get(f"{api}/status", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, 0.2, "Alertmanager to start")
        labels = {"alertname": "HisDatabaseSuspect", "instance": "his-db-01:1433", "job": "mssql"}
        start = datetime.now(timezone.utc)
        alert = {"labels": labels, "annotations": {"summary": "HIS 库置疑"}, "startsAt": start.isoformat()}
        httpx.post(f"{api}/alerts", json=[alert], timeout=5).raise_for_status()

        def opened() -> list[dict]:
            return [i for i in server.incidents() if i["key"].startswith("interop/prom/")]

        inc = wait_until(opened, 30, 0.3, "the incident from Alertmanager")[0]
        assert (inc["trigger"], inc["scope"], inc["severity"]) == (3, "hospital", "critical")
        assert inc["host"] == "his-db-01:1433" and "HIS 库置疑" in inc["title_zh"]
        # The plan engine took it up: a case with the mapped trigger, started (critical).
        case = wait_until(lambda: [c for c in server.get("/cases") if c["trigger"] == 3], 10, 0.3, "the case")[0]
        assert case["severity"] == "critical" and case["site"] == "renmin"
        # The alert ends: Alertmanager sends it resolved, the incident resolves.
        ended = {**alert, "endsAt": datetime.now(timezone.utc).isoformat()}
        httpx.post(f"{api}/alerts", json=[ended], timeout=5).raise_for_status()
        wait_until(lambda: opened()[0]["status"] == "resolved", 30, 0.3, "the incident to resolve")
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()
