"""Topology end to end: real switches (snmpsim in network namespaces), 30 real hosts, the agent's runtime.

core + 3 access switches + 30 hosts in 4 departments. Cutting one access switch (and so its hosts)
yields one department incident; cutting the core yields one whole-hospital critical incident.
`hisguard-agent once` prints the tree it understood and what is down.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hisguard.agent.config import load_config
from hisguard.agent.runtime import Agent
from hisguard.agent.topology import activate
from hisguard.plan import BusinessFunction, Scope, Severity, Trigger
from tests.data.snmp.gen import Switch
from tests.data.snmp.sim import SnmpSim
from tests.support import peers
from tests.support.netns import TestNet

SWITCHES = {"core": None, "acc-opd": ["门诊挂号", "门诊收费"], "acc-ward": ["护士站"], "acc-pharm": ["门诊药房"]}
HOSTS = {"acc-opd": 12, "acc-ward": 10, "acc-pharm": 8}


@pytest.fixture(scope="module")
def hospital():
    peers.need_root()
    peers.need_binary("ip")
    try:
        import snmpsim  # noqa: F401
    except ImportError:
        peers.need(False, "needs snmpsim (pip install -e '.[test]')")
    with TestNet() as net:
        sims: dict[str, SnmpSim] = {}
        for i, name in enumerate(SWITCHES):
            host = net.add(name)
            sim = SnmpSim((host.address,), netns=host.ns)
            sim.write(name, Switch(name, vendor="huawei" if i else "h3c").render())
            sims[name] = sim.start(wait=False)
        hosts: dict[str, list[tuple[str, str, str]]] = {}
        n = 0
        for acc, count in HOSTS.items():
            for h in range(count):
                n += 1
                ns_name = f"pc{n:02d}"
                hosts.setdefault(acc, []).append(
                    (ns_name, net.add(ns_name).address, SWITCHES[acc][h % len(SWITCHES[acc])])
                )
        try:
            for sim in sims.values():
                sim.wait_ready()
            yield net, sims, hosts
        finally:
            for sim in sims.values():
                sim.close()
            activate(None)


def config_text(net: TestNet, sims: dict[str, SnmpSim], hosts: dict, state_dir: Path) -> str:
    lines = [
        "[agent]",
        'name = "netmon"',
        f'state_dir = "{state_dir}"',
        "[server]",
        'url = "http://127.0.0.1:9"',
        'token = "x"',
        "",
        "[[probe.snmp]]",
        'name = "switches"',
        "interval = 60",
        "timeout = 60",  # a round's bound, generous: snmpsim and the agent share a loaded machine
    ]
    for name, sim in sims.items():
        lines += [
            "[[probe.snmp.devices]]",
            f'name = "{name}"',
            f'address = "{sim.addresses[0]}"',
            f"port = {sim.port}",
            f'community = "{name}"',
            "timeout = 1.0",
            "retries = 0",
        ]
    lines += ["[[probe.ping]]", 'name = "hosts"', "interval = 30", "timeout = 30", "count = 2",
              "reply_timeout = 0.5", "targets = ["]  # fmt: skip
    for entries in hosts.values():
        for ns_name, addr, dep in entries:
            lines.append(f'  {{ address = "{addr}", name = "{ns_name}", department = "{dep}" }},')
    lines += ["]", "", "[topology]"]
    for i, (name, deps) in enumerate(SWITCHES.items()):
        lines += ["[[topology.node]]", f'name = "{name}"', f'address = "{sims[name].addresses[0]}"']
        if deps is None:
            lines.append('role = "core"')
            continue
        lines += ['role = "access"', 'parent = "core"', f'uplink = "GigabitEthernet1/0/{i}"', "hosts = ["]
        for ns_name, addr, dep in hosts[name]:
            lines.append(f'  {{ name = "{ns_name}", address = "{addr}", department = "{dep}" }},')
        lines.append("]")
    return "\n".join(lines) + "\n"


async def round_of(agent: Agent):
    for job in agent.cfg.jobs:
        await agent.run_round(job, confirm=False)
    return agent.current_incidents()


def cut(net: TestNet, names: list[str]) -> None:
    for n in names:
        net.down(n)


def mend(net: TestNet, names: list[str]) -> None:
    for n in names:
        net.up(n)


def settle(net: TestNet, timeout: float = 10.0) -> None:
    """Wait until every test host answers again (links just brought up need a moment)."""
    from icmplib import multiping

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(h.is_alive for h in multiping([h.address for h in net.hosts.values()], count=1, timeout=0.5)):
            return
    raise AssertionError("test hosts did not come back")


async def test_access_switch_down_is_one_incident_and_core_down_one_whole_hospital_incident(hospital, tmp_path):
    net, sims, hosts = hospital
    path = tmp_path / "agent.toml"
    path.write_text(config_text(net, sims, hosts, tmp_path / "state"), encoding="utf-8")
    agent = Agent(load_config(path))
    try:
        assert await round_of(agent) == []
        opd = ["acc-opd", *(h[0] for h in hosts["acc-opd"])]
        cut(net, opd)
        try:
            (inc,) = await round_of(agent)
        finally:
            mend(net, opd)
            await asyncio.to_thread(settle, net)
        assert inc.trigger is Trigger.HARDWARE
        assert (inc.scope, inc.severity) == (Scope.DEPARTMENT, Severity.URGENT)
        assert sorted(inc.departments) == ["门诊挂号", "门诊收费"]
        assert set(inc.evidence["affected_functions"]) == {
            BusinessFunction.OUTPATIENT_REGISTRATION.value, BusinessFunction.OUTPATIENT_BILLING.value}  # fmt: skip
        assert sorted(f["name"] for f in inc.evidence["folded"]) == sorted(h[0] for h in hosts["acc-opd"])
        event = agent._event(inc, "open")
        assert event["functions"] == ["outpatient_registration", "outpatient_billing"]
        # Back up (a settled round), then the core goes: everything behind it is lost with it.
        await round_of(agent)
        everything = list(net.hosts)
        cut(net, everything)
        try:
            (inc,) = await round_of(agent)
        finally:
            mend(net, everything)
        assert inc.trigger is Trigger.HARDWARE and inc.evidence["node"] == "core"
        assert (inc.scope, inc.severity) == (Scope.HOSPITAL, Severity.CRITICAL)
        assert inc.evidence["folded_count"] == 33
        assert set(inc.departments) == {"门诊挂号", "门诊收费", "护士站", "门诊药房"}
    finally:
        agent.store.close()


def test_once_prints_the_topology_tree_and_what_is_down(hospital, tmp_path):
    net, sims, hosts = hospital
    path = tmp_path / "agent.toml"
    path.write_text(config_text(net, sims, hosts, tmp_path / "state"), encoding="utf-8")
    settle(net)
    ward = ["acc-ward", *(h[0] for h in hosts["acc-ward"])]
    cut(net, ward)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "hisguard.agent.cli", "once", "-c", str(path)],
            capture_output=True, text=True, timeout=300, check=True,
        ).stdout  # fmt: skip
    finally:
        mend(net, ward)
    assert "网络拓扑 / topology" in out
    assert f"core (core, {sims['core'].addresses[0]})" in out
    assert "├─ acc-opd (access" in out and "via GigabitEthernet1/0/1" in out
    tree = out[out.index("网络拓扑") :]
    ward_line = next(line for line in tree.splitlines() if "acc-ward (access" in line)
    assert "✗" in ward_line
    assert "受影响科室 / departments affected: 护士站" in out
    assert "护士站 (Nurse stations)" in out
    assert "事件 / incidents (1)" in out and "部门级/department" in out, out[out.index("网络拓扑") :]
