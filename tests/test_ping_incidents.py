"""Each ping outcome, caused for real in network namespaces, reaches a real server as a trigger-1 incident.

A real `hisguard-server run` and real `hisguard-agent run` processes; the faults are nftables drop and
reject rules in the target's namespace, an `unreachable` route and the agent's own interface going
down. Nothing sendable to any target is one incident about the agent's own network, and a partial
repair shows the targets still cut off instead of looking like a recovery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.netns import TestNet, need_namespaces
from tests.support.pingagent import ping_agent_config
from tests.support.procs import AgentProc, ServerProc, wait_until

INTERVAL = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    need_namespaces()
    srv = ServerProc(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


def start_agent(server: ServerProc, tmp_path: Any, name: str, targets: list[str]) -> AgentProc:
    token = server.agent_token(name, "renmin")
    config = ping_agent_config(
        server.url, token, targets, name, interval=INTERVAL, timeout=1.5, count=3, reply_timeout=0.3, confirm_after=0.5
    )
    agent = AgentProc(tmp_path / name, config).start()
    wait_until(lambda: any(a["name"] == name and a["last_seen"] for a in server.get("/agents")), 20, what="heartbeat")
    return agent


def incidents(server: ServerProc, host: str, status: str | None = None) -> list[dict[str, Any]]:
    found = server.incidents(status=status) if status else server.incidents()
    return [i for i in found if i["host"] == host]


FAULTS: dict[str, tuple[Callable[[TestNet], None], Callable[[TestNet], None]]] = {
    "dropped": (lambda n: n.drop("t"), lambda n: n.heal("t")),
    "refused": (lambda n: n.reject("t", "admin-prohibited"), lambda n: n.heal("t")),
    "no-route": (lambda n: n.route_unreachable("t"), lambda n: n.route_restore("t")),
    "if-down": (lambda n: n.agent_link_down("t"), lambda n: n.agent_link_up("t")),
}
SAYS = {
    "dropped": ("lost", 3, None),
    "refused": ("refused", 3, "ICMP admin-prohibited from {address}"),
    "no-route": ("unsendable", 0, "EHOSTUNREACH: No route to host"),
    "if-down": ("unsendable", 0, "EHOSTUNREACH: No route to host"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_ping_outcome_is_a_trigger_1_incident_and_recovery_resolves_it(server, tmp_path, fault):
    name = f"his-{fault}"
    with TestNet() as net:
        t, ok = net.add("t"), net.add("ok")
        agent = start_agent(server, tmp_path, name, [
            f'{{ address = "{t.address}", name = "门诊收费工作站", department = "门诊收费" }}',
            f'{{ address = "{ok.address}", name = "挂号工作站" }}',
        ])  # fmt: skip
        try:
            assert incidents(server, name) == []
            cause, cure = FAULTS[fault]
            cause(net)
            (inc,) = wait_until(lambda: incidents(server, name, "open"), 3 * INTERVAL + 5, what=f"{fault} incident")
            outcome, sent, error = SAYS[fault]
            ev = inc["evidence"]
            assert inc["trigger"] == 1 and inc["key"] == f"{name}/ping.reachable/{t.address}"
            assert inc["department"] == "门诊收费" and "门诊收费工作站" in inc["title_zh"]
            assert (ev["outcome"], ev["sent"], ev["received"]) == (outcome, sent, 0)
            assert ev.get("error") == (error.format(address=t.address) if error else None)
            if fault == "if-down":
                assert ev["interfaces_down"] == [t.veth]
            if fault == "no-route":
                assert ev["route"] == f"unreachable {t.address}/32"
            cure(net)
            wait_until(lambda: incidents(server, name, "open") == [], 3 * INTERVAL + 5, what="recovery")
            assert len(incidents(server, name)) == 1
        finally:
            agent.stop()
        assert "Traceback" not in agent.output()


def test_nothing_sendable_is_one_incident_about_the_agents_own_network(server, tmp_path):
    name = "his-own-net"
    with TestNet() as net:
        hosts = [net.add(n) for n in ("core", "opd", "ward")]
        agent = start_agent(server, tmp_path, name, [
            f'{{ address = "{hosts[0].address}", name = "核心交换机", hospital_critical = true }}',
            f'{{ address = "{hosts[1].address}", name = "门诊", department = "门诊收费" }}',
            f'{{ address = "{hosts[2].address}", name = "病房", department = "护士站" }}',
        ])  # fmt: skip
        try:
            for n in ("core", "opd", "ward"):
                net.agent_link_down(n)
            (inc,) = wait_until(lambda: incidents(server, name, "open"), 3 * INTERVAL + 5, what="own-network incident")
            assert inc["trigger"] == 1 and inc["key"] == f"{name}/ping.agent_network/{name}"
            assert inc["severity"] == "urgent" and "本机网络故障" in inc["title_zh"]
            ev = inc["evidence"]
            assert ev["interfaces_down"] == sorted(h.veth for h in hosts) and ev["targets"] == 3
            assert sorted(ev["targets_cut_off"]) == ["核心交换机", "病房", "门诊"]
            assert ev["errors"] == {"EHOSTUNREACH: No route to host": 3}
            wait_until(lambda: _rounds(server, name) >= 6, 4 * INTERVAL + 5, what="more rounds")
            assert len(incidents(server, name)) == 1  # not one per target, and not again every round

            net.agent_link_up("opd")  # a partial repair: two targets are still cut off
            wait_until(lambda: not incidents(server, name, "open") or _cut_off_open(server, name) == 2,
                       3 * INTERVAL + 5, what="the partial repair")  # fmt: skip
            wait_until(lambda: _own_resolved(server, name), 3 * INTERVAL + 5, what="own network resolved")
            still = {i["evidence"]["subject"]: i for i in incidents(server, name, "open")}
            assert sorted(still) == sorted([hosts[0].address, hosts[2].address])
            assert all(i["evidence"]["outcome"] == "unsendable" for i in still.values())
            assert still[hosts[0].address]["severity"] == "critical"
            resolved_at = _own_resolved(server, name)
            assert all(i["opened_at"] <= resolved_at for i in still.values())  # never a moment of "all clear"

            net.agent_link_up("core")
            net.agent_link_up("ward")
            wait_until(lambda: incidents(server, name, "open") == [], 3 * INTERVAL + 5, what="full recovery")
            assert hosts[1].address not in {i["evidence"]["subject"] for i in incidents(server, name)}
        finally:
            agent.stop()
        assert "Traceback" not in agent.output()


def _rounds(server: ServerProc, name: str) -> int:
    (agent_id,) = [a["id"] for a in server.get("/agents") if a["name"] == name]
    return server.get(f"/agents/{agent_id}/health")["snapshot"]["probes"]["network"]["runs"]


def _cut_off_open(server: ServerProc, name: str) -> int:
    return sum(1 for i in incidents(server, name, "open") if i["evidence"].get("check") == "ping.reachable")


def _own_resolved(server: ServerProc, name: str) -> str | None:
    own = [i for i in incidents(server, name) if i["evidence"].get("check") == "ping.agent_network"]
    return own[0]["resolved_at"] if own and own[0]["status"] == "resolved" else None
