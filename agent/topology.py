"""The network's shape, and the incidents it folds together.

`[topology]` in the agent's configuration describes core switch(es) → access switches → hosts
and the departments they serve. From it:
- scope: a core down is the whole hospital; an access switch (or the port on its parent that
  feeds it) down is the departments behind it; a host is its own department;
- suppression: when a parent is down, its children's loss is evidence in the parent's incident,
  and stays folded for `recovery_grace` seconds after the parent recovers (no flood);
- force majeure: a UPS on battery together with `force_majeure_lost` devices lost → one
  trigger-6 incident for the whole hospital.
UPS conditions of one unit are merged into one incident whose severity rises as runtime falls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hisguard.plan import Scope, Severity, Text, Trigger, functions_of, severity_for

if TYPE_CHECKING:
    from hisguard.agent.classify import Incident

# A device is lost when these fail; a descendant's failures of these kinds fold into a lost parent.
LOST_CHECKS = ("snmp.reachable", "snmp.unreached", "ping.reachable")
FOLDABLE_CHECKS = (
    *LOST_CHECKS,
    "snmp.agent",
    "snmp.interface",
    "snmp.edge_ports",
    "snmp.if_errors",
    "snmp.if_flap",
    "snmp.uplink_redundancy",
    "snmp.uplink_group",
)
# A service that stops answering because the switch in front of it (or its own server) is lost is evidence
# of that incident; its scope otherwise is the target's own (hospital_critical / departments), not the node's.
SERVICE_FOLDABLE = ("service.answer",)
UPS_CHECKS = (
    "snmp.ups.on_battery",
    "snmp.ups.runtime_low",
    "snmp.ups.depleting",
    "snmp.ups.bypass",
    "snmp.ups.output_off",
    "snmp.ups.alarm",
    "snmp.ups.battery_fault",
)
# What a UPS incident's title says, worst first (the merged incident names every condition).
UPS_WORDS = {
    "snmp.ups.depleting": ("电池即将耗尽", "battery about to run out"),
    "snmp.ups.output_off": ("输出关闭", "output off"),
    "snmp.ups.on_battery": ("市电中断，电池供电", "on battery (mains lost)"),
    "snmp.ups.runtime_low": ("电池电量低", "battery low"),
    "snmp.ups.bypass": ("处于旁路，负载无保护", "on bypass (load unprotected)"),
    "snmp.ups.battery_fault": ("电池故障或需更换", "battery failed or needs replacing"),
    "snmp.ups.alarm": ("告警", "alarm"),
}


class HostEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    address: str | None = None
    department: str | None = None
    departments: list[str] = Field(default_factory=list)


class Node(BaseModel):
    """One device in the network's shape."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="As the probes name it (SNMP device name or ping target name)")
    address: str | None = Field(None, description="Its address, to match ping targets and trap senders")
    role: Literal["core", "access", "host", "server", "ups"] = "host"
    parent: str | None = Field(None, description="The node it hangs from (core: none)")
    uplink: str | None = Field(None, description="The port on the parent that feeds it (e.g. GigabitEthernet0/0/1)")
    department: str | None = None
    departments: list[str] = Field(default_factory=list, description="Departments it serves")
    hospital_critical: bool = Field(False, description="Its loss paralyses the whole hospital (core: always)")
    hosts: list[HostEntry] = Field(default_factory=list, description="Hosts behind it (short form)")

    def own_departments(self) -> list[str]:
        return list(dict.fromkeys([*([self.department] if self.department else []), *self.departments]))


class TopologyConfig(BaseModel):
    """The `[topology]` section."""

    model_config = ConfigDict(extra="forbid")

    node: list[Node] = Field(default_factory=list)
    force_majeure_lost: int = Field(5, ge=2, description="Devices lost together with a UPS on battery → trigger 6")
    recovery_grace: float = Field(120.0, ge=0, description="Seconds children stay folded after the parent recovers")

    @model_validator(mode="after")
    def _shape(self) -> TopologyConfig:
        names: dict[str, Node] = {}
        for n in self.expanded():
            if n.name in names:
                raise ValueError(f"node {n.name!r} is listed twice")
            names[n.name] = n
        for n in names.values():
            if n.parent is not None and n.parent not in names:
                raise ValueError(f"node {n.name!r}: parent {n.parent!r} is not a node")
            seen = {n.name}
            p = n.parent
            while p is not None:
                if p in seen:
                    raise ValueError(f"node {n.name!r}: parents form a loop through {p!r}")
                seen.add(p)
                p = names[p].parent
        return self

    def expanded(self) -> list[Node]:
        out = []
        for n in self.node:
            out.append(n.model_copy(update={"hosts": []}))
            for h in n.hosts:
                out.append(
                    Node(
                        name=h.name,
                        address=h.address,
                        role="host",
                        parent=n.name,
                        department=h.department,
                        departments=h.departments,
                    )
                )
        return out


@dataclass
class Topology:
    cfg: TopologyConfig
    nodes: dict[str, Node] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)  # name or address → node name
    # Child conditions folded into a parent, and when the parent was last seen down.
    _folded: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _parent_down_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for n in self.cfg.expanded():
            self.nodes[n.name] = n
            self.children.setdefault(n.name, [])
            self.by_key[n.name] = n.name
            if n.address:
                self.by_key.setdefault(n.address, n.name)
        for n in self.nodes.values():
            if n.parent:
                self.children[n.parent].append(n.name)

    # -- shape -------------------------------------------------------------------------------
    def ancestors(self, name: str) -> Iterator[str]:
        p = self.nodes[name].parent
        while p is not None:
            yield p
            p = self.nodes[p].parent

    def descendants(self, name: str) -> list[str]:
        out, todo = [], list(self.children.get(name, []))
        while todo:
            n = todo.pop(0)
            out.append(n)
            todo.extend(self.children.get(n, []))
        return out

    def hospital_wide(self, name: str) -> bool:
        n = self.nodes[name]
        return n.role == "core" or n.hospital_critical

    def departments_behind(self, name: str) -> list[str]:
        deps: list[str] = []
        for n in [name, *self.descendants(name)]:
            deps += self.nodes[n].own_departments()
        return list(dict.fromkeys(deps))

    def node_of(self, inc: Incident) -> str | None:
        ev = inc.evidence
        for key in (
            ev.get("service_node"),
            ev.get("device"),
            ev.get("name"),
            ev.get("subject"),
            ev.get("service_host"),
        ):
            if isinstance(key, str) and key in self.by_key:
                return self.by_key[key]
        return None

    def feeding_port(self, device: str, port: str) -> str | None:
        """The child node fed by `port` of `device`, if the topology names one."""
        for child in self.children.get(device, []):
            up = self.nodes[child].uplink
            if up and up.lower() == port.lower():
                return child
        return None

    # -- the readable tree `hisguard-agent once` prints ---------------------------------------
    def tree(self, down: set[str] | None = None) -> list[str]:
        down = down or set()
        lines: list[str] = []

        def walk(name: str, prefix: str, last: bool, top: bool) -> None:
            n = self.nodes[name]
            deps = n.own_departments()
            bits = [n.role]
            if n.address:
                bits.append(n.address)
            if n.uplink:
                bits.append(f"via {n.uplink}")
            label = f"{name} ({', '.join(bits)})" + (f" [{', '.join(deps)}]" if deps else "")
            mark = "  ✗ 故障/DOWN" if name in down else ""
            lines.append(f"{prefix}{'' if top else ('└─ ' if last else '├─ ')}{label}{mark}")
            kids = self.children.get(name, [])
            for i, kid in enumerate(kids):
                walk(kid, prefix + ("" if top else ("   " if last else "│  ")), i == len(kids) - 1, False)

        roots = [n for n, node in self.nodes.items() if node.parent is None]
        for r in roots:
            walk(r, "", True, True)
        return lines


_active: Topology | None = None


def activate(cfg: TopologyConfig | None) -> Topology | None:
    """Make this the topology the classifier folds with (one agent, one configuration)."""
    global _active
    _active = Topology(cfg) if cfg is not None and cfg.node else None
    return _active


def active() -> Topology | None:
    return _active


# -- the fold ------------------------------------------------------------------------------------
def _check(inc: Incident) -> str:
    return inc.conditions[0][1] if inc.conditions else str(inc.evidence.get("check", ""))


def _rescope(inc: Incident, hospital: bool, departments: list[str]) -> Incident:
    """Scope and severity from the topology; what the probe's own config said is kept if it says more."""
    from hisguard.agent.classify import RULES

    if not hospital and not departments:
        return inc
    scope = Scope.HOSPITAL if hospital else Scope.DEPARTMENT
    deps = departments or inc.departments
    rule = RULES.get(_check(inc))
    severity = severity_for(scope, rule.floor if rule else None, rule.cap if rule else None)
    return replace(inc, scope=scope, severity=severity, departments=list(deps))


def _brief(inc: Incident) -> dict[str, Any]:
    ev = inc.evidence
    return {k: ev[k] for k in ("check", "subject", "name", "device", "port") if ev.get(k) is not None}


def merge_ups(incidents: list[Incident]) -> list[Incident]:
    """One incident per UPS, at the severity of its worst condition."""
    groups: dict[str, list[Incident]] = {}
    rest = []
    for inc in incidents:
        if _check(inc) in UPS_CHECKS:
            groups.setdefault(str(inc.evidence.get("device") or inc.evidence.get("subject")), []).append(inc)
        else:
            rest.append(inc)
    for device, incs in groups.items():
        worst = max(incs, key=lambda i: i.severity.rank)
        host = incs[0].key.split("/", 1)[0]
        checks = {_check(i) for i in incs}
        words = [w for c, w in UPS_WORDS.items() if c in checks]
        if "snmp.ups.on_battery" in checks:  # "battery low" is implied by the minutes left
            words = [w for w in words if w[1] != "battery low"]
        minutes = next((i.evidence.get("minutes_remaining") for i in incs if i.evidence.get("on_battery")), None)
        extra = [i.evidence.get(k) for i in incs for k in ("alarms", "battery", "bypass") if i.evidence.get(k)]
        detail_en = "; ".join(str(x if isinstance(x, str) else ", ".join(map(str, x))) for x in extra)
        title = Text(
            f"UPS {device} " + "，".join(w[0] for w in words)
            + (f"，剩余约 {minutes} 分钟" if minutes is not None else "")
            + (f"（{detail_en}）" if detail_en else ""),
            f"UPS {device} " + ", ".join(w[1] for w in words)
            + (f", about {minutes} min left" if minutes is not None else "")
            + (f" ({detail_en})" if detail_en else ""),
        )  # fmt: skip
        rest.append(
            replace(
                worst,
                key=f"{host}/snmp.ups/{device}",
                title=title,
                conditions=sorted({c for i in incs for c in i.conditions}),
                evidence={**worst.evidence, "conditions": sorted(_check(i) for i in incs)},
            )
        )
    return rest


def fold_topology(topo: Topology, incidents: list[Incident], now: float | None = None) -> list[Incident]:
    now = time.time() if now is None else now
    # Lost nodes: unreachable themselves (preferred), or cut off by the port on the parent feeding them.
    lost: dict[str, Incident] = {}
    for inc in incidents:
        node = topo.node_of(inc)
        if node and _check(inc) in LOST_CHECKS:
            lost.setdefault(node, inc)
    for inc in incidents:
        node = topo.node_of(inc)
        if node and _check(inc) == "snmp.interface" and (port := inc.evidence.get("port")):
            child = topo.feeding_port(node, str(port))
            if child:
                lost.setdefault(child, inc)
    owns = {id(inc): node for node, inc in lost.items()}
    for node in lost:
        topo._parent_down_at[node] = now
    # Each lost node's top-most lost ancestor (or itself) owns the incident.
    owner: dict[str, str] = {}
    for node in lost:
        top = node
        for anc in topo.ancestors(node):
            if anc in lost:
                top = anc
        owner[node] = top
    out: list[Incident] = []
    folded: dict[str, list[Incident]] = {}
    for inc in incidents:
        node = topo.node_of(inc)
        check = _check(inc)
        into = None
        if id(inc) in owns:
            top = owner[owns[id(inc)]]
            into = top if top != owns[id(inc)] else None
        elif node is not None and check in (*FOLDABLE_CHECKS, *SERVICE_FOLDABLE):
            if node in lost:
                into = owner[node]
            else:
                tops = [owner[a] for a in topo.ancestors(node) if a in lost]
                into = tops[-1] if tops else None
            if into is None and check == "snmp.interface" and (port := inc.evidence.get("port")):
                child = topo.feeding_port(node, str(port))
                into = owner.get(child) if child else None
        if into is not None:
            folded.setdefault(into, []).append(inc)
            for c in inc.conditions:
                topo._folded[c] = into
            continue
        # A child folded into a parent that recovered moments ago: give it the grace period.
        parents = {topo._folded.get(c) for c in inc.conditions} - {None}
        if parents and all(now - topo._parent_down_at.get(p or "", 0) < topo.cfg.recovery_grace for p in parents):
            continue
        for c in inc.conditions:
            topo._folded.pop(c, None)
        out.append(inc)
    result = []
    for inc in out:
        owned = owns.get(id(inc))
        node = owned or topo.node_of(inc)
        if node is None or _check(inc).startswith("service."):
            result.append(inc)
            continue
        hospital = topo.hospital_wide(node)
        wide = owned is not None or topo.nodes[node].role in ("core", "access")
        deps = topo.departments_behind(node) if wide else topo.nodes[node].own_departments()
        inc = _rescope(inc, hospital, deps)
        if owned is not None:
            behind = folded.get(owned, [])
            inc = replace(
                inc,
                conditions=sorted({*inc.conditions, *(c for f in behind for c in f.conditions)}),
                evidence={
                    **inc.evidence,
                    "node": owned,
                    "role": topo.nodes[owned].role,
                    "affected_departments": inc.departments,
                    "affected_functions": [f.value for f in functions_of(inc.departments)],
                    "devices_behind": topo.descendants(owned),
                    "folded": [_brief(f) for f in behind][:200],
                    "folded_count": len(behind),
                },
            )
        result.append(inc)
    return result


def force_majeure(incidents: list[Incident], lost_count: int, threshold: int, lost_names: list[str]) -> list[Incident]:
    """A UPS on battery while many devices are lost at once: one trigger-6 incident, whole hospital."""
    ups = [i for i in incidents if _check(i) in UPS_CHECKS or i.key.split("/", 2)[1:2] == ["snmp.ups"]]
    on_battery = [i for i in ups if any(c[1] == "snmp.ups.on_battery" for c in i.conditions)]
    if not on_battery or lost_count < threshold:
        return incidents
    host = on_battery[0].key.split("/", 1)[0]
    absorbed = [i for i in incidents if i in ups or _check(i) in LOST_CHECKS or i.evidence.get("folded_count")]
    keep = [i for i in incidents if i not in absorbed]
    fm = replace(
        on_battery[0],
        key=f"{host}/force_majeure",
        trigger=Trigger.FORCE_MAJEURE,
        severity=Severity.CRITICAL,
        scope=Scope.HOSPITAL,
        title=Text(
            f"疑似不可抗力：UPS 转电池供电，同时 {lost_count} 台设备失联",
            f"Suspected force majeure: UPS on battery and {lost_count} devices lost at once",
        ),
        departments=list(dict.fromkeys(d for i in absorbed for d in i.departments)),
        conditions=sorted({c for i in absorbed for c in i.conditions}),
        evidence={
            "check": "force_majeure",
            "ups": [i.evidence.get("device") or i.evidence.get("subject") for i in on_battery],
            "lost_devices": lost_names[:200],
            "lost_count": lost_count,
            "incidents": [_brief(i) for i in absorbed][:200],
        },
    )
    return [fm, *keep]


def fold(incidents: list[Incident]) -> list[Incident]:
    """The classifier's pass (agent/classify.py FOLDS): UPS merge, topology folding, force majeure."""
    incidents = merge_ups(incidents)
    lost_names = sorted(
        {str(i.evidence.get("name") or i.evidence.get("subject")) for i in incidents if _check(i) in LOST_CHECKS}
    )
    topo = _active
    if topo is not None:
        incidents = fold_topology(topo, incidents)
        threshold = topo.cfg.force_majeure_lost
    else:
        threshold = TopologyConfig().force_majeure_lost
    return force_majeure(incidents, len(lost_names), threshold, lost_names)


def down_nodes(topo: Topology, incidents: list[Incident]) -> set[str]:
    """Nodes the incidents say are lost (their own, and those folded into them)."""
    down: set[str] = set()
    for inc in incidents:
        if isinstance(node := inc.evidence.get("node"), str):
            down.add(node)
        for f in inc.evidence.get("folded", []):
            for key in (f.get("device"), f.get("name"), f.get("subject")):
                if isinstance(key, str) and key in topo.by_key and f.get("check") in LOST_CHECKS:
                    down.add(topo.by_key[key])
        if _check(inc) in LOST_CHECKS and (node := topo.node_of(inc)):
            down.add(node)
    return down


def report(cfg: TopologyConfig, incidents: list[Incident]) -> list[str]:
    """What `hisguard-agent once` prints: the tree it understood, what is down, who is affected."""
    topo = Topology(cfg)
    down = down_nodes(topo, incidents)
    lines = ["网络拓扑 / topology (✗ = 故障 down):", *("  " + line for line in topo.tree(down))]
    if down:
        deps = list(dict.fromkeys(d for n in sorted(down) for d in topo.departments_behind(n)))
        funcs = functions_of(deps)
        lines.append(f"  故障节点 / down: {', '.join(sorted(down))}")
        if deps:
            lines.append(f"  受影响科室 / departments affected: {', '.join(deps)}")
        if funcs:
            lines.append("  受影响业务 / functions affected: " + ", ".join(f"{f.text.zh} ({f.text.en})" for f in funcs))
    else:
        lines.append("  全部正常 / nothing down")
    return lines
