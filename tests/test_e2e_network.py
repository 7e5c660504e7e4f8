"""End to end: a real server process, a real agent process, test hosts in network namespaces."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.netns import TestNet
from tests.support.peers import need_binary, need_root
from tests.support.pingagent import ping_agent_config
from tests.support.procs import AgentProc, ServerProc, wait_until

INTERVAL = 1.0


@pytest.fixture
def net():
    need_root()
    need_binary("ip")
    with TestNet() as n:
        yield n


@pytest.fixture
def server(tmp_path):
    srv = ServerProc(tmp_path / "server").start()
    yield srv
    srv.stop()


def agent_config(
    server: ServerProc, token: str, targets: list[str], interval: float = INTERVAL, count: int = 5, reply: float = 0.15
) -> str:
    return ping_agent_config(
        server.url, token, targets, interval=interval, timeout=min(interval, 0.9), count=count, packet_interval=0.01,
        reply_timeout=reply, fail_after=2, fail_window=3, clear_after=2, confirm_after=interval / 4,
    )  # fmt: skip


def open_incidents(server: ServerProc) -> list[dict]:
    return server.incidents(status="open")


def test_link_down_becomes_one_classified_incident_and_recovery_resolves_it(tmp_path, net, server):
    billing, core = net.add("billing"), net.add("core")
    token = server.agent_token("his-app-01", "renmin")
    targets = [
        f'{{ address = "{billing.address}", name = "门诊收费工作站", department = "门诊收费" }}',
        f'{{ address = "{core.address}", name = "核心交换机", hospital_critical = true }}',
    ]
    agent = AgentProc(tmp_path / "agent", agent_config(server, token, targets)).start()
    try:
        wait_until(lambda: server.get("/agents")[0]["last_seen"], 10, what="first heartbeat")
        assert open_incidents(server) == []

        net.down("billing")
        cut = time.monotonic()
        (inc,) = wait_until(lambda: open_incidents(server), 3 * INTERVAL + 2, what="billing incident")
        detected_in = time.monotonic() - cut
        assert detected_in <= 3 * INTERVAL + 1.5, detected_in
        assert inc["trigger"] == 1 and inc["scope"] == "department" and inc["severity"] == "urgent"
        assert inc["department"] == "门诊收费" and inc["functions"] == ["outpatient_billing"]
        assert inc["host"] == "his-app-01" and billing.address in inc["key"]
        assert "门诊收费工作站" in inc["title_zh"] and inc["title_en"]

        net.down("core")
        wait_until(lambda: len(open_incidents(server)) == 2, 3 * INTERVAL + 2, what="core incident")
        time.sleep(2 * INTERVAL)  # more rounds while down: still exactly one incident each
        incs = {i["evidence"]["subject"]: i for i in open_incidents(server)}
        assert len(server.incidents()) == 2
        assert incs[core.address]["severity"] == "critical" and incs[core.address]["scope"] == "hospital"

        net.up("billing")
        net.up("core")
        wait_until(lambda: open_incidents(server) == [], 4 * INTERVAL + 2, what="recovery")
        resolved = server.incidents(status="resolved")
        assert len(resolved) == 2 and all(i["resolved_at"] for i in resolved)
    finally:
        agent.stop()
    assert "Traceback" not in agent.output()


def test_twenty_percent_loss_raises_nothing_while_a_real_outage_is_caught(tmp_path, net, server):
    flaky, dead = net.add("flaky"), net.add("dead")
    net.loss("flaky", 20)
    token = server.agent_token("his-app-01", "renmin")
    interval = 0.4
    targets = [
        f'{{ address = "{flaky.address}", name = "丢包链路", department = "住院药房" }}',
        f'{{ address = "{dead.address}", name = "手术室交换机", department = "手术室" }}',
    ]
    agent = AgentProc(tmp_path / "agent", agent_config(server, token, targets, interval, count=4, reply=0.08)).start()
    try:
        wait_until(lambda: server.get("/agents")[0]["last_seen"], 10, what="first heartbeat")
        started = time.monotonic()
        time.sleep(10 * interval)
        net.down("dead")  # the real outage in the same run
        wait_until(lambda: open_incidents(server), 3 * interval + 2, what="dead host incident")
        wait_until(lambda: _rounds(server, "network") >= 60, 62 * interval + 15, interval=0.5, what="60 rounds")
    finally:
        agent.stop()
    assert time.monotonic() - started >= 60 * interval * 0.9
    incs = server.incidents()
    assert [i["evidence"]["subject"] for i in incs] == [dead.address]
    assert incs[0]["department"] == "手术室"


def _rounds(server: ServerProc, job: str) -> int:
    agent_id = server.get("/agents")[0]["id"]
    return server.get(f"/agents/{agent_id}/health")["snapshot"]["probes"][job]["runs"]


def test_outage_spools_and_every_incident_is_stored_exactly_once(tmp_path, net, server):
    hosts = [net.add(f"h{i}") for i in range(3)]
    token = server.agent_token("his-app-01", "renmin")
    targets = [f'{{ address = "{h.address}", department = "护士站" }}' for h in hosts]
    cfg = agent_config(server, token, targets)
    agent = AgentProc(tmp_path / "agent", cfg).start()
    try:
        wait_until(lambda: server.get("/agents")[0]["last_seen"], 10, what="first heartbeat")
        server.stop()
        for i in range(3):
            net.down(f"h{i}")
        spool = tmp_path / "agent" / "state" / "agent.sqlite3"
        wait_until(lambda: _spooled_incidents(spool) >= 3, 6 * INTERVAL, what="incidents spooled")
        agent.stop()  # the agent restarts while the server is still down
        agent.start()
        time.sleep(3 * INTERVAL)
        server.start()
        wait_until(lambda: len(server.incidents()) >= 3 and _spooled_incidents(spool) == 0, 15, what="spool delivered")
        time.sleep(2 * INTERVAL)
        incs = server.incidents()
        assert len(incs) == 3
        assert len({i["key"] for i in incs}) == 3
        assert all(i["status"] == "open" and i["department"] == "护士站" for i in incs)
    finally:
        agent.stop()


def _spooled_incidents(spool) -> int:
    import sqlite3

    db = sqlite3.connect(spool, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM outbox WHERE kind = 'incident'").fetchone()[0]
    finally:
        db.close()


def test_silent_agent_becomes_trigger_1_and_speaking_again_resolves_it(tmp_path, server):
    token = server.agent_token("his-db-01", "renmin")
    cfg = agent_config(server, token, ['{ address = "127.0.0.1" }']).replace(
        'name = "his-app-01"', 'name = "his-db-01"\nhospital_critical = true'
    )
    agent = AgentProc(tmp_path / "agent", cfg).start()
    try:
        wait_until(lambda: server.get("/agents")[0]["last_seen"], 10, what="first heartbeat")
        agent.stop(signal.SIGKILL)
        (inc,) = wait_until(lambda: server.incidents(status="open"), 10, what="silence incident")
        assert inc["trigger"] == 1 and inc["severity"] == "critical" and inc["scope"] == "hospital"
        assert inc["key"] == "agent-silent/his-db-01" and "his-db-01" in inc["title_en"]
        assert server.get("/agents")[0]["silent"] is True
        agent.start()
        wait_until(lambda: server.incidents(status="open") == [], 10, what="silence resolved")
        assert len(server.incidents()) == 1
    finally:
        agent.stop()
