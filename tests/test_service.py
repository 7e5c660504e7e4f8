"""Service install: systemd units checked by `systemd-analyze verify`, Windows service command line without pywin32."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hisguard.agent import service, winservice
from hisguard.agent.cli import main as agent_main
from hisguard.server import service as server_service
from tests.support.peers import need_binary

AGENT_TOML = """
[agent]
name = "his-db-01"
state_dir = "{state}"
heartbeat_interval = 1
[server]
url = "http://127.0.0.1:9"
token = "hga_x"
timeout = 1
[[probe.host]]
interval = 1
timeout = 1
"""


@pytest.fixture
def agent_config(tmp_path: Path) -> Path:
    conf = tmp_path / "agent.toml"
    conf.write_text(AGENT_TOML.format(state=tmp_path / "state"), encoding="utf-8")
    return conf


def verify(unit_text: str, tmp_path: Path, name: str) -> tuple[int, list[str]]:
    """Run systemd-analyze verify; return its exit code and every complaint about our unit."""
    analyze = need_binary("systemd-analyze")
    path = tmp_path / "units" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(unit_text, encoding="utf-8")
    out = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if name in line]
    return out.returncode, complaints


def test_agent_unit_passes_systemd_analyze_verify(agent_config: Path, tmp_path: Path) -> None:
    text = service.render_unit(service.agent_unit(agent_config))
    rc, complaints = verify(text, tmp_path, "hisguard-agent.service")
    assert rc == 0 and complaints == [], complaints
    lines = text.splitlines()
    assert "User=hisguard" in lines and "Restart=on-failure" in lines
    assert "AmbientCapabilities=CAP_NET_RAW" in lines and "CapabilityBoundingSet=CAP_NET_RAW" in lines
    assert "NoNewPrivileges=yes" in lines and "ProtectSystem=strict" in lines
    assert f"ReadWritePaths={tmp_path / 'state'}" in lines
    assert f"ExecStart={sys.executable} -m hisguard.agent.cli run -c {agent_config}" in lines


def test_verify_catches_a_broken_unit(agent_config: Path, tmp_path: Path) -> None:
    # The check above can fail: a misspelt option or a missing program is reported.
    text = service.render_unit(service.agent_unit(agent_config))
    rc, complaints = verify(text.replace("ProtectClock=yes", "ProtectClok=yes"), tmp_path, "typo.service")
    assert any("ProtectClok" in c for c in complaints)
    missing = text.replace(sys.executable, "/nonexistent/python3")
    rc, complaints = verify(missing, tmp_path, "missing.service")
    assert rc != 0 or complaints


def test_server_unit_passes_verify_and_has_no_capabilities(tmp_path: Path) -> None:
    conf = tmp_path / "server.toml"
    conf.write_text("[server]\nport = 8470\n")
    text = service.render_unit(server_service.server_unit(conf, "hisguard"))
    rc, complaints = verify(text, tmp_path, "hisguard-server.service")
    assert rc == 0 and complaints == [], complaints
    assert (
        "CapabilityBoundingSet=" in text.splitlines() and "Environment=HISGUARD_DATA=/var/lib/hisguard-server" in text
    )
    conf.write_text("[server]\nport = 443\n")
    low = service.render_unit(server_service.server_unit(conf, "hisguard"))
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in low.splitlines()


def test_install_status_uninstall_in_a_unit_directory(agent_config: Path, tmp_path: Path, capsys) -> None:
    units = tmp_path / "units"
    base = ["service", "--unit-dir", str(units), "--user", "nobody"]
    assert agent_main([*base[:1], "install", *base[1:], "-c", str(agent_config), "--no-start"]) == 0
    unit = units / "hisguard-agent.service"
    assert "User=nobody" in unit.read_text().splitlines()
    assert (tmp_path / "state").is_dir()
    assert agent_main([base[0], "status", *base[1:]]) == 3  # installed, systemd not running in this container
    assert "installed" in capsys.readouterr().out
    assert agent_main([base[0], "uninstall", *base[1:]]) == 0
    assert not unit.exists()
    assert agent_main([base[0], "status", *base[1:]]) == 3
    assert "not installed" in capsys.readouterr().out


def test_install_with_a_broken_config_is_refused(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\nnmae = 1\n")
    assert agent_main(["service", "install", "-c", str(bad), "--unit-dir", str(tmp_path)]) == 2
    assert "configuration error" in capsys.readouterr().err
    assert not (tmp_path / "hisguard-agent.service").exists()


def test_windows_command_line_without_pywin32(agent_config: Path, monkeypatch, capsys) -> None:
    assert not winservice.HAVE_PYWIN32
    monkeypatch.setattr(sys, "platform", "win32")
    assert agent_main(["service", "install"]) == 2
    assert "install needs -c CONFIG" in capsys.readouterr().err
    for action in ("install", "status", "uninstall"):
        assert agent_main(["service", action, "-c", str(agent_config)]) == 2
        err = capsys.readouterr().err
        assert "pip install pywin32" in err and "pywin32" in err
    assert service.sc_failure_command("hisguard-agent") == [
        "sc.exe",
        "failure",
        "hisguard-agent",
        "reset=",
        "86400",
        "actions=",
        "restart/5000/restart/5000/restart/60000",
    ]


def test_windows_service_body_runs_and_stops_the_agent(agent_config: Path, tmp_path: Path) -> None:
    runner = winservice.AgentRunner(agent_config)
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert runner.started.wait(20)
    time.sleep(1.5)  # a probe round and a heartbeat attempt
    runner.stop()  # what SvcStop does, from the service manager's thread
    thread.join(15)
    assert not thread.is_alive()
    log = (tmp_path / "state" / "logs" / "agent.log").read_text(encoding="utf-8")
    assert "agent his-db-01 started" in log
