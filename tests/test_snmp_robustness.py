"""The SNMP probe over agent restarts and against devices that misbehave.

Restarts: the uptime baseline lives in the job's state directory, so a device that restarted while
the agent was down is still recorded (routine), and a reboot loop is counted across agent restarts.
Never reached: a device that never answered since it was configured says so. Bad input: garbage,
a walk that never ends, an agent that loops on one OID — each a probe error naming the device and
what was asked, no incident, in bounded time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hisguard.agent.classify import Failing, classify
from hisguard.checks.base import ProbeContext, ProbeError
from hisguard.checks.snmp import Config, probe
from hisguard.plan import Severity, Trigger
from tests.data.snmp.gen import Switch, render
from tests.data.snmp.sim import GarbageAgent, SnmpSim
from tests.support import peers
from tests.support.netns import TestNet

ADDR = "127.0.0.1"


@pytest.fixture(scope="module")
def sim():
    try:
        import snmpsim  # noqa: F401
    except ImportError:
        peers.need(False, "needs snmpsim (pip install -e '.[test]')")
    s = SnmpSim((ADDR,))
    s.write("sw", Switch("sw").render())
    endless = [("1.3.6.1.2.1.1.3.0", 67, 5_000_000), ("1.3.6.1.2.1.1.2.0", 6, "1.3.6.1.4.1.9.1.1208")]
    endless += [(f"1.3.6.1.2.1.2.2.1.8.{i}", 2, 1) for i in range(1, 1201)]
    s.write("endless", render(endless))
    s.start()
    yield s
    s.close()


def dev(sim: SnmpSim, name: str, **kw: object) -> dict:
    return {"name": name, "address": ADDR, "port": sim.port, "community": name, "timeout": 1.0, **kw}


def incidents(obs):
    return classify("agent-1", [Failing("snmp", o) for o in obs if o.ok is False])


def failing(obs):
    return {o.check for o in obs if o.ok is False}


async def agent_run(state_dir: Path, cfg: Config):
    """One round by a freshly started agent: nothing in memory, only what the state directory holds."""
    return await probe(cfg, ProbeContext(host="agent-1", state_dir=state_dir))


async def test_restart_while_the_agent_was_down_is_recorded_late_and_routine(sim, tmp_path):
    cfg = Config(devices=[dev(sim, "sw", hospital_critical=True)], restart_hold=900)
    sim.write("sw", Switch("sw", uptime_ticks=259_200 * 100).render())  # up 3 days
    assert incidents(await agent_run(tmp_path, cfg)) == []
    # The agent is stopped for two days; meanwhile the switch restarts (now up one day).
    path = tmp_path / "snmp-state.json"
    saved = json.loads(path.read_text())
    saved["uptime"]["sw"][1] -= 2 * 86400
    path.write_text(json.dumps(saved))
    sim.write("sw", Switch("sw", uptime_ticks=86_400 * 100).render())
    obs = await agent_run(tmp_path, cfg)
    assert failing(obs) == {"snmp.restart.late"}
    (inc,) = incidents(obs)
    assert (inc.trigger, inc.severity) == (Trigger.SOFTWARE, Severity.ROUTINE) and "later" in inc.title.en
    assert abs(inc.evidence["restarted_at"] - (time.time() - 86_400)) < 120
    sim.write("sw", Switch("sw").render())


async def test_reboot_loop_is_counted_across_agent_restarts(sim, tmp_path):
    cfg = Config(devices=[dev(sim, "sw", hospital_critical=True)], restart_hold=60, reboot_loop_count=3)
    seen = []
    for uptime_s in (3000, 2000, 1000, 300):  # each round by a newly started agent
        sim.write("sw", Switch("sw", uptime_ticks=uptime_s * 100).render())
        seen.append(failing(await agent_run(tmp_path, cfg)))
    assert "snmp.reboot_loop" not in seen[2] and "snmp.reboot_loop" in seen[3]
    (inc,) = incidents(await agent_run(tmp_path, cfg))
    assert (inc.trigger, inc.severity) == (Trigger.SOFTWARE, Severity.CRITICAL) and "loop" in inc.title.en
    sim.write("sw", Switch("sw").render())


async def test_device_never_reached_says_so_and_its_incident_says_never_seen_up(tmp_path):
    peers.need_root()
    with TestNet() as net:
        host = net.add("snmpnever")
        net.down("snmpnever")
        d = {"name": "新楼接入交换机", "address": host.address, "timeout": 0.5, "retries": 0, "department": "门诊"}
        obs = await probe(Config(devices=[d]), ProbeContext(host="agent-1", state_dir=tmp_path))
    assert failing(obs) == {"snmp.unreached"}
    (inc,) = incidents(obs)
    assert inc.trigger is Trigger.HARDWARE and "never answered since it was configured" in inc.title.en
    assert inc.evidence["never_seen_up"] is True


def test_once_and_doctor_name_a_device_that_never_answered_and_what_each_device_cannot_show(sim, tmp_path):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((ADDR, 0))  # a port where nothing answers
    try:
        conf = tmp_path / "agent.toml"
        conf.write_text(
            f'[agent]\nname = "netmon"\nstate_dir = "{tmp_path / "state"}"\n'
            f'[server]\nurl = "http://127.0.0.1:9"\ntoken = "t"\ntimeout = 1\n'
            f'[[probe.snmp]]\nname = "network"\n'
            f'[[probe.snmp.devices]]\nname = "门诊楼交换机"\naddress = "{ADDR}"\nport = {silent.getsockname()[1]}\n'
            f"timeout = 0.5\nretries = 0\nping = false\n"
            f'[[probe.snmp.devices]]\nname = "core"\naddress = "{ADDR}"\nport = {sim.port}\ncommunity = "sw"\n',
            encoding="utf-8",
        )
        run = [sys.executable, "-m", "hisguard.agent.cli"]
        once = subprocess.run([*run, "once", "-c", str(conf)], capture_output=True, text=True, timeout=120).stdout
        doctor = subprocess.run([*run, "doctor", "-c", str(conf)], capture_output=True, text=True, timeout=120).stdout
    finally:
        silent.close()
    for out in (once, doctor):
        assert "门诊楼交换机" in out and "never answered: check address/community" in out, out
    core = next(line for line in once.splitlines() if line.strip().startswith("core 可读"))
    assert "restarts (sysUpTime)" in core and "temperature (HUAWEI-ENTITY-EXTENT-MIB)" in core
    assert core.endswith("not provided by this device: hardware")  # the generated switch has no part states
    assert "core reads — restarts: sysUpTime" in doctor and "Not provided by this device: fans/power/modules" in doctor


async def test_a_walk_that_never_ends_is_a_probe_error_naming_the_device_and_the_oid(sim, tmp_path):
    cfg = Config(devices=[dev(sim, "endless"), dev(sim, "sw")], max_rows=500)
    started = time.monotonic()
    obs = await probe(cfg, ProbeContext(host="agent-1", state_dir=tmp_path))
    assert time.monotonic() - started < 60  # bounded (it takes about a second)
    (err,) = [o for o in obs if o.check == "snmp.error"]
    assert "endless" in err.detail["error"] and "ifOperStatus" in err.detail["error"], err.detail["error"]
    assert incidents(obs) == []


class LoopingAgent:
    """An SNMP agent that answers every walk with the same row, for ever (firmware bugs do this)."""

    def __init__(self) -> None:
        from pyasn1.codec.ber import decoder, encoder
        from pysnmp.proto import api

        self.p = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        self.decoder, self.encoder = decoder, encoder
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ADDR, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        p = self.p
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            msg, _ = self.decoder.decode(data, asn1Spec=p.Message())
            req = p.apiMessage.get_pdu(msg)
            rsp = p.apiPDU.get_response(req)
            if req.isSameTypeWith(p.GetRequestPDU()):
                binds = [
                    (oid, p.TimeTicks(500000) if str(oid).startswith("1.3.6.1.2.1.1.3") else p.ObjectIdentifier(
                        "1.3.6.1.4.1.9.1.1208"))
                    for oid, _ in p.apiPDU.get_varbinds(req)
                ]  # fmt: skip
            else:
                binds = [(p.ObjectIdentifier("1.3.6.1.2.1.2.2.1.8.1"), p.Integer(1))] * 10
            p.apiPDU.set_varbinds(rsp, binds)
            p.apiMessage.set_pdu(msg, rsp)
            self.sock.sendto(self.encoder.encode(msg), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


async def test_an_agent_that_loops_on_one_row_is_a_probe_error_not_a_hang(tmp_path):
    looping = LoopingAgent()
    try:
        d = {"name": "loop-box", "address": ADDR, "port": looping.port, "timeout": 0.5, "retries": 0}
        with pytest.raises(ProbeError) as failed:  # every device of the job unreadable: the job says why
            await asyncio.wait_for(probe(Config(devices=[d, d | {"name": "loop-2"}]),
                                         ProbeContext(host="a", state_dir=tmp_path)), 30)  # fmt: skip
    finally:
        looping.close()
    errors = str(failed.value).split("; ")
    assert len(errors) == 2 and all("loop-" in e and "ifOperStatus" in e and "out of order" in e for e in errors)


async def test_garbage_from_a_device_names_the_device_and_what_was_asked(tmp_path):
    with GarbageAgent() as junk:
        d = {"name": "junk-box", "address": ADDR, "port": junk.port, "timeout": 0.5, "retries": 0, "ping": False}
        with pytest.raises(ProbeError) as failed:
            await asyncio.wait_for(probe(Config(devices=[d, d | {"name": "junk-2"}]),
                                         ProbeContext(host="a", state_dir=tmp_path)), 30)  # fmt: skip
    errors = str(failed.value).split("; junk-2")
    assert len(errors) == 2 and all("sysUpTime.0" in e for e in errors) and str(failed.value).startswith("junk-box")
