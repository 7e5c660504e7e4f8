"""Service probe end to end: a real agent process probes real peers on 127.0.0.1 and a real server process
receives the right incidents — and nothing for the peers that answer as they should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import AgentProc, ServerProc, free_port, wait_until
from tests.support.servicepeers import (
    DicomPeer,
    Dnsmasq,
    HttpPeer,
    HungPeer,
    MllpPeer,
    SmtpPeer,
    make_cert,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerProc(tmp_path_factory.mktemp("service-server")).start()
    yield srv
    srv.stop()


def agent_config(server: ServerProc, name: str, token: str, targets: list[str]) -> str:
    lines = "\n".join(f"  {t}," for t in targets)
    return f"""
[agent]
name = "{name}"
state_dir = "state"
heartbeat_interval = 1

[server]
url = "{server.url}"
token = "{token}"
timeout = 2
retry_max = 1

[[probe.service]]
name = "his"
interval = 3
timeout = 2.5
target_timeout = 2
fail_after = 1
fail_window = 1
clear_after = 1
calling_ae = "HISGUARD"
targets = [
{lines}
]
"""


def cli(tmp_path: Path, server: ServerProc, agent: str, targets: list[str], command: str) -> Any:
    """`hisguard-agent COMMAND -c agent.toml` for an agent of `server` probing `targets`."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(agent_config(server, agent, server.agent_token(agent, "renmin"), targets), encoding="utf-8")
    cmd = [sys.executable, "-m", "hisguard.agent.cli", command, "-c", str(cfg)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_each_peer_gives_the_right_incident_on_the_server(tmp_path: Path, server: ServerProc) -> None:
    pki = make_cert(tmp_path / "pki", days=5)
    with (
        HttpPeer() as web,
        HttpPeer((pki["cert"], pki["key"])) as tls_web,
        HungPeer() as hung,
        SmtpPeer() as smtp,
        DicomPeer("PACS") as pacs,
        MllpPeer("AA") as lis,
        MllpPeer("AE") as lis_error,
        MllpPeer(None) as lis_mute,
        Dnsmasq(tmp_path / "dns", {"his-app.hospital.local": "10.20.0.8"}) as dns,
    ):
        stopped = DicomPeer("PACS").start()
        stopped.stop()  # a PACS that was there and is gone
        u = {
            "ok": web.url("/ok"),
            "error": web.url("/error"),
            "slow": web.url("/slow?ms=700"),
            "hung": f"http://127.0.0.1:{hung.port}/his/health",
            "loop": web.url("/loop"),
            "cert": f"tls://127.0.0.1:{tls_web.port}",
            "banner": f"tcp://127.0.0.1:{smtp.port}",
            "pacs": f"dicom://PACS@127.0.0.1:{pacs.port}",
            "pacs_gone": f"dicom://PACS@127.0.0.1:{stopped.port}",
            "lis": f"mllp://127.0.0.1:{lis.port}",
            "lis_ae": f"mllp://127.0.0.1:{lis_error.port}",
            "lis_mute": f"mllp://127.0.0.1:{lis_mute.port}",
            "dns": f"dns://127.0.0.1:{dns.port}/his-app.hospital.local",
            "dns_missing": f"dns://127.0.0.1:{dns.port}/emr.hospital.local",
        }
        targets = [
            f'{{ url = "{u["ok"]}", name = "HIS 应用服务", hospital_critical = true, body = "status=UP" }}',
            f'{{ url = "{u["error"]}", name = "门诊收费服务", department = "门诊收费" }}',
            f'{{ url = "{u["slow"]}", name = "电子病历", hospital_critical = true, slow_ms = 300 }}',
            f'{{ url = "{u["hung"]}", name = "HIS 接口服务", hospital_critical = true }}',
            f'{{ url = "{u["loop"]}", name = "统一门户" }}',
            f'{{ url = "{u["cert"]}", name = "HIS 证书", hospital_critical = true, ca_file = "{pki["ca"]}" }}',
            f'{{ url = "{u["banner"]}", name = "邮件网关", expect = "^220 " }}',
            f'{{ url = "{u["pacs"]}", name = "PACS", department = "医技检查" }}',
            f'{{ url = "{u["pacs_gone"]}", name = "PACS 备机", department = "医技检查" }}',
            f'{{ url = "{u["lis"]}", name = "LIS 接口", department = "检验科" }}',
            f'{{ url = "{u["lis_ae"]}", name = "LIS 结果回传", department = "检验科" }}',
            f'{{ url = "{u["lis_mute"]}", name = "HL7 集成平台", hospital_critical = true }}',
            f'{{ url = "{u["dns"]}", name = "院内 DNS", hospital_critical = true, answers = ["10.20.0.8"] }}',
            f'{{ url = "{u["dns_missing"]}", name = "EMR 域名" }}',
        ]
        token = server.agent_token("his-app-01", "renmin")
        agent = AgentProc(tmp_path / "agent", agent_config(server, "his-app-01", token, targets)).start()
        expected = {  # url → (trigger, severity, scope, outcome shown in the evidence)
            u["error"]: (2, "urgent", "department", "wrong_answer"),
            u["slow"]: (2, "urgent", "hospital", "too_slow"),
            u["hung"]: (2, "critical", "hospital", "timeout"),
            u["loop"]: (2, "routine", "host", "wrong_answer"),
            u["cert"]: (2, "urgent", "hospital", "answered"),
            u["pacs_gone"]: (2, "urgent", "department", "refused"),
            u["lis_ae"]: (2, "urgent", "department", "wrong_answer"),
            u["lis_mute"]: (2, "critical", "hospital", "timeout"),
            u["dns_missing"]: (2, "routine", "host", "wrong_answer"),
        }

        def mine() -> dict[str, dict[str, Any]]:
            got = {i["evidence"]["subject"]: i for i in server.incidents(status="open") if i["host"] == "his-app-01"}
            return got if set(got) >= set(expected) else {}

        try:
            found = wait_until(mine, 60, interval=0.5, what="the service incidents")
            heartbeat = server.get("/agents")
        finally:
            agent.stop()
    assert "Traceback" not in agent.output(), agent.output()[-3000:]
    assert set(found) == set(expected), sorted(set(found) ^ set(expected))
    for url, (trigger, severity, scope, outcome) in expected.items():
        inc = found[url]
        assert (inc["trigger"], inc["severity"], inc["scope"], inc["evidence"]["outcome"]) == (
            trigger, severity, scope, outcome), (url, inc)  # fmt: skip
        assert inc["key"] == f"his-app-01/service/{url}"
    assert found[u["hung"]]["title_zh"].startswith("HIS 接口服务 服务无正常应答（2 秒内无应答")
    assert found[u["error"]]["evidence"]["status"] == 500
    assert found[u["slow"]]["evidence"]["latency_ms"] >= 700 and found[u["slow"]]["evidence"]["slow_ms"] == 300
    assert "证书即将到期" in found[u["cert"]]["title_zh"] and 4.9 < found[u["cert"]]["evidence"]["value"] <= 5
    assert found[u["lis_ae"]]["evidence"]["ack_code"] == "AE"
    assert found[u["pacs_gone"]]["departments"] == ["医技检查"]
    assert found[u["dns_missing"]]["evidence"]["rcode"] == "NXDOMAIN"
    assert heartbeat and heartbeat[0]["last_seen"]


def test_once_prints_each_services_outcome_and_numbers(tmp_path: Path, server: ServerProc) -> None:
    with HttpPeer() as web, HungPeer() as hung, DicomPeer("PACS") as pacs:
        targets = [
            f'{{ url = "{web.url("/ok")}", name = "HIS 应用服务", hospital_critical = true }}',
            f'{{ url = "{web.url("/error")}", name = "门诊收费服务", department = "门诊收费" }}',
            f'{{ url = "http://127.0.0.1:{hung.port}/", name = "HIS 接口服务", hospital_critical = true }}',
            f'{{ url = "dicom://PACS@127.0.0.1:{pacs.port}", name = "PACS", department = "医技检查" }}',
            f'{{ url = "tcp://127.0.0.1:{free_port()}", name = "旧接口" }}',
        ]
        out = cli(tmp_path, server, "his-app-02", targets, "once").stdout
    section = out[out.index("服务 / services") :]
    lines = section.splitlines()
    ok = next(line for line in lines if "HIS 应用服务" in line)
    assert "应答正常 answered" in ok and " ms" in ok
    assert "应答错误 wrong answer" in next(line for line in lines if "门诊收费服务" in line)
    assert "HTTP 500, expected 2xx" in section
    assert "超时无应答 timed out" in next(line for line in lines if "HIS 接口服务" in line)
    assert "应答正常 answered" in next(line for line in lines if line.lstrip().startswith("PACS"))
    assert "拒绝连接 refused" in next(line for line in lines if "旧接口" in line)
    assert "事件 / incidents (3)" in out
    assert "已送达" in out and "delivered" in out


def test_doctor_names_each_service_that_does_not_answer(tmp_path: Path, server: ServerProc) -> None:
    with HttpPeer() as web, HungPeer() as hung:
        targets = [
            f'{{ url = "{web.url("/ok")}", name = "HIS 应用服务" }}',
            f'{{ url = "http://127.0.0.1:{hung.port}/", name = "HIS 接口服务" }}',
            f'{{ url = "tcp://127.0.0.1:{free_port()}", name = "旧接口" }}',
        ]
        done = cli(tmp_path, server, "his-app-03", targets, "doctor")
    out = done.stdout
    assert "探针 his：3 项观测" in out or "probe his: 3 observations" in out
    assert "[WARN] 服务 HIS 接口服务" in out and "超时无应答" in out
    assert "[WARN] 服务 旧接口" in out and "拒绝连接" in out
    assert "HIS 应用服务" not in out.split("probe his")[1]  # the one answering is not a finding
    assert "防火墙" in out  # what to check, in words


def test_console_shows_services_and_draws_their_latency(tmp_path: Path, server: ServerProc) -> None:
    import re

    import httpx

    password = tmp_path / "pw"
    password.write_text("console-password-1\n")
    server.cli("user", "create", "--name", "eng-svc", "--role", "engineer", "--password-file", str(password))
    with HttpPeer() as web, HungPeer() as hung:
        ok, slow, silent = web.url("/ok"), web.url("/slow?ms=400"), f"http://127.0.0.1:{hung.port}/"
        targets = [
            f'{{ url = "{ok}", name = "HIS 应用服务", hospital_critical = true }}',
            f'{{ url = "{slow}", name = "电子病历" }}',
            f'{{ url = "{silent}", name = "HIS 接口服务" }}',
        ]
        token = server.agent_token("his-app-04", "zhongyi")  # a site of its own: its page shows only these
        agent = AgentProc(tmp_path / "agent", agent_config(server, "his-app-04", token, targets)).start()
        try:
            with httpx.Client(base_url=server.url, timeout=10) as c:
                page = c.get("/login").text
                csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
                c.post("/login", data={"name": "eng-svc", "password": "console-password-1", "csrf": csrf})
                agent_id = next(a["id"] for a in server.get("/agents") if a["name"] == "his-app-04")

                def drawn() -> str | None:
                    host = c.get(f"/hosts/{agent_id}").text
                    lines = re.findall(r'data-chart="service_latency".*?</figure>', host, re.S)
                    return (
                        lines[0]
                        if lines and lines[0].count('data-count="') == 2 and 'data-count="1"' not in lines[0]
                        else None
                    )

                chart = wait_until(drawn, 30, interval=0.5, what="two samples of each service's latency")
                site = c.get("/sites/zhongyi").text
        finally:
            agent.stop()
    names = re.findall(r'<polyline class="series" data-name="([^"]+)"', chart)
    assert sorted(names) == sorted(["HIS 应用服务", "电子病历"])  # by name; no answer, no latency
    assert "服务响应时间 ms" in chart
    rows = {url: css for css, url in re.findall(r'<tr class="([^"]*)" data-service="([^"]+)"', site)}
    assert rows == {ok: "", slow: "", silent: "bad"}
    assert "业务服务与接口" in site and "HIS 接口服务" in site


def test_a_pacs_that_stops_opens_an_incident_and_its_return_resolves_it(tmp_path: Path, server: ServerProc) -> None:
    pacs = DicomPeer("PACS").start()
    url = f"dicom://PACS@127.0.0.1:{pacs.port}"
    targets = [f'{{ url = "{url}", name = "PACS", department = "医技检查" }}']
    token = server.agent_token("ris-01", "renmin")
    agent = AgentProc(tmp_path / "agent", agent_config(server, "ris-01", token, targets)).start()

    def incidents(status: str) -> list[dict[str, Any]]:
        return [i for i in server.incidents(status=status) if i["host"] == "ris-01"]

    try:
        agent_id = wait_until(
            lambda: next((a["id"] for a in server.get("/agents") if a["name"] == "ris-01" and a["last_seen"]), None),
            30, what="heartbeat",
        )  # fmt: skip
        wait_until(
            lambda: any(o["check"] == "service.answer" and o["ok"] for o in
                        (server.get(f"/agents/{agent_id}/health").get("snapshot") or {}).get("observations", [])),
            30, what="the PACS answering",
        )  # fmt: skip
        assert incidents("open") == []
        pacs.stop()
        (inc,) = wait_until(lambda: incidents("open"), 30, interval=0.5, what="the PACS incident")
        assert (inc["trigger"], inc["severity"], inc["evidence"]["outcome"]) == (2, "urgent", "refused")
        pacs.start()  # the same SCP, the same port
        (done,) = wait_until(lambda: incidents("resolved"), 30, interval=0.5, what="the PACS incident resolved")
        assert done["id"] == inc["id"] and incidents("open") == []
    finally:
        agent.stop()
        pacs.stop()
