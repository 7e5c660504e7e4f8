"""Fuzzing the API from its own OpenAPI spec with schemathesis: requests generated for every
operation (valid and invalid bodies, parameters and tokens of every kind) → never a 5xx, and
nothing malformed stored.

HISGUARD_FUZZ_REQUESTS sets how many requests to aim at (default 6,000: at least 5,000 are sent, in
about a minute); bench/fuzz_api.py runs the same with any count and prints the figures.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hisguard.plan import Scope, Severity
from hisguard.report import ReportBatch, utcnow
from hisguard.server.app import create_app
from hisguard.server.domain.ingest import apply_batch
from hisguard.server.domain.tokens import authenticate, create_agent_token, create_engineer_token
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import AgentStatus, Case, Incident, Receipt

schemathesis = pytest.importorskip("schemathesis")

AGENT = "fuzz-agent"


def seed_incident(n: int) -> dict[str, Any]:
    return {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": f"fuzz/{n}",
        "state": "open",
        "trigger": 1 + n % 6,
        "severity": ["critical", "urgent", "routine"][n % 3],
        "scope": ["hospital", "department", "host"][n % 3],
        "host": f"host-{n}",
        "department": "门诊收费",
        "departments": ["门诊收费"],
        "title_zh": "种子",
        "title_en": "seed",
        "observed_at": utcnow().isoformat(),
    }


SEEDS = [seed_incident(n) for n in range(6)]


def fuzz(data_dir: Path, total: int) -> dict[str, Any]:
    """Run about `total` generated requests over all operations; return what happened."""
    settings_ = ServerSettings.model_validate(
        {"data_dir": str(data_dir), "security": {"rate_per_token": 1e5, "rate_burst": 100000}}
    )
    app = create_app(settings_)
    db = app.state.db
    db.migrate()
    with db.session() as s:
        tokens = {
            "agent": create_agent_token(s, AGENT, "renmin"),
            "engineer": create_engineer_token(s, "li", "engineer"),
            "service_manager": create_engineer_token(s, "wang", "service_manager"),
            "admin": create_engineer_token(s, "root", "admin"),
            "hospital_contact": create_engineer_token(s, "zhang", "hospital_contact", "renmin"),
        }
    tokens["bogus"] = "hga_" + "A" * 43
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [r.ok() for r in schema.get_all_operations()]
    per_op = max(5, total // len(ops))
    statuses: Counter[int] = Counter()
    by_op: Counter[str] = Counter()
    server_errors: list[str] = []
    acked: set[str] = set()
    # A few real cases so generated ids sometimes hit something.
    with db.session() as s:
        who = authenticate(s, tokens["agent"])
        assert who is not None
        apply_batch(s, who, ReportBatch.model_validate({"agent": AGENT, "version": "t", "items": SEEDS}))
    try:
        for op in ops:
            _fuzz_operation(op, per_op, tokens, statuses, by_op, server_errors, acked)
    finally:
        from schemathesis.python import asgi

        asgi.shutdown_lifespans()  # the app's lifespan, started by schemathesis for its requests
    with db.session() as s:
        incidents = list(s.scalars(select(Incident)))
        receipts = list(s.scalars(select(Receipt.id)))
        cases = list(s.scalars(select(Case)))
        snapshots = list(s.scalars(select(AgentStatus.snapshot)))
    db.dispose()
    return {
        "ops": len(ops),
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "by_op": by_op,
        "server_errors": server_errors,
        "acked": acked,
        "incidents": incidents,
        "receipts": receipts,
        "cases": cases,
        "snapshots": snapshots,
    }


def _fuzz_operation(
    op: Any,
    per_op: int,
    tokens: dict[str, str],
    statuses: Counter[int],
    by_op: Counter[str],
    server_errors: list[str],
    acked: set[str],
) -> None:
    label = f"{op.method.upper()} {op.path}"

    @settings(
        max_examples=per_op, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=op.as_strategy(), who=st.sampled_from(sorted(tokens)), aim=st.integers(0, 9))
    def run(case: Any, who: str, aim: int) -> None:
        if op.path == "/api/v1/reports" and isinstance(case.body, dict) and aim < 7:
            case.body["agent"] = AGENT  # mostly this token's agent, so batches get past the name check
            who = "agent" if aim < 6 else who
        for name in ("case_id", "incident_id", "agent_id", "drill_id", "window_id"):
            if name in (case.path_parameters or {}) and aim < 5 and isinstance(case.path_parameters[name], int):
                case.path_parameters[name] = case.path_parameters[name] % 8  # often an id that exists
        headers = {"Authorization": f"Bearer {tokens[who]}"} if aim != 9 else {}
        try:
            response = case.call(headers=headers)
        except Exception as exc:  # the app raised: a real server answers 500
            server_errors.append(f"{label} as {who}: {exc.__class__.__name__}: {exc} ({case.path_parameters})")
            return
        statuses[response.status_code] += 1
        by_op[label] += 1
        if response.status_code >= 500:
            server_errors.append(f"{label} as {who}: {response.status_code} {response.text[:300]}")
        if op.path == "/api/v1/reports" and response.status_code == 200:
            acked.update(response.json()["stored"])

    run()


def check_nothing_malformed_stored(out: dict[str, Any]) -> None:
    severities = {s.value for s in Severity}
    scopes = {s.value for s in Scope}
    for inc in out["incidents"]:
        assert 1 <= inc.trigger <= 6 and inc.severity in severities and inc.scope in scopes, inc.key
        assert inc.status in ("open", "resolved") and inc.key.strip() and inc.site.strip()
        assert inc.title_zh.strip() and inc.title_en.strip() and inc.opened_at.tzinfo is not None
        assert isinstance(inc.departments, list) and isinstance(inc.functions, list)
        assert isinstance(inc.evidence, dict)
    for case in out["cases"]:
        assert case.severity in severities
    for rid in out["receipts"]:
        assert str(uuid.UUID(rid)) == rid
    assert all(isinstance(s, dict) for s in out["snapshots"])
    # Every stored report item was acknowledged to its sender (6 seeds + the generated batches).
    assert set(out["receipts"]) == {s["id"] for s in SEEDS} | out["acked"]


def test_generated_requests_on_every_operation_never_5xx_and_store_nothing_malformed(tmp_path: Path) -> None:
    total = int(os.environ.get("HISGUARD_FUZZ_REQUESTS", "6000"))
    out = fuzz(tmp_path, total)
    assert not out["server_errors"], "\n".join(out["server_errors"][:20])
    assert out["requests"] >= 0.8 * total
    assert len(out["by_op"]) == out["ops"]  # every operation was exercised
    ok = sum(n for code, n in out["statuses"].items() if 200 <= code < 300)
    assert ok > 0 and out["statuses"][401] > 0 and out["statuses"][422] > 0
    check_nothing_malformed_stored(out)
