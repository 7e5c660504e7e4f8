"""Topology: scope from the network's shape, hosts behind a failed switch folded into one incident."""

from __future__ import annotations

from pathlib import Path

import pytest

from hisguard.agent.classify import Failing, classify
from hisguard.agent.config import load_config
from hisguard.agent.topology import Topology, activate
from hisguard.checks.base import Impact, Observation
from hisguard.plan import BusinessFunction, Scope, Severity, Trigger
from hisguard.tomlconfig import ConfigError

# core + 3 access switches + 30 hosts in 4 departments (the last switch serves two).
DEPTS = {"acc-opd": ["门诊挂号", "门诊收费"], "acc-ward": ["护士站"], "acc-pharm": ["门诊药房"]}
HOSTS = {"acc-opd": 12, "acc-ward": 10, "acc-pharm": 8}


def topology_toml() -> str:
    out = [
        "[topology]",
        "force_majeure_lost = 5",
        "[[topology.node]]",
        'name = "core"',
        'role = "core"',
        'address = "10.0.0.1"',
    ]
    n = 0
    for i, (acc, deps) in enumerate(DEPTS.items(), start=1):
        out += [
            "[[topology.node]]",
            f'name = "{acc}"',
            'role = "access"',
            'parent = "core"',
            f'address = "10.0.{i}.1"',
            f'uplink = "GigabitEthernet0/0/{i}"',
            "hosts = [",
        ]
        for h in range(HOSTS[acc]):
            n += 1
            dep = deps[h % len(deps)]
            out.append(f'  {{ name = "pc-{n:02d}", address = "10.0.{i}.{h + 10}", department = "{dep}" }},')
        out.append("]")
    return "\n".join(out) + "\n"


CONFIG = """
[agent]
name = "netmon"
[server]
url = "http://127.0.0.1:8470"
token = "x"
"""


@pytest.fixture
def topo(tmp_path: Path):
    p = tmp_path / "agent.toml"
    p.write_text(CONFIG + topology_toml(), encoding="utf-8")
    cfg = load_config(p)
    assert cfg.topology is not None
    yield Topology(cfg.topology)
    activate(None)


def hosts_of(topo: Topology, acc: str) -> list:
    return [topo.nodes[n] for n in topo.children[acc]]


def switch_down(name: str) -> Failing:
    return Failing("switches", Observation("snmp.reachable", name, False, Impact(), name=name,
                                           detail={"device": name, "address": ""}))  # fmt: skip


def host_down(node) -> Failing:
    return Failing("hosts", Observation("ping.reachable", node.address, False, Impact(department=node.department),
                                        name=node.name))  # fmt: skip


def test_topology_has_the_shape_configured(topo):
    assert len(topo.nodes) == 34
    assert {topo.nodes[h].department for h in topo.descendants("core") if topo.nodes[h].role == "host"} == {
        "门诊挂号", "门诊收费", "护士站", "门诊药房"}  # fmt: skip
    tree = "\n".join(topo.tree(down={"acc-ward"}))
    assert tree.splitlines()[0].startswith("core (core, 10.0.0.1)")
    assert "├─ acc-opd (access, 10.0.1.1, via GigabitEthernet0/0/1)" in tree
    assert "acc-ward (access, 10.0.2.1, via GigabitEthernet0/0/2)" in tree and "✗" in tree


def test_access_switch_down_is_one_department_incident_with_its_hosts_as_evidence(topo):
    activate(topo.cfg)
    failing = [switch_down("acc-opd"), *(host_down(h) for h in hosts_of(topo, "acc-opd"))]
    (inc,) = classify("netmon", failing)
    assert inc.trigger is Trigger.HARDWARE
    assert (inc.scope, inc.severity) == (Scope.DEPARTMENT, Severity.URGENT)
    assert sorted(inc.departments) == ["门诊挂号", "门诊收费"]
    assert set(inc.evidence["affected_functions"]) == {
        BusinessFunction.OUTPATIENT_REGISTRATION.value, BusinessFunction.OUTPATIENT_BILLING.value}  # fmt: skip
    assert inc.evidence["folded_count"] == 12
    assert {f["name"] for f in inc.evidence["folded"]} == {h.name for h in hosts_of(topo, "acc-opd")}
    assert len(inc.conditions) == 13  # the switch and every host: all resolve together


def test_host_down_alone_is_its_own_department(topo):
    activate(topo.cfg)
    h = hosts_of(topo, "acc-ward")[3]
    (inc,) = classify("netmon", [host_down(h)])
    assert inc.scope is Scope.DEPARTMENT and inc.departments == ["护士站"] and inc.severity is Severity.URGENT


def test_uplink_port_on_the_core_cuts_off_the_switch_behind_it(topo):
    activate(topo.cfg)
    port = Failing("switches", Observation("snmp.interface", "core/GigabitEthernet0/0/3", False, Impact(
        hospital_critical=True), name="core GigabitEthernet0/0/3", detail={"device": "core",
        "port": "GigabitEthernet0/0/3"}))  # fmt: skip
    failing = [port, switch_down("acc-pharm"), *(host_down(h) for h in hosts_of(topo, "acc-pharm"))]
    (inc,) = classify("netmon", failing)
    assert inc.scope is Scope.DEPARTMENT and inc.departments == ["门诊药房"]
    assert inc.evidence["folded_count"] == 9  # the core's port and the 8 pharmacy hosts
    assert "core/GigabitEthernet0/0/3" in {f["subject"] for f in inc.evidence["folded"]}


def test_core_down_is_one_whole_hospital_critical_incident(topo):
    activate(topo.cfg)
    failing = [switch_down("core"), *(switch_down(a) for a in DEPTS)]
    failing += [host_down(topo.nodes[h]) for h in topo.descendants("core") if topo.nodes[h].role == "host"]
    (inc,) = classify("netmon", failing)
    assert inc.trigger is Trigger.HARDWARE
    assert (inc.scope, inc.severity) == (Scope.HOSPITAL, Severity.CRITICAL)
    assert inc.evidence["folded_count"] == 33
    assert set(inc.departments) == {"门诊挂号", "门诊收费", "护士站", "门诊药房"}


def test_children_do_not_flood_when_the_parent_recovers_first(topo):
    t = activate(topo.cfg)
    assert t is not None
    hosts = [host_down(h) for h in hosts_of(topo, "acc-ward")]
    assert len(classify("netmon", [switch_down("acc-ward"), *hosts])) == 1
    # The switch is back; its hosts' pings have not been confirmed healthy yet: no burst of ten incidents.
    assert classify("netmon", hosts) == []
    # Still down after the grace period: they are real failures of their own.
    for k in t._parent_down_at:
        t._parent_down_at[k] -= t.cfg.recovery_grace + 1
    assert len(classify("netmon", hosts)) == 10


def test_ups_on_battery_and_many_devices_lost_is_force_majeure_for_the_whole_hospital(topo):
    activate(topo.cfg)
    ups = Failing("power", Observation("snmp.ups.on_battery", "ups-1", False, Impact(), 20.0, name="ups-1",
                                       detail={"device": "ups-1", "minutes_remaining": 20}))  # fmt: skip
    lost = [switch_down(a) for a in DEPTS] + [host_down(h) for h in hosts_of(topo, "acc-opd")[:3]]
    incs = classify("netmon", [ups, *lost])
    (inc,) = incs
    assert inc.trigger is Trigger.FORCE_MAJEURE and inc.scope is Scope.HOSPITAL and inc.severity is Severity.CRITICAL
    assert inc.key == "netmon/force_majeure" and inc.evidence["lost_count"] == 6
    # The UPS alone, or devices alone, are not force majeure.
    assert classify("netmon", [ups])[0].trigger is Trigger.FORCE_MAJEURE
    assert classify("netmon", [ups])[0].scope is Scope.HOST
    assert all(i.trigger is Trigger.HARDWARE for i in classify("netmon", lost))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[topology.node]]\nname = "x"\nparent = "nowhere"\n', "parent 'nowhere' is not a node"),
        ('[[topology.node]]\nname = "a"\nparent = "b"\n[[topology.node]]\nname = "b"\nparent = "a"\n', "loop"),
        ('[[topology.node]]\nname = "a"\n[[topology.node]]\nname = "a"\n', "listed twice"),
        ('[[topology.node]]\nname = "a"\nrole = "router"\n', "topology.node[0].role"),
    ],
)
def test_broken_topology_is_a_config_error_naming_the_node(tmp_path, extra, message):
    p = tmp_path / "agent.toml"
    p.write_text(CONFIG + "[topology]\n" + extra, encoding="utf-8")
    with pytest.raises(ConfigError, match="topology") as e:
        load_config(p)
    assert message in str(e.value)
