"""Each target's round ends answered, silently lost, refused (ICMP error) or not sendable — real ICMP in namespaces.

Only an answer is reachable; a round that sent nothing has no loss figure (not 0 %); nothing sendable
to any target is the agent's own network.
"""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from hisguard.checks.base import Observation, ProbeContext
from hisguard.checks.ping import Config, describe, probe
from tests.support.netns import TestNet, need_namespaces

FAULTS = {
    "answers": lambda net, n: None,
    "drops": lambda net, n: net.drop(n),
    "refuses": lambda net, n: net.reject(n, "host-unreachable"),
    "prohibits": lambda net, n: net.reject(n, "admin-prohibited"),
    "no-route": lambda net, n: net.route_unreachable(n),
    "if-down": lambda net, n: net.agent_link_down(n),
    "eperm": lambda net, n: net.block_output(n),
}


@pytest.fixture(scope="module")
def net():
    need_namespaces()
    with TestNet() as n:
        for name, fault in FAULTS.items():
            n.add(name)
            fault(n, name)
        yield n


def run(targets: list[str], ctx: ProbeContext | None = None, **kw: object) -> dict[str, Observation]:
    cfg = Config(targets=[{"address": a, "name": f"t{i}"} for i, a in enumerate(targets)], privileged="yes", **kw)
    ctx = ctx or ProbeContext(host="his-app-01", state_dir=pathlib.Path("."))
    return {o.subject: o for o in asyncio.run(probe(cfg, ctx))}


@pytest.mark.parametrize("family", ["address", "address6"])
def test_every_target_says_what_happened_to_its_requests(net, family):
    addr = {name: getattr(h, family) for name, h in net.hosts.items()}
    obs = run(list(addr.values()))
    outcome = {name: obs[a].detail["outcome"] for name, a in addr.items()}
    assert outcome == {"answers": "answered", "drops": "lost", "refuses": "refused", "prohibits": "refused",
                       "no-route": "unsendable", "if-down": "unsendable", "eperm": "unsendable"}  # fmt: skip
    assert [name for name, a in addr.items() if obs[a].ok] == ["answers"]  # only an answer is reachable
    good = obs[addr["answers"]]
    assert good.value == 0.0 and good.detail["sent"] == good.detail["received"] == 5 and good.detail["rtt_avg_ms"] > 0
    lost = obs[addr["drops"]]
    assert lost.value == 1.0 and (lost.detail["sent"], lost.detail["received"]) == (5, 0) and "error" not in lost.detail
    refused, prohibited = obs[addr["refuses"]].detail, obs[addr["prohibits"]].detail
    unreach = "host-unreachable" if family == "address" else "address-unreachable"
    assert refused["error"] == f"ICMP {unreach} from {addr['refuses']}" and refused["sent"] == 5
    assert prohibited["icmp"] == {f"admin-prohibited from {addr['prohibits']}": 5}
    for name in ("no-route", "if-down", "eperm"):  # nothing left the machine: no loss figure, never "0 % loss"
        o = obs[addr[name]]
        assert o.value is None and (o.detail["sent"], o.detail["received"]) == (0, 0)
        assert o.detail["error"].startswith("EPERM" if name == "eperm" else "EHOSTUNREACH")
    prefix = 32 if family == "address" else 128
    assert obs[addr["no-route"]].detail["route"] == f"unreachable {addr['no-route']}/{prefix}"
    if family == "address":  # an IPv4 address stays on a downed interface: the interface is named
        assert obs[addr["if-down"]].detail["interfaces_down"] == [net.hosts["if-down"].veth]
    (own,) = [o for o in obs.values() if o.check == "ping.agent_network"]
    assert own.ok is True and own.subject == "his-app-01" and own.detail["unsendable"] == 3
    refused_line = "被拒绝（ICMP 差错） refused (ICMP error) 0/5: ICMP admin-prohibited"
    assert describe(obs[addr["prohibits"]]).startswith(refused_line)
    assert describe(obs[addr["if-down"]]).startswith("无法发送 not sendable 0/0: EHOSTUNREACH")


def test_nothing_sendable_to_any_target_is_the_agents_own_network(net):
    targets = [net.hosts["no-route"].address, net.hosts["if-down"].address, net.hosts["no-route"].address6]
    obs = run(targets)
    own = obs["his-app-01"]
    assert own.check == "ping.agent_network" and own.ok is False
    assert own.detail["interfaces_down"][0] == net.hosts["if-down"].veth and own.label.endswith("down")
    assert own.detail["errors"] == {"EHOSTUNREACH: No route to host": 3} and own.detail["targets"] == 3
    assert all(obs[t].ok is False and obs[t].detail["outcome"] == "unsendable" for t in targets)


def test_two_jobs_pinging_at_once_count_only_their_own_replies(net):
    # Raw sockets see every echo reply of the host: each job must match its own by identifier and sequence.
    a = net.hosts["answers"].address
    cfg = Config(targets=[{"address": a}, {"address": "127.0.0.1"}], privileged="yes", count=20, packet_interval=0.01)

    async def both() -> list[list[Observation]]:
        ctxs = [ProbeContext(host="h", state_dir=pathlib.Path(".")) for _ in range(2)]
        return list(await asyncio.gather(*(probe(cfg, c) for c in ctxs)))

    for obs in asyncio.run(both()):
        assert [(o.detail["sent"], o.detail["received"]) for o in obs[:2]] == [(20, 20), (20, 20)]


def test_one_socket_serves_every_round_of_a_job(net):
    ctx = ProbeContext(host="h", state_dir=pathlib.Path("."))
    a = net.hosts["answers"].address
    for _ in range(3):
        assert run([a, "::1"], ctx)[a].ok is True
    pinger = ctx.memory["pinger"]
    assert sorted(pinger._channels) == [4, 6]  # one socket per address family, kept between rounds


def test_a_round_that_lost_most_requests_fails_at_down_loss(net):
    a = net.hosts["answers"].address
    assert run([a], down_loss=0.5)[a].ok is True
    net.loss("answers", 100)
    try:
        o = run([a], down_loss=0.5)[a]
        assert o.ok is False and o.value == 1.0
    finally:
        net.heal("answers")
