"""The SNMP probe against a real SNMP agent (snmpsim): shipped recordings, generated switches, UPS, v3."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from hisguard.agent.classify import Failing, classify
from hisguard.checks.base import ProbeContext, ProbeError
from hisguard.checks.snmp import Config, probe
from hisguard.plan import Scope, Severity, Trigger
from tests.data.snmp.gen import Switch, Ups, render, rewrite
from tests.data.snmp.sim import SHIPPED, V3_AUTH, V3_PRIV, V3_USER, GarbageAgent, SnmpSim
from tests.support import peers
from tests.support.netns import TestNet

EATON = SHIPPED / "recorded" / "eaton-9PX-partial-walk.snmprec"
WINXP = SHIPPED / "recorded" / "winxp-full-walk.snmprec"
SIM_ADDR = "127.0.0.1"


@pytest.fixture(scope="module")
def sim():
    try:
        import snmpsim  # noqa: F401
    except ImportError:
        peers.need(False, "needs snmpsim (pip install -e '.[test]')")
    s = SnmpSim((SIM_ADDR,))
    s.copy("winxp", WINXP)
    s.copy("eaton", EATON)
    s.write("access", Switch("access").render())
    s.write("core", Switch("core", vendor="h3c").render())
    s.write("cisco", Switch("cisco", vendor="cisco").render())
    s.write("ups", Ups("ups").render())
    s.write("apc", Ups("apc", mib="apc").render())
    s.start()
    yield s
    s.close()


def dev(sim: SnmpSim, name: str, **kw) -> dict:
    return {"name": name, "address": SIM_ADDR, "port": sim.port, "community": name, "timeout": 1.0, **kw}


def ctx(tmp_path: Path) -> ProbeContext:
    return ProbeContext(host="agent-1", state_dir=tmp_path)


def by(obs, check):
    return {o.subject: o for o in obs if o.check == check}


def failing(obs):
    return [o for o in obs if o.ok is False]


def incidents(obs):
    return classify("agent-1", [Failing("snmp", o) for o in obs if o.ok is False])


async def test_shipped_windows_recording_finds_exactly_the_interface_that_is_down(sim, tmp_path):
    cfg = Config(devices=[dev(sim, "winxp", kind="server")], restart_hold=60)
    obs = await probe(cfg, ctx(tmp_path))
    ifs = by(obs, "snmp.interface")
    assert len(ifs) == 2  # the software loopback is not a port
    down = [o for o in ifs.values() if not o.ok]
    assert [o.subject for o in down] == ["winxp/Bluetooth Device (Personal Area Network)"]
    assert down[0].detail["if_index"] == 65540 and down[0].detail["admin"] == 1
    assert failing(obs) == down  # nothing else: reachable, agent, no restart


async def test_access_switch_uplink_down_is_trigger_1_and_edge_ports_are_not(sim, tmp_path):
    sw = Switch("access")
    cfg = Config(devices=[dev(sim, "access", uplinks=["GigabitEthernet0/0/48"], department="门诊收费")])
    c = ctx(tmp_path)
    obs = await probe(cfg, c)
    assert failing(obs) == []
    assert by(obs, "snmp.cpu")["access"].value == 12 and by(obs, "snmp.temperature")["access"].value == 41
    # An edge port down and another switched off by the administrator: no fault condition.
    sw.oper_down, sw.admin_down = {7}, {9}
    sim.write("access", sw.render())
    obs = await probe(cfg, c)
    assert failing(obs) == []
    assert by(obs, "snmp.edge_ports")["access"].detail["down"] == ["GigabitEthernet0/0/7"]
    # The uplink goes down.
    sw.oper_down = {7, 48}
    sim.write("access", sw.render())
    obs = await probe(cfg, c)
    (bad,) = failing(obs)
    assert bad.subject == "access/GigabitEthernet0/0/48" and bad.detail["uplink"]
    (inc,) = incidents(obs)
    assert inc.trigger is Trigger.HARDWARE and inc.scope is Scope.DEPARTMENT and inc.departments == ["门诊收费"]
    assert "GigabitEthernet0/0/48" in inc.title.zh and "port is down" in inc.title.en
    sim.write("access", Switch("access").render())


async def test_uplink_flapping_between_polls_is_seen_from_if_last_change(sim, tmp_path):
    sw = Switch("access")
    cfg = Config(devices=[dev(sim, "access", uplinks=["GigabitEthernet0/0/48"])], flap_count=3)
    c = ctx(tmp_path)
    states = []
    for ticks in (5_000, 5_000, 7_000, 9_000, 12_000):  # up at every poll, but it changed in between
        sw.last_change = {48: ticks}
        sim.write("access", sw.render())
        obs = await probe(cfg, c)
        assert by(obs, "snmp.interface")["access/GigabitEthernet0/0/48"].ok
        states.append(by(obs, "snmp.if_flap")["access/GigabitEthernet0/0/48"].value)
    assert states == [0, 0, 1, 2, 3]
    (inc,) = incidents(obs)
    assert inc.trigger is Trigger.HARDWARE and "flapping" in inc.title.en and inc.severity is Severity.ROUTINE
    sim.write("access", Switch("access").render())


async def test_uptime_reset_is_a_restart_and_repeated_resets_a_reboot_loop(sim, tmp_path):
    sw = Switch("core", vendor="h3c", uptime_ticks=50_000_000)
    sim.write("core", sw.render())
    cfg = Config(devices=[dev(sim, "core", hospital_critical=True)], reboot_loop_count=3)
    c = ctx(tmp_path)
    obs = await probe(cfg, c)
    assert failing(obs) == []
    sw.uptime_ticks = 3_000  # 30 s: it went backwards
    sim.write("core", sw.render())
    obs = await probe(cfg, c)
    assert [o.check for o in failing(obs)] == ["snmp.restart"]
    (inc,) = incidents(obs)
    assert inc.trigger is Trigger.SOFTWARE and inc.severity is Severity.URGENT  # capped: one restart
    # Two more restarts within the window (recorded restart times are spaced as real ones would be).
    st = c.memory["snmp"]
    st.restarts["core"] = [t - 600 for t in st.restarts["core"]] + [st.restarts["core"][-1] - 300]
    sw.uptime_ticks = 50_000
    sim.write("core", sw.render())
    await probe(cfg, c)
    sw.uptime_ticks = 1_000
    sim.write("core", sw.render())
    obs = await probe(cfg, c)
    assert [o.check for o in failing(obs)] == ["snmp.reboot_loop"]  # the loop supersedes the single restart
    (inc,) = incidents(obs)
    assert inc.trigger is Trigger.SOFTWARE and inc.scope is Scope.HOSPITAL and inc.severity is Severity.CRITICAL
    sim.write("core", Switch("core", vendor="h3c").render())


async def test_temperature_climb_is_trigger_6_suspicion_and_cpu_overload_trigger_2(sim, tmp_path):
    sw = Switch("cisco", vendor="cisco")
    cfg = Config(devices=[dev(sim, "cisco", department="急诊收费", temperature_max=60, cpu_max=85)])
    c = ctx(tmp_path)
    temps = []
    for t in (44, 52, 58, 71):
        sw.temp = t
        sim.write("cisco", sw.render())
        obs = await probe(cfg, c)
        temps.append(by(obs, "snmp.temperature")["cisco"].ok)
    assert temps == [True, True, True, False]
    sw.cpu, sw.fan_state = 97, 3
    sim.write("cisco", sw.render())
    obs = await probe(cfg, c)
    kinds = {i.evidence["check"]: i for i in incidents(obs)}
    assert kinds["snmp.temperature"].trigger is Trigger.FORCE_MAJEURE
    assert kinds["snmp.temperature"].severity is Severity.URGENT and "71" in kinds["snmp.temperature"].title.en
    assert kinds["snmp.cpu"].trigger is Trigger.SOFTWARE
    assert kinds["snmp.hardware"].trigger is Trigger.HARDWARE
    assert kinds["snmp.hardware"].evidence["faults"] == ["fan 1: critical"]
    sim.write("cisco", Switch("cisco", vendor="cisco").render())


@pytest.mark.parametrize(
    ("place", "expected"),
    [
        ({}, [Severity.ROUTINE, Severity.URGENT, Severity.CRITICAL]),
        ({"hospital_critical": True}, [Severity.URGENT, Severity.URGENT, Severity.CRITICAL]),
    ],
)
async def test_ups_on_battery_severity_rises_as_runtime_falls(sim, tmp_path, place, expected):
    cfg = Config(devices=[dev(sim, "ups", kind="ups", **place)])
    c = ctx(tmp_path)
    assert failing(await probe(cfg, c)) == []
    seen = []
    for minutes in (40, 12, 3):
        sim.write("ups", Ups("ups", on_battery=True, minutes=minutes).render())
        (inc,) = incidents(await probe(cfg, c))
        assert inc.trigger is Trigger.FORCE_MAJEURE and inc.key == "agent-1/snmp.ups/ups"
        assert f"{minutes}" in inc.title.zh and "on battery" in inc.title.en
        seen.append(inc.severity)
    assert seen == expected
    sim.write("ups", Ups("ups").render())


async def test_shipped_eaton_recording_switched_to_battery_and_apc(sim, tmp_path):
    cfg = Config(devices=[dev(sim, "eaton", kind="ups"), dev(sim, "apc", kind="ups", department="门诊药房")])
    c = ctx(tmp_path)
    assert failing(await probe(cfg, c)) == []
    text = EATON.read_text()
    sim.write("eaton", rewrite(text, {"1.3.6.1.4.1.534.1.4.5.0": (2, 5), "1.3.6.1.4.1.534.1.2.1.0": (2, 240)}))
    sim.write("apc", Ups("apc", mib="apc", on_battery=True, battery_low=True, minutes=9).render())
    obs = await probe(cfg, c)
    assert by(obs, "snmp.ups.on_battery")["eaton"].detail["mib"] == "Eaton XUPS"
    assert by(obs, "snmp.ups.on_battery")["eaton"].value == 4.0  # 240 s
    incs = {i.evidence["device"]: i for i in incidents(obs)}
    assert incs["eaton"].severity is Severity.CRITICAL  # 4 minutes left
    assert incs["apc"].severity is Severity.URGENT and incs["apc"].departments == ["门诊药房"]
    sim.copy("eaton", EATON)
    sim.write("apc", Ups("apc", mib="apc").render())


async def test_snmpv3_auth_priv(sim, tmp_path):
    v3 = {"user": V3_USER, "auth_key": V3_AUTH, "priv_key": V3_PRIV, "context": "access"}
    cfg = Config(devices=[dev(sim, "v3-access", version="3", v3=v3, uplinks=["GigabitEthernet0/0/48"])])
    obs = await probe(cfg, ctx(tmp_path))
    assert by(obs, "snmp.reachable")["v3-access"].ok
    assert by(obs, "snmp.interface")["v3-access/GigabitEthernet0/0/48"].ok


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"community": "no-such-community"}, "no SNMP answer although it answers ping"),
        (
            {"version": "3", "v3": {"user": V3_USER, "auth_key": "not-the-key", "priv_key": V3_PRIV}},
            "authentication failed",
        ),
        (
            {"version": "3", "v3": {"user": V3_USER, "auth_key": V3_AUTH, "priv_key": "not-the-key"}},
            "decryption failed",
        ),
        ({"version": "3", "v3": {"user": "intruder", "auth_key": V3_AUTH, "priv_key": V3_PRIV}}, "user unknown"),
        ({"uplinks": ["TenGigabitEthernet9/9/9"]}, "uplink 'TenGigabitEthernet9/9/9' is not a port"),
        ({"kind": "ups"}, "not a UPS"),
    ],
)
async def test_unreadable_device_is_a_probe_error_naming_it_never_an_incident(sim, tmp_path, extra, message):
    bad = dev(sim, "acc-门诊", retries=0, timeout=0.5) | {"community": "access"} | extra
    cfg = Config(devices=[bad, dev(sim, "access")])
    obs = await probe(cfg, ctx(tmp_path))
    (err,) = [o for o in obs if o.check == "snmp.error"]
    assert err.subject == "acc-门诊" and message in err.detail["error"] and "acc-门诊" in err.detail["error"]
    assert incidents(obs) == []
    # Alone in its job, the job itself fails with that message (shown by `hisguard-agent once`).
    with pytest.raises(ProbeError, match="acc-门诊"):
        await probe(Config(devices=[bad]), ctx(tmp_path))


async def test_device_answering_garbage_is_a_probe_error(tmp_path):
    with GarbageAgent() as junk:
        cfg = Config(devices=[{"name": "junk-box", "address": "127.0.0.1", "port": junk.port,
                               "timeout": 0.5, "retries": 0}])  # fmt: skip
        with pytest.raises(ProbeError, match="junk-box"):
            await asyncio.wait_for(probe(cfg, ctx(tmp_path)), 10)


async def test_silent_agent_that_pings_is_trigger_2_and_silence_without_ping_trigger_1(tmp_path):
    peers.need_root()
    s = SnmpSim(("127.0.0.1",))
    s.write("edge", Switch("edge").render())
    s.start()
    try:
        d = {"name": "edge", "address": "127.0.0.1", "port": s.port, "community": "edge", "timeout": 0.5,
             "retries": 0, "department": "住院登记"}  # fmt: skip
        c = ctx(tmp_path)
        cfg = Config(devices=[d])
        assert failing(await probe(cfg, c)) == []
        s.pause()  # the SNMP agent hangs; the device still answers ping
        obs = await probe(cfg, c)
        assert [(o.check, o.ok) for o in failing(obs)] == [("snmp.agent", False)]
        (inc,) = incidents(obs)
        assert inc.trigger is Trigger.SOFTWARE and "SNMP" in inc.title.en
        # Silence from a device whose link is cut: neither SNMP nor ping answers, the device is gone.
        with TestNet() as net:
            host = net.add("snmpdead")
            net.down("snmpdead")
            obs = await probe(Config(devices=[d | {"address": host.address}]), c)
        assert [(o.check, o.ok) for o in failing(obs)] == [("snmp.reachable", False)]
        (inc,) = incidents(obs)
        assert inc.trigger is Trigger.HARDWARE and inc.departments == ["住院登记"]
    finally:
        s.resume()
        s.close()


def test_agent_without_the_snmp_extra_gets_a_probe_error_saying_how_to_install_it(tmp_path):
    code = (
        "import sys, asyncio; sys.modules['pysnmp'] = None\n"
        "from hisguard.checks.snmp import Config, probe\n"
        "from hisguard.checks.base import ProbeContext, ProbeError\n"
        "from pathlib import Path\n"
        "cfg = Config(devices=[{'name': '核心交换机', 'address': '127.0.0.1'}])\n"
        "try:\n"
        f"    asyncio.run(probe(cfg, ProbeContext(host='a', state_dir=Path({str(tmp_path)!r}))))\n"
        "except ProbeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "核心交换机" in out and "pip install 'hisguard[snmp]'" in out


async def test_a_device_that_cannot_be_read_marks_the_round_partial(sim, tmp_path):
    c = ctx(tmp_path)
    await probe(Config(devices=[dev(sim, "access")]), c)
    assert not c.partial
    await probe(Config(devices=[dev(sim, "access"), dev(sim, "gone", retries=0, timeout=0.5)]), c)
    assert c.partial  # the agent keeps the unread device's conditions as they were


def test_snmpv3_ciphers_load_only_when_a_v3_device_is_polled(sim, tmp_path):
    code = (
        "import sys, asyncio; sys.modules['pysmi'] = None\n"
        "from pathlib import Path\n"
        "from hisguard.checks.base import ProbeContext\n"
        "from hisguard.checks.snmp import Config, probe\n"
        f"ctx = ProbeContext(host='a', state_dir=Path({str(tmp_path)!r}))\n"
        "def run(**kw):\n"
        f"    d = {{'name': 'access', 'address': {SIM_ADDR!r}, 'port': {sim.port}, 'community': 'access', **kw}}\n"
        "    obs = asyncio.run(probe(Config(devices=[d]), ctx))\n"
        "    return [o.ok for o in obs if o.check == 'snmp.reachable'], 'cryptography' in sys.modules\n"
        "print('imported', 'cryptography' in sys.modules)\n"
        "print('v2c', *run())\n"
        f"v3 = {{'user': {V3_USER!r}, 'auth_key': {V3_AUTH!r}, 'priv_key': {V3_PRIV!r}, 'context': 'access'}}\n"
        "print('v3', *run(version='3', v3=v3))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["imported False", "v2c [True] False", "v3 [True] True"], out.stderr[-2000:]


def test_engine_takes_its_mib_modules_from_the_bytecode_cache(sim, tmp_path):
    code = (
        "import builtins, sys, asyncio; sys.modules['pysmi'] = None\n"
        "compiled = []\n"
        "real = builtins.compile\n"
        "def spy(src, name, *a, **k):\n"
        "    compiled.append(str(name))\n"
        "    return real(src, name, *a, **k)\n"
        "from hisguard.checks.snmp.client import Credentials, Session, engine\n"
        "builtins.compile = spy\n"
        "async def go():\n"
        "    engine()\n"
        f"    s = Session({SIM_ADDR!r}, {sim.port}, Credentials('2c', community='access'), 2.0, 1)\n"
        "    return await s.get(['1.3.6.1.2.1.1.5.0'])\n"
        "print(list(asyncio.run(go()).values())[0])\n"
        "print(len([n for n in compiled if 'mibs' in n]))\n"
    )
    # Python writes the cache on first use; the second run must compile nothing.
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["access", "0"], out.stderr[-2000:]


def _with(sw: Switch, *extra: tuple[str, int, object]) -> str:
    return render([*sw.records(), *extra])


async def test_h3c_placeholders_and_not_supported_are_not_readings_or_faults(sim, tmp_path):
    # Comware answers 65535 for parts without a sensor (temperature and threshold) and notSupported(1)
    # as the error status of parts it cannot judge: neither is 65535 °C nor a hardware fault.
    b = "1.3.6.1.4.1.25506.2.6.1.1.1.1"
    placeholders = [(f"{b}.12.31", 2, 65535), (f"{b}.13.31", 2, 65535), (f"{b}.19.32", 2, 1), (f"{b}.12.32", 2, 0)]
    sim.write("core", _with(Switch("core", vendor="h3c"), *placeholders))
    try:
        obs = await probe(Config(devices=[dev(sim, "core", hospital_critical=True)]), ctx(tmp_path))
    finally:
        sim.write("core", Switch("core", vendor="h3c").render())
    assert incidents(obs) == []
    temp = by(obs, "snmp.temperature")["core"]
    assert temp.value == 41 and [r["where"] for r in temp.detail["readings"]] == ["entity 30"]
    assert by(obs, "snmp.hardware")["core"].ok


async def test_lag_uplink_member_down_is_redundancy_lost_and_the_lag_down_the_outage(sim, tmp_path):
    # A LAG (ifType 161) as the uplink; its members from IF-MIB's ifStackTable.
    i, x = "1.3.6.1.2.1.2.2.1", "1.3.6.1.2.1.31.1.1.1"
    lag = [(f"{i}.1.100", 2, 100), (f"{i}.2.100", 4, "Eth-Trunk1"), (f"{i}.3.100", 2, 161), (f"{i}.7.100", 2, 1),
           (f"{x}.1.100", 4, "Eth-Trunk1"), ("1.3.6.1.2.1.31.1.2.1.3.100.47", 2, 1),
           ("1.3.6.1.2.1.31.1.2.1.3.100.48", 2, 1)]  # fmt: skip
    cfg = Config(devices=[dev(sim, "access", uplinks=["Eth-Trunk1"], hospital_critical=True)])
    c = ctx(tmp_path)
    try:
        for down, lag_oper, expected in (
            (set(), 1, []),
            ({47}, 1, [("snmp.uplink_redundancy", Severity.URGENT)]),
            ({47, 48}, 2, [("snmp.interface", Severity.CRITICAL)]),
        ):
            sim.write("access", _with(Switch("access", oper_down=down), *lag, (f"{i}.8.100", 2, lag_oper)))
            got = [(inc.evidence["check"], inc.severity) for inc in incidents(await probe(cfg, c))]
            if down == {47, 48}:  # the LAG and its group both down: one incident for the device, critical
                assert [sev for _, sev in got] == [Severity.CRITICAL], got
            else:
                assert got == expected, got
    finally:
        sim.write("access", Switch("access").render())
