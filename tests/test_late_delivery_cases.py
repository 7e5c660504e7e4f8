"""A fault that opened and cleared while the server could not hear the agent still becomes a case."""

import uuid

from fastapi.testclient import TestClient

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain.tokens import create_agent_token, create_engineer_token
from hisguard.server.settings import ServerSettings


def item(state, severity="critical", scope="hospital"):
    return {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": "core/ping.reachable/198.18.0.2",
        "state": state,
        "trigger": 1,
        "severity": severity,
        "scope": scope,
        "host": "his-app-01",
        "title_zh": "核心交换机 网络不可达",
        "title_en": "Core switch unreachable",
        "observed_at": utcnow().isoformat(),
    }


def test_open_and_resolved_in_one_batch_is_a_resolved_case_on_record(tmp_path):
    app = create_app(ServerSettings(data_dir=tmp_path, watchdog_interval=600))
    with TestClient(app) as client:
        with app.state.db.session() as s:
            agent = create_agent_token(s, "his-app-01", "renmin")
            eng = create_engineer_token(s, "wang")
        r = client.post(
            "/api/v1/reports",
            json={"agent": "his-app-01", "version": "1", "items": [item("open"), item("resolved")]},
            headers={"Authorization": f"Bearer {agent}"},
        )
        assert r.status_code == 200, r.text
        cases = client.get("/api/v1/cases", headers={"Authorization": f"Bearer {eng}"}).json()
        cases = cases["cases"] if isinstance(cases, dict) else cases
        assert len(cases) == 1
        (case,) = cases
        assert case["status"] == "resolved" and case["severity"] == "critical" and case["trigger"] == 1
