"""GET /metrics: parsed by prometheus-client's own parser in-process, and scraped by a real Prometheus."""

from __future__ import annotations

import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain.tokens import create_agent_token
from hisguard.server.settings import ServerSettings
from tests.support.peers import need_binary
from tests.support.procs import ServerProc, free_port, wait_until


def incident(key: str, trigger: int = 1, severity: str = "critical", state: str = "open", ago: float = 0) -> dict:
    return {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": key,
        "state": state,
        "trigger": trigger,
        "severity": severity,
        "scope": "hospital" if severity == "critical" else "department",
        "host": "his-db-01",
        "title_zh": "核心交换机不可达",
        "title_en": "Core switch unreachable",
        "observed_at": (utcnow() - timedelta(seconds=ago)).isoformat(),
    }


def heartbeat() -> dict:
    return {"type": "heartbeat", "id": str(uuid.uuid4()), "observed_at": utcnow().isoformat(), "interval_s": 30}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_incidents_clocks_agents_and_ingest(tmp_path: Path) -> None:
    app = create_app(ServerSettings(data_dir=tmp_path, watchdog_interval=600))
    with TestClient(app) as client:
        with app.state.db.session() as s:
            token = create_agent_token(s, "his-db-01", "renmin")
            create_agent_token(s, "ws-07", "renmin")  # never reported
        items = [
            incident("a", 1, "critical", ago=15 * 60),  # past the 10-minute critical deadline
            incident("b", 3, "critical"),
            incident("c", 2, "urgent"),
            incident("d", 2, "urgent"),
            incident("d", 2, "urgent", state="resolved"),
            heartbeat(),
        ]
        r = client.post(
            "/api/v1/reports",
            json={"agent": "his-db-01", "version": "t", "items": items},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    m = samples(resp.text)
    assert m[("hisguard_incidents_open", (("severity", "critical"), ("trigger", "1")))] == 1
    assert m[("hisguard_incidents_open", (("severity", "critical"), ("trigger", "3")))] == 1
    assert m[("hisguard_incidents_open", (("severity", "urgent"), ("trigger", "2")))] == 1
    assert m[("hisguard_incidents_open", (("severity", "routine"), ("trigger", "5")))] == 0
    assert m[("hisguard_incidents_opened_total", (("trigger", "2"),))] == 2
    assert m[("hisguard_incidents_overdue", (("severity", "critical"),))] == 1
    assert m[("hisguard_incidents_overdue", (("severity", "urgent"),))] == 0
    assert 15 * 60 - 5 < m[("hisguard_incident_oldest_open_seconds", (("severity", "critical"),))] < 15 * 60 + 60
    assert m[("hisguard_agents", (("state", "reporting"),))] == 1
    assert m[("hisguard_agents", (("state", "never_reported"),))] == 1
    assert m[("hisguard_reports_received_total", (("type", "incident"),))] == 5
    assert m[("hisguard_reports_received_total", (("type", "heartbeat"),))] == 1
    # The plan engine made cases of them; the critical ones started the plan and its response clocks.
    cases_open = {k[1]: v for k, v in m.items() if k[0] == "hisguard_cases_open"}
    assert sum(cases_open.values()) >= 1 and len(cases_open) == 18  # every trigger × severity exported
    assert sum(v for k, v in cases_open.items() if ("severity", "critical") in k) >= 1
    assert m[("hisguard_plans_active", ())] >= 1
    assert m[("hisguard_clocks_pending", (("kind", "response"), ("state", "waiting")))] >= 1


def test_real_prometheus_scrapes_the_server(tmp_path: Path) -> None:
    prom = need_binary("prometheus")
    server = ServerProc(tmp_path / "server").start()
    port = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: hisguard\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prom,
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        token = server.agent_token("his-db-01", "renmin")
        r = httpx.post(
            f"{server.url}/api/v1/reports",
            json={"agent": "his-db-01", "version": "t", "items": [incident("core-switch", 1, "critical")]},
            headers={"Authorization": f"Bearer {token}"},
        )
        r.raise_for_status()

        def query(q: str) -> list:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": q}, timeout=2)
            except httpx.HTTPError:
                return []
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])
            return resp.json()["data"]["result"] if resp.status_code == 200 else []

        result = wait_until(
            lambda: query('hisguard_incidents_open{trigger="1",severity="critical"} == 1'),
            30,
            0.5,
            "Prometheus to have scraped the open incident",
        )
        assert result[0]["metric"]["job"] == "hisguard"
        up = query('up{job="hisguard"}')
        assert up and up[0]["value"][1] == "1"
        assert query('hisguard_reports_received_total{type="incident"}')[0]["value"][1] == "1"
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()


def test_metrics_needs_no_token_but_reveals_no_titles(tmp_path: Path) -> None:
    app = create_app(ServerSettings(data_dir=tmp_path, watchdog_interval=600))
    with TestClient(app) as client:
        with app.state.db.session() as s:
            token = create_agent_token(s, "his-db-01", "renmin")
        client.post(
            "/api/v1/reports",
            json={"agent": "his-db-01", "version": "t", "items": [incident("x")]},
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()
        text = client.get("/metrics").text
    assert "核心交换机" not in text and "his-db-01" not in text
