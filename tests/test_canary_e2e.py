"""Canaries end to end: a real agent process plants and watches, a real server receives the critical incident."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support.procs import AgentProc, ServerProc, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProc(tmp_path_factory.mktemp("canary-server")).start()
    yield srv
    srv.stop()


def _config(server: ServerProc, name: str, token: str, folder, mode: str = "auto", role: str = "db_server") -> str:
    return f"""
[agent]
name = "{name}"
hospital_critical = true
state_dir = "state"
heartbeat_interval = 1

[server]
url = "{server.url}"
token = "{token}"
timeout = 2
retry_max = 1

[[probe.canary]]
name = "bait"
interval = 30
role = "{role}"
mode = "{mode}"
folders = ["{folder}"]
"""


@pytest.mark.parametrize("mode", ["auto", "poll"])
def test_encrypting_a_canary_reaches_the_server_as_a_critical_incident(tmp_path, server, mode):
    folder = tmp_path / "HIS备份"
    folder.mkdir()
    (folder / "his_20261126.bak").write_bytes(os.urandom(4096))  # a real backup beside the bait
    name = f"his-db-{mode}"
    token = server.agent_token(name, "renmin")
    agent = AgentProc(tmp_path / "agent", _config(server, name, token, folder, mode)).start()

    def mine() -> list[dict]:
        return [i for i in server.incidents(status="open") if i["host"] == name]

    try:
        wait_until(
            lambda: any(a["name"] == name and a["last_seen"] for a in server.get("/agents")), 15, what="heartbeat"
        )
        baits = wait_until(lambda: sorted(p for p in folder.iterdir() if p.suffix in (".csv", ".txt")), 5)
        assert len(baits) == 3
        time.sleep(0.5)
        # Neighbour activity: the backup job rewrites its file and adds another. Nothing may open.
        (folder / "his_20261126.bak").write_bytes(os.urandom(4096))
        (folder / "his_20261127.bak").write_bytes(os.urandom(4096))
        time.sleep(1.0)
        assert mine() == []

        target = baits[0]
        changed = time.monotonic()
        with target.open("r+b") as f:
            f.write(os.urandom(target.stat().st_size))
        (inc,) = wait_until(mine, 5, interval=0.02, what="canary incident")
        took = time.monotonic() - changed
        print(f"\n  canary rewritten ({mode}) → critical incident on the server after {took * 1000:.0f} ms")
        assert (inc["trigger"], inc["severity"], inc["scope"]) == (5, "critical", "hospital")
        assert inc["evidence"]["how"] == "encrypted" and inc["evidence"]["path"] == str(target)
        assert "勒索" in inc["title_zh"] and "canary" in inc["title_en"]
        assert took < 1.0  # the bound, measured end to end; typically tens of milliseconds
    finally:
        agent.stop()
    assert "Traceback" not in agent.output()


def test_once_shows_canary_state(tmp_path, server):
    folder = tmp_path / "共享"
    folder.mkdir()
    token = server.agent_token("mzsf-01", "renmin")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(_config(server, "mzsf-01", token, folder, role="workstation"), encoding="utf-8")
    once = [sys.executable, "-m", "hisguard.agent.cli", "once", "-c", str(cfg)]
    out = subprocess.run(once, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [ln for ln in out.splitlines() if ln.startswith("bait") and "canary.tripped" in ln]
    assert len(rows) == 3 and all(" ok " in r for r in rows), out
    assert "门诊收费日报表" in out
    victim = sorted(folder.iterdir())[0]
    victim.unlink()
    out = subprocess.run(once, capture_output=True, text=True, timeout=60, check=True).stdout
    assert any("FAIL" in ln and victim.name[:10] in ln for ln in out.splitlines()), out
    assert "全面加急" in out and "勒索诱饵文件" in out
