"""Group commit of agents' reports: concurrent batches share transactions, yet each is answered for itself."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, inspect, select, update

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain import ingest
from hisguard.server.domain.tokens import create_agent_token, create_engineer_token, revoke
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.models import Agent, AgentStatus, HealthSample, Incident, Receipt
from tests.support.reports import incident


class Server:
    def __init__(self, tmp_path: Path) -> None:
        self.app = create_app(ServerSettings(data_dir=tmp_path, watchdog_interval=600))
        self.db = self.app.state.db
        self.db.migrate()
        self.intake = self.app.state.intake

    def agent(self, name: str, site: str = "renmin") -> str:
        with self.db.session() as s:
            return create_agent_token(s, name, site)

    async def post(
        self, client: httpx.AsyncClient, token: str, agent: str, items: list[dict[str, Any]]
    ) -> httpx.Response:
        body = {"agent": agent, "version": "t", "items": items}
        return await client.post("/api/v1/reports", json=body, headers={"Authorization": f"Bearer {token}"})

    def count(self, model: Any) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.intake.stop()
    srv.db.dispose()


def heartbeat(at: str | None = None, version: str = "1.0") -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "id": str(uuid.uuid4()),
        "observed_at": at or utcnow().isoformat(),
        "interval_s": 30,
        "department": "门诊收费",
        "snapshot": {"version": version, "observations": [{"check": "host.cpu", "subject": "cpu", "value": 7}]},
    }


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def _while_writes_wait(server: Server, calls: list[Any]) -> list[Any]:
    """Run the calls while the database's write lock is held, so they queue up; then let the writer go."""
    server.db._write_lock.acquire()
    try:
        tasks = [asyncio.ensure_future(c) for c in calls]
        await until(lambda: server.intake.received == len(calls))  # all handed to the writer, which waits
    finally:
        server.db._write_lock.release()
    return list(await asyncio.gather(*tasks))


def test_concurrent_batches_share_a_transaction_and_each_is_stored(server: Server) -> None:
    tokens = {f"ws-{i:02d}": server.agent(f"ws-{i:02d}") for i in range(40)}

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            calls = [
                server.post(c, tok, name, [heartbeat(), incident(f"{name}/db.connect", host=name)])
                for name, tok in tokens.items()
            ]
            return await _while_writes_wait(server, calls)

    replies = asyncio.run(main())
    assert [r.status_code for r in replies] == [200] * 40
    assert all(len(r.json()["stored"]) == 2 and r.json()["duplicates"] == 0 for r in replies)
    assert server.intake.batches == 40 and server.intake.groups <= 2  # the first alone, the other 39 together
    assert server.count(Receipt) == 80 and server.count(HealthSample) == 40 and server.count(AgentStatus) == 40
    with server.db.session() as s:
        assert sorted(s.scalars(select(Incident.key))) == sorted(f"{n}/db.connect" for n in tokens)
        assert {a.department for a in s.scalars(select(Agent))} == {"门诊收费"}


def test_one_group_answers_each_caller_for_itself(server: Server) -> None:
    good = server.agent("his-db-01")
    revoked = server.agent("ws-02")
    other = server.agent("ws-03")
    with server.db.session() as s:
        revoke(s, "agent", "ws-02", "renmin")
        engineer = create_engineer_token(s, "li")

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            return await _while_writes_wait(
                server,
                [
                    server.post(c, good, "his-db-01", [heartbeat()]),
                    server.post(c, revoked, "ws-02", [heartbeat()]),
                    server.post(c, "hga_" + "x" * 43, "ws-04", [heartbeat()]),
                    server.post(c, engineer, "li", [heartbeat()]),
                    server.post(c, other, "his-db-01", [incident("posing/as/another")]),  # names another agent
                    server.post(c, good, "his-db-01", [incident("his-db-01/db.connect")]),
                ],
            )

    replies = asyncio.run(main())
    assert [r.status_code for r in replies] == [200, 401, 401, 403, 403, 200]
    assert replies[1].headers["www-authenticate"] == "Bearer"
    assert "ws-03" in replies[4].json()["detail"]
    with server.db.session() as s:
        assert list(s.scalars(select(Incident.key))) == ["his-db-01/db.connect"]
    assert server.count(Receipt) == 2


def test_a_batch_the_server_cannot_store_fails_alone(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {f"ws-{i}": server.agent(f"ws-{i}") for i in range(5)}
    real = ingest._incident

    def faulty(s: Any, site: str, agent_id: int | None, ev: Any) -> int | None:
        if ev.key == "ws-3/poison":
            raise ValueError("cannot store this one")
        return real(s, site, agent_id, ev)

    monkeypatch.setattr(ingest, "_incident", faulty)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            calls = [
                server.post(c, tok, name, [incident("ws-3/poison" if name == "ws-3" else f"{name}/ok")])
                for name, tok in tokens.items()
            ]
            return await _while_writes_wait(server, calls)

    replies = asyncio.run(main())
    assert [r.status_code for r in replies] == [200, 200, 200, 500, 200]
    with server.db.session() as s:
        assert sorted(s.scalars(select(Incident.key))) == ["ws-0/ok", "ws-1/ok", "ws-2/ok", "ws-4/ok"]
        assert s.scalar(select(func.count()).select_from(Receipt)) == 4  # the refused batch left nothing


def test_overload_is_refused_at_once_with_retry_after(server: Server) -> None:
    server.intake.max_queued_items = 3
    token = server.agent("his-db-01")

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            server.db._write_lock.acquire()
            try:
                first = asyncio.ensure_future(server.post(c, token, "his-db-01", [heartbeat(), heartbeat()]))
                await until(lambda: server.intake.received == 1 and not server.intake._jobs)  # taken, at the lock
                second = asyncio.ensure_future(server.post(c, token, "his-db-01", [heartbeat(), heartbeat()]))
                await until(lambda: bool(server.intake._jobs))
                third = await server.post(c, token, "his-db-01", [heartbeat(), heartbeat()])  # 2 + 2 queued > 3
            finally:
                server.db._write_lock.release()
            return [await first, await second, third]

    first, second, third = asyncio.run(main())
    assert (first.status_code, second.status_code) == (200, 200)
    assert third.status_code == 503 and third.headers["retry-after"] == "5"
    assert "busy" in third.json()["detail"]
    assert server.count(HealthSample) == 4


def test_heartbeats_in_one_group_keep_the_newest_snapshot(server: Server) -> None:
    token = server.agent("his-db-01")
    old, new = "2026-01-01T08:00:00+00:00", "2026-01-01T08:00:30+00:00"

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            return await _while_writes_wait(
                server,
                [
                    server.post(c, token, "his-db-01", [heartbeat(new, "2.0")]),
                    server.post(c, token, "his-db-01", [heartbeat(old, "1.0")]),  # late, older
                    server.post(c, token, "his-db-01", [heartbeat(new, "2.0"), heartbeat(old, "1.0")]),
                ],
            )

    assert [r.status_code for r in asyncio.run(main())] == [200, 200, 200]
    with server.db.session() as s:
        agent = s.scalar(select(Agent))
        status = s.scalar(select(AgentStatus))
        assert agent.last_seen.isoformat() == new and agent.version == "2.0"
        assert status.snapshot["version"] == "2.0"
        assert s.scalar(select(func.count()).select_from(HealthSample)) == 4  # history keeps every sample


def test_validation_waits_for_the_token_and_other_methods_are_405(server: Server) -> None:
    token = server.agent("his-db-01")
    with server.db.session() as s:
        engineer = create_engineer_token(s, "li")

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            bad = {"agent": "his-db-01", "version": "t", "items": [{"type": "heartbeat"}]}
            out = []
            for tok in (None, "hga_" + "y" * 43, engineer, token):
                headers = {"Authorization": f"Bearer {tok}"} if tok else {}
                out.append(await c.post("/api/v1/reports", json=bad, headers=headers))
            out.append(
                await c.post("/api/v1/reports", content=b"{not json", headers={"Authorization": f"Bearer {token}"})
            )
            out.append(await c.get("/api/v1/reports", headers={"Authorization": f"Bearer {token}"}))
            return out

    none, unknown, person, agent, garbled, get = asyncio.run(main())
    assert (none.status_code, unknown.status_code, person.status_code) == (401, 401, 403)
    assert agent.status_code == 422
    fields = {tuple(e["loc"]) for e in agent.json()["detail"]}
    assert ("body", "items", 0, "heartbeat", "observed_at") in fields
    assert garbled.status_code == 422 and garbled.json()["detail"][0]["type"] == "json_invalid"
    assert get.status_code == 405 and get.headers["allow"] == "POST"
    assert agent.headers["x-content-type-options"] == "nosniff"  # the security edge wraps the lane
    spec = server.app.openapi()["paths"]["/api/v1/reports"]["post"]
    assert spec["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ReportBatch"}
    assert "ReportBatch" in server.app.openapi()["components"]["schemas"]
    assert server.count(Receipt) == 0


def test_the_writer_thread_ends_when_stopped_and_starts_again_on_demand(server: Server) -> None:
    token = server.agent("his-db-01")

    async def one() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            return (await server.post(c, token, "his-db-01", [heartbeat()])).status_code

    assert asyncio.run(one()) == 200
    assert server.intake.writers == 1 and server.intake.running == 1  # SQLite: one writer
    assert any(t.name.startswith("hisguard-intake") for t in threading.enumerate())
    server.intake.stop()
    assert server.intake.running == 0
    assert asyncio.run(one()) == 200  # a fresh event loop and a fresh writer
    assert server.count(HealthSample) == 2


def test_old_receipts_are_forgotten_in_chunks_and_recent_ones_kept(server: Server) -> None:
    token = server.agent("his-db-01")

    async def send(n: int) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://t") as c:
            return (await server.post(c, token, "his-db-01", [heartbeat() for _ in range(n)])).status_code

    assert asyncio.run(send(5)) == 200
    with server.db.session() as s:
        s.execute(update(Receipt).values(received_at=utcnow() - timedelta(days=40)))
    assert asyncio.run(send(3)) == 200
    assert ingest.prune_receipts(server.db, utcnow() - timedelta(days=30), chunk=2) == 5
    assert server.count(Receipt) == 3
    assert "ix_receipts_received_at" in {i["name"] for i in inspect(server.db.engine).get_indexes("receipts")}
