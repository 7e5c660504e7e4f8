"""Service results → incidents: trigger 2 with the target's scope, slowness at most urgent, certificate expiry
routine then urgent, one incident per target, and a service behind a failed switch folded into the switch's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hisguard.agent.classify import Failing, Incident, classify
from hisguard.agent.config import load_config
from hisguard.agent.runtime import Agent
from hisguard.agent.topology import TopologyConfig, activate
from hisguard.checks.service import Config, observations
from hisguard.checks.service.result import Certificate, Result
from hisguard.plan import Scope, Severity, Trigger
from tests.support import peers
from tests.support.netns import TestNet
from tests.support.procs import free_port

URL = "http://10.0.0.8:8080/his/health"


def failing(target: dict[str, Any], result: Result, **job: Any) -> list[Failing]:
    """The failed conditions the probe reports for this result (the same code path as a real round)."""
    cfg = Config(targets=[target], **job)
    return [Failing("his", o) for o in observations(cfg.targets[0], cfg, result) if o.ok is False]


def one(failed: list[Failing]) -> Incident:
    (inc,) = classify("his-app-01", failed)
    return inc


@pytest.mark.parametrize(
    ("impact", "scope", "severity"),
    [
        ({"hospital_critical": True}, Scope.HOSPITAL, Severity.CRITICAL),
        ({"department": "门诊收费"}, Scope.DEPARTMENT, Severity.URGENT),
        ({}, Scope.HOST, Severity.ROUTINE),
    ],
)
def test_not_answering_is_trigger_2_with_the_targets_scope(impact: dict, scope: Scope, severity: Severity) -> None:
    inc = one(failing({"url": URL, "name": "HIS 应用服务", **impact}, Result("timeout", None, "no answer within 5s")))
    assert (inc.trigger, inc.scope, inc.severity) == (Trigger.SOFTWARE, scope, severity)
    assert inc.key == f"his-app-01/service/{URL}"
    assert inc.title.zh == "HIS 应用服务 服务无正常应答（5 秒内无应答，服务可能挂起）"
    assert inc.title.en == "HIS 应用服务 is not answering properly (no answer within 5s: hung?)"
    assert inc.evidence["outcome"] == "timeout" and inc.evidence["timeout_s"] == 5.0


def test_each_way_of_not_answering_says_so() -> None:
    for outcome, error, zh in (
        ("refused", "connection refused", "（拒绝连接）"),
        ("unreachable", "host name not found", "（网络不可达：host name not found）"),
        ("wrong_answer", "HTTP 500, expected 2xx", "（应答错误：HTTP 500, expected 2xx）"),
    ):
        inc = one(failing({"url": URL, "hospital_critical": True}, Result(outcome, None, error)))  # type: ignore[arg-type]
        assert inc.title.zh.endswith(zh) and inc.severity is Severity.CRITICAL


def test_too_slow_is_urgent_at_most() -> None:
    slow = Result("too_slow", 4200.0)
    inc = one(failing({"url": URL, "hospital_critical": True, "slow_ms": 2000}, slow))
    assert (inc.trigger, inc.scope, inc.severity) == (Trigger.SOFTWARE, Scope.HOSPITAL, Severity.URGENT)
    assert inc.title.zh == f"{URL} 响应过慢（4200 毫秒）" and inc.evidence["slow_ms"] == 2000


def test_certificate_expiry_is_routine_then_urgent_in_one_incident() -> None:
    import time

    target = {"url": "tls://10.0.0.8:443", "name": "HIS 证书", "hospital_critical": True}
    in_20_days = Result("answered", 3.0, cert=Certificate(time.time() + 20 * 86400))
    in_5_days = Result("answered", 3.0, cert=Certificate(time.time() + 5 * 86400))
    early, late = one(failing(target, in_20_days)), one(failing(target, in_5_days))
    assert (early.severity, late.severity) == (Severity.ROUTINE, Severity.URGENT)
    assert early.key == late.key == "his-app-01/service/tls://10.0.0.8:443"  # the same incident, raised
    assert early.title.zh == "HIS 证书 证书 20 天内到期"
    assert late.title.zh.startswith("HIS 证书 证书即将到期（剩 5.0 天）")
    assert late.evidence["conditions"] == ["service.cert.urgent", "service.cert"]
    assert early.signature() != late.signature()  # told to the server again


def test_expired_certificate_is_not_answering() -> None:
    import time

    expired = Result("wrong_answer", 3.0, "certificate expired 2.0 days ago", cert=Certificate(time.time() - 2 * 86400))
    inc = one(failing({"url": "https://10.0.0.8/", "department": "门诊收费"}, expired))
    assert inc.severity is Severity.URGENT and "certificate expired" in inc.title.en
    assert inc.evidence["check"] == "service.answer"
    assert sorted(c[1] for c in inc.conditions) == ["service.answer", "service.cert", "service.cert.urgent"]


def test_slow_then_down_is_one_incident_raised() -> None:
    target = {"url": URL, "hospital_critical": True, "slow_ms": 1000}
    slow = one(failing(target, Result("too_slow", 3000.0)))
    # Down: the latency condition is unknown (ok None) and stays failed; the answer condition fails too.
    down = one([*failing(target, Result("too_slow", 3000.0)), *failing(target, Result("timeout", None, "x"))])
    assert slow.key == down.key
    assert (slow.severity, down.severity) == (Severity.URGENT, Severity.CRITICAL)
    assert down.conditions[0][1] == "service.answer" and len(down.conditions) == 2


def test_a_very_long_url_keeps_the_key_within_the_servers_limit() -> None:
    url = "http://10.0.0.8/" + "x" * 1000
    inc = one(failing({"url": url}, Result("refused", None, "connection refused")))
    assert len(inc.key) <= 400 and inc.key.startswith("his-app-01/service/")
    assert inc.evidence["subject"] == url


# -- topology -------------------------------------------------------------------------------------------

TOPOLOGY = {
    "node": [
        {"name": "core", "role": "core", "address": "10.0.0.1"},
        {"name": "acc-opd", "role": "access", "parent": "core", "address": "10.0.1.1", "department": "门诊收费",
         "hosts": [{"name": "his-app", "address": "10.0.1.8"}, {"name": "pacs", "address": "10.0.1.20"}]},
    ]
}  # fmt: skip


@pytest.fixture
def topology() -> Any:
    topo = activate(TopologyConfig.model_validate(TOPOLOGY))
    yield topo
    activate(None)


def switch_down(name: str, address: str) -> Failing:
    from hisguard.checks.base import Impact, Observation

    return Failing("net", Observation("ping.reachable", address, False, Impact(), 1.0, name))


def test_a_service_behind_a_failed_switch_is_evidence_of_the_switchs_incident(topology: Any) -> None:
    his = failing({"url": "http://10.0.1.8:8080/his", "hospital_critical": True}, Result("timeout", None, "x"))
    pacs = failing({"url": "dicom://PACS@pacs:104", "node": "pacs"}, Result("refused", None, "connection refused"))
    (inc,) = classify("netmon", [switch_down("acc-opd", "10.0.1.1"), *his, *pacs])
    assert inc.trigger is Trigger.HARDWARE and inc.evidence["node"] == "acc-opd"
    assert inc.evidence["folded_count"] == 2
    assert {f["subject"] for f in inc.evidence["folded"]} == {"http://10.0.1.8:8080/his", "dicom://PACS@pacs:104"}
    assert ("his", "service.answer", "http://10.0.1.8:8080/his") in inc.conditions


def test_a_service_whose_path_is_up_keeps_its_own_scope(topology: Any) -> None:
    his = failing({"url": "http://10.0.1.8:8080/his", "hospital_critical": True}, Result("timeout", None, "x"))
    (inc,) = classify("netmon", his)
    assert (inc.trigger, inc.scope, inc.severity) == (Trigger.SOFTWARE, Scope.HOSPITAL, Severity.CRITICAL)


def test_an_expiring_certificate_is_not_folded_into_a_lost_switch(topology: Any) -> None:
    import time

    cert = failing({"url": "tls://10.0.1.8:443"}, Result("answered", 2.0, cert=Certificate(time.time() + 10 * 86400)))
    incs = classify("netmon", [switch_down("acc-opd", "10.0.1.1"), *cert])
    assert sorted(i.evidence["check"] for i in incs) == ["ping.reachable", "service.cert"]


# -- live: a real switch cut in network namespaces, a real HTTP server behind it ---------------------------


@pytest.fixture
def hospital_net() -> Any:
    peers.need_root()
    peers.need_binary("ip")
    with TestNet() as net:
        switch, app = net.add("acc"), net.add("app")
        port = free_port()
        server = subprocess.Popen(
            ["ip", "netns", "exec", app.ns, sys.executable, "-m", "http.server", "--bind", app.address, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield net, switch, app, port
        finally:
            server.terminate()
            server.wait(10)
            activate(None)


async def test_cutting_the_switch_yields_one_incident_with_the_service_in_it(hospital_net: Any, tmp_path: Path) -> None:
    net, switch, app, port = hospital_net
    url = f"http://{app.address}:{port}/"
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
name = "netmon"
state_dir = "{tmp_path / "state"}"
[server]
url = "http://127.0.0.1:9"
token = "x"
[[probe.ping]]
name = "net"
interval = 10
timeout = 5
count = 2
reply_timeout = 0.5
targets = [ {{ address = "{switch.address}", name = "acc-opd" }} ]
[[probe.service]]
name = "his"
interval = 10
timeout = 5
target_timeout = 1.5
targets = [ {{ url = "{url}", name = "HIS 应用服务", hospital_critical = true }} ]
[topology]
[[topology.node]]
name = "core"
role = "core"
[[topology.node]]
name = "acc-opd"
role = "access"
parent = "core"
address = "{switch.address}"
department = "门诊收费"
hosts = [ {{ name = "his-app", address = "{app.address}" }} ]
""",
        encoding="utf-8",
    )
    agent = Agent(load_config(path))

    async def round_of() -> list[Incident]:
        for job in agent.cfg.jobs:
            await agent.run_round(job, confirm=False)
        return agent.current_incidents()

    try:
        for _ in range(20):  # the server in the namespace takes a moment to listen
            if await round_of() == []:
                break
            await asyncio.sleep(0.25)
        assert await round_of() == []
        net.down("app")  # the application server alone is cut off: the service's own incident
        try:
            (alone,) = await round_of()
        finally:
            net.up("app")
        assert (alone.trigger, alone.scope, alone.severity) == (Trigger.SOFTWARE, Scope.HOSPITAL, Severity.CRITICAL)
        assert alone.evidence["outcome"] in ("timeout", "unreachable")
        net.down("acc")  # the switch fails, and everything behind it with it
        net.down("app")
        try:
            (inc,) = await round_of()
        finally:
            net.up("acc")
            net.up("app")
        assert inc.trigger is Trigger.HARDWARE and inc.evidence["node"] == "acc-opd"
        assert [f["subject"] for f in inc.evidence["folded"]] == [url]
        assert ("his", "service.answer", url) in inc.conditions
    finally:
        agent.store.close()
