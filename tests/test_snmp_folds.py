"""One fault, one incident: parts of one device, and one ransomware run on one host (the classifier's folds)."""

from __future__ import annotations

import os
from pathlib import Path

from hisguard.agent.classify import Failing, classify
from hisguard.checks import canary
from hisguard.checks.base import Impact, Observation, ProbeContext
from hisguard.plan import Scope, Severity, Trigger


async def test_one_ransomware_run_tripping_three_canaries_is_one_critical_incident(tmp_path: Path):
    folder = tmp_path / "共享" / "财务科"
    folder.mkdir(parents=True)
    (tmp_path / "state").mkdir()
    cfg = canary.Config(name="bait", folders=[folder], mode="poll")
    ctx = ProbeContext(host="mzsf-01", state_dir=tmp_path / "state")
    obs = await canary.probe(cfg, ctx)  # plants
    baits = sorted(Path(o.detail["path"]) for o in obs if o.check == "canary.tripped")
    assert len(baits) == 3
    for path in baits:  # the attack encrypts every file in the share, the baits among them
        path.write_bytes(os.urandom(4096))
    obs = await canary.probe(cfg, ctx)
    tripped = [o for o in obs if o.check == "canary.tripped" and o.ok is False]
    assert len(tripped) == 3
    burst = Observation("canary.rename_burst", "folders", False, Impact(), 40.0, name=str(folder),
                        detail={"count": 40, "samples": ["a.xlsx.lockbit"], "window_s": 60})  # fmt: skip
    (inc,) = classify(ctx.host, [Failing("bait", o) for o in [*tripped, burst]])
    assert (inc.trigger, inc.severity, inc.key) == (Trigger.VIRUS, Severity.CRITICAL, "mzsf-01/canary")
    assert sorted(inc.evidence["canaries"]) == sorted(p.name for p in baits) and inc.evidence["canary_count"] == 3
    assert inc.evidence["renames"]["count"] == 40
    assert "3" in inc.title.en and "ransomware" in inc.title.en
    assert len(inc.conditions) == 4


def test_canaries_on_two_hosts_are_two_incidents():
    def trip(host: str, name: str) -> Failing:
        return Failing("bait", Observation("canary.tripped", f"/{name}", False, Impact(), name=name))

    # The agent classifies its own host's conditions; a second host is a second agent.
    assert len(classify("pc-1", [trip("pc-1", "a.csv"), trip("pc-1", "b.csv")])) == 1
    assert [i.key for i in classify("pc-2", [trip("pc-2", "a.csv")])] == ["pc-2/canary"]


def test_failed_parts_of_one_device_and_its_ports_each_fold_to_one_incident():
    impact = Impact(hospital_critical=True)

    def port(n: int) -> Failing:
        detail = {"device": "core", "port": f"GE0/0/{n}", "if_index": n}
        return Failing("snmp", Observation("snmp.interface", f"core/GE0/0/{n}", False, impact, 2.0,
                                           name=f"core GE0/0/{n}", detail=detail))  # fmt: skip

    faults = ["fan 1: abnormal", "power supply 2: not supplying"]
    hw = Failing("snmp", Observation("snmp.hardware", "core", False, impact, 2.0, name="core",
                                     detail={"device": "core", "faults": faults}))  # fmt: skip
    incs = {i.evidence["check"]: i for i in classify("agent-1", [port(1), port(2), port(3), hw])}
    assert set(incs) == {"snmp.interface", "snmp.hardware"}
    ports = incs["snmp.interface"]
    assert (ports.key, ports.scope, ports.severity) == (
        "agent-1/snmp.interface/core",
        Scope.HOSPITAL,
        Severity.CRITICAL,
    )
    assert [p["port"] for p in ports.evidence["ports"]] == ["GE0/0/1", "GE0/0/2", "GE0/0/3"]
    assert incs["snmp.hardware"].evidence["faults"] == faults
