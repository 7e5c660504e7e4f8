"""`hisguard-agent doctor`: real server (reachable, token right or wrong, down), real ICMP sockets, real probes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hisguard.agent import doctor
from hisguard.agent.cli import main as agent_main
from tests.support.peers import need_root
from tests.support.procs import ServerProc, free_port

CONFIG = """
[agent]
name = "his-db-01"
state_dir = "state"
[server]
url = "{url}"
token = "{token}"
timeout = 2
[[probe.host]]
{host_extra}
[[probe.ping]]
name = "core"
interval = 10
timeout = 5
count = 1
reply_timeout = 1
privileged = "{privileged}"
targets = [{{ address = "127.0.0.1", name = "loopback" }}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProc(tmp_path_factory.mktemp("server")).start()
    srv.token = srv.agent_token("his-db-01", "renmin")
    yield srv
    srv.stop()


def run_doctor(tmp_path: Path, capsys, url: str, token: str, privileged: str = "yes", host_extra: str = ""):
    conf = tmp_path / "agent.toml"
    conf.write_text(CONFIG.format(url=url, token=token, privileged=privileged, host_extra=host_extra), encoding="utf-8")
    rc = agent_main(["doctor", "-c", str(conf)])
    return rc, capsys.readouterr().out


def test_all_good(server: ServerProc, tmp_path: Path, capsys) -> None:
    need_root()
    rc, out = run_doctor(tmp_path, capsys, server.url, server.token)
    assert rc == 0, out
    assert "token accepted (agent token)" in out and "令牌有效" in out
    assert "core: raw ICMP sockets work" in out
    assert "probe host:" in out and "probe core: 1 targets: 1 answered" in out
    assert "all good" in out and "全部正常" in out


@pytest.mark.parametrize(
    ("token", "says"),
    [("hga_not-a-real-token", "the server does not know this token"), ("engineer", "not an agent token")],
)
def test_wrong_token_says_how_to_make_one(server: ServerProc, tmp_path: Path, capsys, token: str, says: str) -> None:
    token = server.engineer_token if token == "engineer" else token
    rc, out = run_doctor(tmp_path, capsys, server.url, token)
    assert rc == 1
    assert "server reachable" in out and says in out
    assert "hisguard-server token create --agent NAME --site SITE" in out and "修复" in out


def test_server_down(tmp_path: Path, capsys) -> None:
    rc, out = run_doctor(tmp_path, capsys, f"http://127.0.0.1:{free_port()}", "hga_x")
    assert rc == 1
    assert "cannot reach the server" in out and "无法连接服务器" in out and "firewall" in out


def test_unprivileged_icmp_refused_suggests_raw(server: ServerProc, tmp_path: Path, capsys) -> None:
    need_root()
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
        pytest.skip("unprivileged ICMP is allowed here (ping_group_range covers root)")
    except OSError:
        pass
    rc, out = run_doctor(tmp_path, capsys, server.url, server.token, privileged="no")
    assert rc == 1
    assert "core: no unprivileged ICMP socket" in out
    assert 'set privileged = "yes"' in out


def test_raw_icmp_refused_says_how_to_grant_it(
    server: ServerProc, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A non-root user cannot open raw sockets; the kernel answer is reproduced, the rest is real.
    real = socket.socket

    def no_raw(family: int = -1, kind: int = -1, proto: int = -1, *a: object) -> socket.socket:
        if kind == socket.SOCK_RAW:
            raise PermissionError(1, "Operation not permitted")
        return real(family, kind, proto, *a)

    monkeypatch.setattr(doctor.socket, "socket", no_raw)
    conf = tmp_path / "agent.toml"
    conf.write_text(CONFIG.format(url=server.url, token=server.token, privileged="yes", host_extra=""))
    from hisguard.agent.config import load_config

    findings = doctor.check_icmp(load_config(conf))
    assert [f.status for f in findings] == ["FAIL"]
    assert "Operation not permitted" in findings[0].what.en
    assert "CAP_NET_RAW" in findings[0].fix.en and "setcap" in findings[0].fix.zh


def test_a_probe_that_cannot_observe_is_named_with_its_error(server: ServerProc, tmp_path: Path, capsys) -> None:
    rc, out = run_doctor(
        tmp_path, capsys, server.url, server.token, privileged="auto", host_extra='services = ["MSSQLSERVER"]'
    )
    assert rc == 1
    assert "probe host cannot observe: services are Windows services" in out
    assert "探针 host 无法观测" in out


def test_broken_config_exit_2(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text("[agent]\nname = 1\n")
    assert agent_main(["doctor", "-c", str(conf)]) == 2
    assert "configuration error" in capsys.readouterr().out
