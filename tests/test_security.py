"""Who may write, how much and how often, the headers every answer carries, tokens revoked and
rotated, and secrets that never reach a log or a report."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain.tokens import create_agent_token, create_engineer_token, revoke
from hisguard.server.security import TokenBuckets
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import Case, Incident
from tests.support import pg
from tests.support.procs import AgentProc, ServerProc, wait_until

WRITE = {"POST", "PUT", "PATCH", "DELETE"}


def incident(key: str = "renmin/his-db/db.connect", **kw: Any) -> dict[str, Any]:
    body = {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": key,
        "state": "open",
        "trigger": 3,
        "severity": "urgent",
        "scope": "department",
        "host": "his-db-01",
        "department": "门诊收费",
        "departments": ["门诊收费"],
        "title_zh": "数据库连接失败",
        "title_en": "Database connection failed",
        "observed_at": utcnow().isoformat(),
    }
    body.update(kw)
    return body


class App:
    def __init__(self, tmp_path: Path, **security: Any) -> None:
        settings = ServerSettings.model_validate({"data_dir": str(tmp_path), "security": security})
        self.app = create_app(settings)
        self.client = TestClient(self.app)
        self.client.__enter__()
        self.db = self.app.state.db

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def agent(self, name: str, site: str) -> str:
        with self.db.session() as s:
            return create_agent_token(s, name, site)

    def person(self, name: str, role: str, site: str | None = None) -> str:
        with self.db.session() as s:
            return create_engineer_token(s, name, role, site)

    def call(self, method: str, path: str, token: str | None, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, path, json=body, headers=headers)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = App(tmp_path, rate_per_token=1000, rate_burst=1000)
    yield a
    a.close()


def write_routes(app: App, case_id: int) -> list[tuple[str, str]]:
    out = []
    for path, ops in app.app.openapi()["paths"].items():
        if path.startswith("/api/v1"):
            path = re.sub(r"\{[^}]+\}", "1", path.replace("{case_id}", str(case_id)))
            out.extend((m.upper(), path) for m in sorted(ops) if m.upper() in WRITE)
    return out


def test_every_write_endpoint_rejects_missing_revoked_foreign_and_wrong_role_tokens(app: App) -> None:
    agent = app.agent("his-db-01", "renmin")
    other_site_agent = app.agent("his-db-01", "xiehe")  # same name, another hospital
    engineer = app.person("li", "engineer")
    admin = app.person("root", "admin")
    viewer_here = app.person("zhang", "hospital_contact", "renmin")
    viewer_elsewhere = app.person("qian", "hospital_contact", "xiehe")
    r = app.call("POST", "/api/v1/reports", agent, {"agent": "his-db-01", "version": "t", "items": [incident()]})
    assert r.status_code == 200
    with app.db.session() as s:
        case_id = s.scalar(select(Case.id))
    assert case_id
    with app.db.session() as s:
        assert revoke(s, "engineer", "root") == 1
    routes = write_routes(app, case_id)
    assert len(routes) >= 10 and ("POST", "/api/v1/reports") in routes
    checked = 0
    for method, path in routes:
        for token, expect in ((None, {401}), ("hge_" + "x" * 43, {401}), (admin, {401})):
            r = app.call(method, path, token, {})
            assert r.status_code in expect, (method, path, token and token[:4], r.status_code, r.text)
            checked += 1
        if path == "/api/v1/reports":
            for person in (engineer, viewer_here):
                assert app.call(method, path, person, {}).status_code == 403
        elif "/interop/" not in path:
            r = app.call(method, path, agent, {})
            assert r.status_code == 403, (method, path, r.status_code)
        if f"/cases/{case_id}" in path:
            r = app.call(method, path, viewer_elsewhere, {"reason": "x", "severity": "critical", "text": "x"})
            assert r.status_code in (403, 404, 422), (method, path, r.status_code)
            assert r.status_code != 422 or "detail" in r.json()
    assert checked == 3 * len(routes)
    # Another site's agent token cannot report as this agent (nor the interop endpoints without a source).
    r = app.call(
        "POST", "/api/v1/reports", other_site_agent, {"agent": "his-db-02", "version": "t", "items": [incident("x")]}
    )
    assert r.status_code == 403
    for path in ("/api/v1/interop/alertmanager", "/api/v1/interop/zabbix"):
        assert app.call("POST", path, agent, {}).status_code in (403, 404)
    with app.db.session() as s:
        assert [i.key for i in s.scalars(select(Incident))] == ["renmin/his-db/db.connect"]


def test_security_headers_on_api_console_and_errors(app: App) -> None:
    for path in ("/healthz", "/api/v1/incidents", "/nonexistent"):
        r = app.client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert app.client.get("/api/v1/incidents").headers["cache-control"] == "no-store"
    assert "content-security-policy" not in app.client.get("/docs").headers  # its scripts come from a CDN
    assert "strict-transport-security" not in app.client.get("/healthz").headers  # plain http here


def test_body_over_the_limit_is_413_declared_or_streamed(tmp_path: Path) -> None:
    a = App(tmp_path, max_body_bytes=4096, rate_per_token=1000, rate_burst=1000)
    try:
        token = a.agent("ws-01", "renmin")
        big = {"agent": "ws-01", "version": "t", "items": [incident(evidence={"x": "y" * 5000})]}
        r = a.call("POST", "/api/v1/reports", token, big)
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
            yield b'{"agent": "ws-01", "version": "t", "items": ['
            for _ in range(10):
                yield b" " * 1000

        r = a.client.post(
            "/api/v1/reports",
            content=chunks(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        with a.db.session() as s:
            assert s.scalar(select(Incident.id)) is None
        small = {"agent": "ws-01", "version": "t", "items": [incident()]}
        assert a.call("POST", "/api/v1/reports", token, small).status_code == 200
    finally:
        a.close()


def test_rate_limit_per_token_answers_429_with_retry_after(tmp_path: Path) -> None:
    a = App(tmp_path, rate_per_token=2, rate_burst=5)
    try:
        one, two = a.agent("ws-01", "renmin"), a.agent("ws-02", "renmin")
        codes = [a.call("GET", "/api/v1/incidents", one).status_code for _ in range(8)]
        assert codes[:5] == [403] * 5 and set(codes[5:]) == {429}  # agent tokens may not list; still counted
        r = a.call("GET", "/api/v1/incidents", one)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 2
        assert a.call("GET", "/api/v1/incidents", two).status_code == 403  # another token has its own bucket
        time.sleep(1.1)
        assert a.call("GET", "/api/v1/incidents", one).status_code == 403  # refilled
    finally:
        a.close()


def test_token_buckets_refill_at_the_rate() -> None:
    b = TokenBuckets(rate=10, burst=3)
    assert [b.take("k", now=0.0) for _ in range(3)] == [0, 0, 0]
    assert b.take("k", now=0.0) == pytest.approx(0.1)
    assert b.take("k", now=0.1) == 0
    assert b.take("other", now=0.1) == 0


def test_agent_backs_off_on_429_for_the_time_the_server_asks(tmp_path: Path) -> None:
    import asyncio

    from hisguard.agent.config import load_config
    from hisguard.agent.delivery import DeliveryError, Sender
    from hisguard.agent.store import StateStore

    srv = ServerProc(tmp_path / "srv", extra_config="[server.security]\nrate_per_token = 0.2\nrate_burst = 1\n")
    srv.start()
    try:
        token = srv.agent_token("ws-01", "renmin")
        cfg = tmp_path / "agent.toml"
        cfg.write_text(f'[agent]\nname = "ws-01"\nstate_dir = "s"\n[server]\nurl = "{srv.url}"\ntoken = "{token}"\n')
        conf = load_config(cfg)
        store = StateStore(conf.agent.state_dir / "agent.sqlite3")
        sender = Sender(conf, store, token)
        store.enqueue(incident("k1"))

        async def go() -> float:
            try:
                assert await sender.flush() == 1
                store.enqueue(incident("k2"))
                with pytest.raises(DeliveryError) as err:
                    await sender.flush()
                return err.value.retry_after
            finally:
                await sender.aclose()

        assert asyncio.run(go()) >= 4  # one request per 5 s: the server asks for ~5 s
        assert store.backlog() == 1  # kept for later
    finally:
        srv.stop()


def test_token_revoke_and_rotate_from_the_command_line(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "srv").start()
    try:
        old = srv.agent_token("ws-01", "renmin")
        batch = {"agent": "ws-01", "version": "t", "items": [incident("k1")]}

        def post(token: str) -> int:
            r = httpx.post(f"{srv.url}/api/v1/reports", json=batch, headers={"Authorization": f"Bearer {token}"})
            return r.status_code

        assert post(old) == 200
        new = srv.cli("token", "rotate", "--agent", "ws-01", "--site", "renmin")
        assert new.startswith("hga_") and new != old
        assert post(old) == 401 and post(new) == 200
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "hisguard.server.cli",
                "token",
                "revoke",
                "--agent",
                "ws-01",
                "--site",
                "renmin",
                "--config",
                str(srv.config),
            ],
            env=srv.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "1 token(s) revoked" in out
        assert post(new) == 401
        assert srv.cli("token", "revoke", "--engineer", "tester").endswith("1 token(s) revoked")
        r = httpx.get(f"{srv.url}/api/v1/incidents", headers={"Authorization": f"Bearer {srv.engineer_token}"})
        assert r.status_code == 401
    finally:
        srv.stop()


# -- secrets ------------------------------------------------------------------------------------
PG_PASSWORD = "PgS3cret-" + uuid.uuid4().hex[:8]
SMTP_PASSWORD = "SmtpS3cret-" + uuid.uuid4().hex[:8]
SNMP_AUTH = "SnmpAuthS3cret-" + uuid.uuid4().hex[:8]
SNMP_PRIV = "SnmpPrivS3cret-" + uuid.uuid4().hex[:8]
DB_PASSWORD = "DbS3cret-" + uuid.uuid4().hex[:8]


class DebugServer(ServerProc):
    def start(self) -> DebugServer:
        cmd = [sys.executable, "-m", "hisguard.server.cli", "run", "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--config", str(self.config), "--log-level", "DEBUG", "--db", str(self.db_url)]
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_until(self._healthy, 30, what="server /healthz")
        return self


def test_secrets_never_reach_logs_reports_or_the_api_at_debug_level(tmp_path: Path) -> None:
    from tests.support.procs import free_port

    with pg.database("hisguard_secrets") as url:
        url = url.replace("root@", f"root:{PG_PASSWORD}@")  # trust authentication ignores it; it is in the URL
        extra = (
            f'[server.notify]\nsmtp_port = {free_port()}\nsmtp_user = "hisguard"\nsmtp_password = "{SMTP_PASSWORD}"\n'
        )
        extra += '[server.sites."*".contacts.a]\nemail = "a@vendor.example"\n[server.sites."*"]\ntiers = [["a"]]\n'
        srv = DebugServer(tmp_path / "srv", db_url=url, extra_config=extra).start()
        token = srv.agent_token("his-db-01", "renmin")
        dead = free_port()
        agent_conf = f"""
[agent]
name = "his-db-01"
state_dir = "state"
heartbeat_interval = 1
log_level = "DEBUG"
hospital_critical = true

[server]
url = "{srv.url}"
token_env = "HG_TEST_TOKEN"
timeout = 2
retry_max = 1

[[probe.database]]
name = "his-db"
dialect = "postgresql"
host = "127.0.0.1"
port = 5432
user = "no_such_login_{uuid.uuid4().hex[:6]}"
password = "{DB_PASSWORD}"
databases = ["test"]
login_failure = "incident"
interval = 1
timeout = 1
fail_after = 1
fail_window = 1

[[probe.snmp]]
name = "switches"
interval = 1
timeout = 1
traps = false
fail_after = 1
fail_window = 1
[[probe.snmp.devices]]
name = "core"
address = "127.0.0.1"
port = {dead}
version = "3"
v3 = {{ user = "monitor", auth_key = "{SNMP_AUTH}", priv_protocol = "AES", priv_key = "{SNMP_PRIV}" }}
"""
        import os

        os.environ["HG_TEST_TOKEN"] = token
        agent = AgentProc(tmp_path / "agent", agent_conf)
        try:
            agent.start()
            wait_until(lambda: srv.incidents(), 30, interval=0.5, what="an incident from the agent")
            time.sleep(3)  # a few more rounds, heartbeats and deliveries at DEBUG
            once, check = (
                subprocess.run(
                    [sys.executable, "-m", "hisguard.agent.cli", command, "-c", str(agent.config)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    cwd=agent.workdir,
                )
                for command in ("once", "check-config")
            )
            api = "".join(
                httpx.get(f"{srv.url}/api/v1{p}", headers={"Authorization": f"Bearer {srv.engineer_token}"}).text
                for p in ("/incidents", "/cases", "/agents")
            )
        finally:
            agent.stop()
            srv.stop()
            os.environ.pop("HG_TEST_TOKEN", None)
        from sqlalchemy import create_engine

        engine = create_engine(url)
        with engine.connect() as conn:
            tables = [r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            dump = "".join(str(conn.execute(text(f'SELECT * FROM "{t}"')).all()) for t in tables)
        engine.dispose()
        spool = (agent.workdir / "state" / "agent.sqlite3").read_bytes().decode("utf-8", "replace")
        texts = {
            "server log": srv.log.read_text(errors="replace"),
            "agent log": agent.output(),
            "agent once": once.stdout + once.stderr,
            "check-config": check.stdout + check.stderr,
            "API": api,
            "server database": dump,
            "agent spool": spool,
        }
        assert "DEBUG" in texts["agent log"] and "DEBUG" in texts["server log"]
        assert "his-db" in dump  # the reports did arrive
        for secret in (token, token[4:], PG_PASSWORD, SMTP_PASSWORD, SNMP_AUTH, SNMP_PRIV, DB_PASSWORD):
            leaks = [where for where, body in texts.items() if secret in body]
            assert not leaks, f"secret {secret[:6]}… found in {leaks}"
