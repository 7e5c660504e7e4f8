"""`hisguard-agent once` and `doctor` say, per ping target, what happened — and doctor never says all good
when nothing could be sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from hisguard.agent.cli import main as agent_main
from tests.support.netns import TestNet, need_namespaces
from tests.support.peers import need_root
from tests.support.pingagent import ping_agent_config
from tests.support.procs import ServerProc


@pytest.fixture(scope="module")
def net():
    need_namespaces()
    with TestNet() as n:
        for name in ("ok", "lost", "refused", "cut"):
            n.add(name)
        n.drop("lost")
        n.reject("refused", "admin-prohibited")
        n.agent_link_down("cut")
        yield n


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    need_root()
    srv = ServerProc(tmp_path_factory.mktemp("server")).start()
    srv.token = srv.agent_token("his-db-01", "renmin")
    yield srv
    srv.stop()


def write(tmp_path: Path, server: ServerProc, net: TestNet, names: list[str]) -> str:
    rows = [f'{{ address = "{net.hosts[n].address}", name = "{n}-pc" }}' for n in names]
    text = ping_agent_config(
        server.url, server.token, rows, "his-db-01", interval=5, timeout=2, count=2, reply_timeout=0.3, privileged="yes"
    )
    conf = tmp_path / "agent.toml"
    conf.write_text(text, encoding="utf-8")
    return str(conf)


def test_once_prints_each_targets_outcome(net, server, tmp_path, capsys):
    assert agent_main(["once", "-c", write(tmp_path, server, net, ["ok", "lost", "refused", "cut"])]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[2]: line for line in out.splitlines() if line.startswith("network ")}
    assert "ok" in rows["ok-pc"].split() and "有应答 answered 2/2" in rows["ok-pc"]
    assert "FAIL" in rows["lost-pc"] and "无应答（丢失） silently lost 0/2" in rows["lost-pc"]
    refused = net.hosts["refused"].address
    assert f"被拒绝（ICMP 差错） refused (ICMP error) 0/2: ICMP admin-prohibited from {refused}" in rows["refused-pc"]
    assert "无法发送 not sendable 0/0: EHOSTUNREACH: No route to host" in rows["cut-pc"]
    assert f"({net.hosts['cut'].veth} down)" in rows["cut-pc"]
    assert "本机网络正常 own network ok (4 targets, 1 not sendable)" in rows["his-db-01"]


def test_doctor_names_every_unanswered_target(net, server, tmp_path, capsys):
    assert agent_main(["doctor", "-c", write(tmp_path, server, net, ["ok", "lost", "refused", "cut"])]) == 1
    out = capsys.readouterr().out
    assert "probe network: 4 targets: 1 answered, 1 lost, 1 refused, 1 unsendable" in out
    assert "[WARN] network lost-pc: 无应答（丢失） silently lost 0/2" in out
    assert "[WARN] network refused-pc: 被拒绝（ICMP 差错） refused (ICMP error) 0/2: ICMP admin-prohibited" in out
    assert "[FAIL] network cut-pc: 无法发送 not sendable 0/0: EHOSTUNREACH" in out and "ip route" in out
    assert "1 problem(s) to fix" in out


def test_doctor_never_says_all_good_when_nothing_could_be_sent(net, server, tmp_path, capsys):
    assert agent_main(["doctor", "-c", write(tmp_path, server, net, ["ok"])]) == 0
    assert "all good" in capsys.readouterr().out
    net.agent_link_down("ok")
    try:
        assert agent_main(["doctor", "-c", write(tmp_path, server, net, ["ok"])]) == 1
    finally:
        net.agent_link_up("ok")
    out = capsys.readouterr().out
    assert "all good" not in out and "全部正常" not in out
    assert "[FAIL] 探针 network：1 个目标全部无法发送，本机网络故障" in out
    assert (
        f"nothing could be sent to any of 1 targets — this host's network is failing ({net.hosts['ok'].veth} down"
        in out
    )
