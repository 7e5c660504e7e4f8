"""Traps end to end: a real agent process receives snmptrap's traps and a real server gets the incidents.

The SNMP job polls every 60 s; the incidents arrive within seconds, so the trap (one bad round)
and the confirming poll it asked for (the second) are what raised them. A trap storm from a
switch on the same agent is one incident with its counts, and the agent's memory stays flat.
"""

from __future__ import annotations

import socket
import subprocess
import time

import psutil
import pytest

from tests.data.snmp.gen import Switch, Ups
from tests.data.snmp.sim import SnmpSim, free_udp_port
from tests.support import peers
from tests.support.procs import AgentProc, ServerProc, wait_until
from tests.test_traps import v2c_trap

ACCESS, UPS, NOISY = "127.0.0.21", "127.0.0.22", "127.0.0.23"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProc(tmp_path_factory.mktemp("trap-server")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sim():
    try:
        import snmpsim  # noqa: F401
    except ImportError:
        peers.need(False, "needs snmpsim (pip install -e '.[test]')")
    s = SnmpSim((ACCESS, UPS, NOISY))
    s.write("access", Switch("access").render())
    s.write("ups", Ups("ups").render())
    s.write("noisy", Switch("noisy").render())
    s.start()
    yield s
    s.close()


def config(server: ServerProc, sim: SnmpSim, token: str, trap_port: int) -> str:
    def dev(name: str, address: str, extra: str = "") -> str:
        return (
            f'[[probe.snmp.devices]]\nname = "{name}"\naddress = "{address}"\nport = {sim.port}\n'
            f'community = "{name}"\ntimeout = 1.0\n{extra}'
        )

    return f"""
[agent]
name = "netmon-01"
state_dir = "state"
heartbeat_interval = 1

[server]
url = "{server.url}"
token = "{token}"
timeout = 2
retry_max = 1

[[probe.snmp]]
name = "network"
interval = 60
timeout = 30
traps = true
trap_listen = "127.0.0.1"
trap_port = {trap_port}
trap_storm = 300
{dev("access", ACCESS, 'uplinks = ["GigabitEthernet0/0/48"]' + chr(10) + 'departments = ["门诊挂号", "门诊收费"]')}
{dev("ups", UPS, 'kind = "ups"' + chr(10) + "hospital_critical = true")}
{dev("noisy", NOISY, 'department = "护士站"')}
"""


def first_round_seen(server: ServerProc) -> dict | None:
    for a in server.get("/agents"):
        if a["name"] == "netmon-01":
            snap = (server.get(f"/agents/{a['id']}/health") or {}).get("snapshot") or {}
            return snap if any(o["check"] == "snmp.interface" for o in snap.get("observations", [])) else None
    return None


def test_traps_reach_the_server_as_incidents_long_before_the_next_poll(tmp_path, server, sim):
    exe = peers.need_binary("snmptrap")
    trap_port = free_udp_port()
    agent = AgentProc(tmp_path / "agent", config(server, sim, server.agent_token("netmon-01", "renmin"), trap_port))
    agent.start()

    def mine(check: str) -> list[dict]:
        return [i for i in server.incidents(status="open") if i["host"] == "netmon-01" and check in i["key"]]

    def trap(source: str, *args: str) -> None:
        cmd = [exe, "-v2c", "-c", "public", f"--clientaddr={source}", f"127.0.0.1:{trap_port}", "", *args]
        subprocess.run(cmd, check=True, timeout=10)

    try:
        wait_until(lambda: "receiving traps" in agent.output(), 30, what="agent up")
        # The first round has run when a heartbeat carries its observations (not after a fixed sleep).
        snap = wait_until(lambda: first_round_seen(server), 60, what="the agent's first SNMP round")
        # The heartbeat says per device what it cannot be read for (the host page shows it).
        ups_cov = next(o for o in snap["observations"] if o["check"] == "snmp.coverage" and o["subject"] == "ups")
        assert "alarms" in ups_cov["not_provided"]
        assert server.incidents(status="open") == []
        # The uplink goes down, then the switch says so.
        sim.write("access", Switch("access", oper_down={48}).render())
        sent = time.monotonic()
        trap(ACCESS, "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.48", "i", "48")
        (link,) = wait_until(lambda: mine("snmp.interface"), 15, what="uplink incident")
        assert time.monotonic() - sent < 15  # the next scheduled poll is 60 s away
        assert (link["trigger"], link["scope"], link["severity"]) == (1, "department", "urgent")
        assert set(link["functions"]) == {"outpatient_registration", "outpatient_billing"}
        # Mains lost: the UPS says so.
        sim.write("ups", Ups("ups", on_battery=True, minutes=25).render())
        trap(UPS, "1.3.6.1.2.1.33.2.1")
        try:
            (power,) = wait_until(lambda: mine("snmp.ups"), 15, what="UPS incident")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{agent.output()[-3000:]}\n{server.incidents()}") from None
        assert (power["trigger"], power["scope"]) == (6, "hospital")
        # A trap storm from another switch: one more incident, with the count.
        proc = psutil.Process(agent.proc.pid)
        rss = proc.memory_info().rss
        packet = v2c_trap(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((NOISY, 0))
            for n in range(5000):
                s.sendto(packet, ("127.0.0.1", trap_port))
                if n % 100 == 99:
                    time.sleep(0.02)
        (storm,) = wait_until(lambda: mine("snmp.trap_storm"), 20, what="trap storm incident")
        assert storm["trigger"] == 2 and storm["evidence"]["received"] >= 1000
        grown = proc.memory_info().rss - rss
        assert grown < 15 * 2**20, f"agent RSS grew {grown / 2**20:.1f} MiB during the storm"
        time.sleep(3)
        assert len([i for i in server.incidents(status="open") if i["host"] == "netmon-01"]) == 3
    finally:
        agent.stop()
        sim.write("access", Switch("access").render())
        sim.write("ups", Ups("ups").render())
    assert "Traceback" not in agent.output()
