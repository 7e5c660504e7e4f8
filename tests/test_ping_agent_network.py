"""The agent's own network: nothing sendable to any ping target is one incident, not one per target."""

from hisguard.agent.classify import Failing, classify
from hisguard.checks.base import Impact, Observation
from hisguard.plan import Scope, Severity, Trigger


def unsendable(address: str, job: str = "network", **impact: object) -> Failing:
    detail = {"outcome": "unsendable", "sent": 0, "received": 0, "error": "ENETUNREACH: Network is unreachable"}
    return Failing(job, Observation("ping.reachable", address, False, Impact(**impact), detail=detail))


def own_network(job: str = "network") -> Failing:
    detail = {"outcome": "unsendable", "targets": 3, "interfaces_down": ["eth0"], "route": "no route"}
    obs = Observation("ping.agent_network", "his-app-01", False, Impact(), name="eth0 down", detail=detail)
    return Failing(job, obs)


def test_nothing_sendable_is_one_trigger_1_incident_naming_the_interface():
    targets = [unsendable("10.0.0.1", hospital_critical=True), unsendable("10.0.1.5", department="门诊收费"),
               unsendable("10.0.2.9")]  # fmt: skip
    (inc,) = classify("his-app-01", [*targets, own_network()])
    assert inc.key == "his-app-01/ping.agent_network/his-app-01"
    assert inc.trigger is Trigger.HARDWARE and inc.severity is Severity.URGENT and inc.scope is Scope.HOST
    assert "eth0 down" in inc.title.en and "本机网络故障" in inc.title.zh
    assert inc.evidence["interfaces_down"] == ["eth0"]
    assert inc.evidence["targets_cut_off"] == ["10.0.0.1", "10.0.1.5", "10.0.2.9"]
    assert inc.conditions == [("network", "ping.agent_network", "his-app-01")]  # the targets' stay their own


def test_targets_of_another_job_or_failing_otherwise_keep_their_incidents():
    lost = Failing("network", Observation("ping.reachable", "10.0.0.7", False, detail={"outcome": "lost"}))
    other_job = unsendable("10.9.0.1", job="wan")
    # answering again after the repair, not yet cleared: no incident of its own flashes up
    back = Failing("network", Observation("ping.reachable", "10.0.0.8", True, detail={"outcome": "answered"}))
    incs = classify("h", [unsendable("10.0.0.1"), lost, other_job, back, own_network()])
    assert sorted(i.key for i in incs) == [
        "h/ping.agent_network/his-app-01", "h/ping.reachable/10.0.0.7", "h/ping.reachable/10.9.0.1"]  # fmt: skip


def test_targets_cut_off_are_not_devices_lost_for_force_majeure():
    ups = Failing("ups", Observation("snmp.ups.on_battery", "ups-1", False, detail={"device": "ups-1"}))
    targets = [unsendable(f"10.0.0.{i}") for i in range(1, 9)]
    checks = sorted(i.evidence.get("check") for i in classify("h", [*targets, own_network(), ups]))
    assert "force_majeure" not in checks and checks == ["ping.agent_network", "snmp.ups.on_battery"]
    # the same eight targets really lost (silence) with the UPS on battery are force majeure
    lost = [Failing("network", Observation("ping.reachable", f"10.0.0.{i}", False, detail={"outcome": "lost"}))
            for i in range(1, 9)]  # fmt: skip
    assert [i.evidence.get("check") for i in classify("h", [*lost, ups])] == ["force_majeure"]
