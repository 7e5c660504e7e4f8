"""The trap receiver: traps from net-snmp's snmptrap and from pysnmp, confirming polls, trap storms."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from hisguard.agent.classify import Failing, classify
from hisguard.agent.debounce import Debouncer
from hisguard.checks.base import ProbeContext
from hisguard.checks.snmp import Config, probe, traps, watch
from hisguard.plan import Scope, Trigger
from tests.data.snmp.gen import Switch, Ups
from tests.data.snmp.sim import V3_AUTH, V3_PRIV, SnmpSim, free_udp_port
from tests.support import peers

ACCESS, CORE, UPS, NOISY = "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"
TRAP_ENGINE = "8000000001020399"


@pytest.fixture(scope="module")
def sim():
    try:
        import snmpsim  # noqa: F401
    except ImportError:
        peers.need(False, "needs snmpsim (pip install -e '.[test]')")
    s = SnmpSim((ACCESS, CORE, UPS, NOISY))
    s.write("access", Switch("access", oper_down={48}).render())  # the uplink really is down
    s.write("core", Switch("core").render())
    s.write("ups", Ups("ups", on_battery=True, minutes=30).render())
    s.write("noisy", Switch("noisy").render())
    s.start()
    yield s
    s.close()


class Harness:
    """What the agent does with a watcher: emit → N-of-M → classifier; poll_now → a probe round."""

    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self.cfg = cfg
        self.ctx = ProbeContext(host="agent-1", state_dir=state_dir)
        self.ctx.poll_now = self._ask
        self.deb = Debouncer()
        self.emitted: list = []
        self.polls = 0
        self._want = asyncio.Event()

    def _ask(self) -> None:
        self._want.set()

    def emit(self, obs) -> None:
        self.emitted += obs
        for o in obs:
            self.deb.update("snmp", self.cfg, o)

    async def _poller(self) -> None:
        while True:
            await self._want.wait()
            self._want.clear()
            for o in await probe(self.cfg, self.ctx):
                self.deb.update("snmp", self.cfg, o)
            self.polls += 1

    def incidents(self):
        return classify("agent-1", [Failing(j, o) for j, o in self.deb.failing()])

    @contextlib.asynccontextmanager
    async def running(self):
        tasks = [asyncio.create_task(watch(self.cfg, self.ctx, self.emit)), asyncio.create_task(self._poller())]
        self._ask()  # the agent's first round, at start
        await self.until(lambda: self.polls >= 1)
        self.polls = 0
        try:
            yield self
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def until(self, predicate, timeout: float = 10.0):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if got := predicate():
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out; emitted={self.emitted[-5:]}, incidents={self.incidents()}")


def config(sim: SnmpSim, only: str | None = None, **kw) -> Config:
    def d(name: str, address: str, **extra) -> dict:
        return {"name": name, "address": address, "port": sim.port, "community": name, "timeout": 1.0, **extra}

    devices = [
        d("access", ACCESS, uplinks=["GigabitEthernet0/0/48"], department="门诊收费"),
        d("core", CORE, hospital_critical=True),
        d("ups", UPS, kind="ups", hospital_critical=True),
        d("noisy", NOISY, department="护士站"),
    ]
    return Config(
        devices=[x for x in devices if only in (None, x["name"])],
        traps=True,
        trap_listen="127.0.0.1",
        trap_port=free_udp_port(),
        trap_communities=["public"],
        trap_users=[{"user": "trapper", "auth_key": V3_AUTH, "priv_key": V3_PRIV, "engine_id": TRAP_ENGINE}],
        **kw,
    )


def snmptrap(cfg: Config, source: str, *args: str, v3: bool = False) -> None:
    exe = peers.need_binary("snmptrap")
    auth = (
        ["-v3", "-e", f"0x{TRAP_ENGINE}", "-u", "trapper", "-l", "authPriv", "-a", "SHA", "-A", V3_AUTH, "-x", "AES",
         "-X", V3_PRIV]
        if v3
        else ["-v2c", "-c", "public"]
    )  # fmt: skip
    subprocess.run([exe, *auth, f"--clientaddr={source}", f"127.0.0.1:{cfg.trap_port}", "", *args], check=True,
                   timeout=10)  # fmt: skip


async def test_link_down_trap_from_snmptrap_triggers_a_confirming_poll_and_an_incident(sim, tmp_path):
    h = Harness(config(sim), tmp_path)
    async with h.running():
        snmptrap(h.cfg, ACCESS, "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.48", "i", "48")
        await h.until(lambda: h.polls >= 1 and h.incidents())
    trap_obs = [o for o in h.emitted if o.check == "snmp.interface"]
    assert trap_obs and trap_obs[0].detail["via"] == "trap"
    (inc,) = [i for i in h.incidents() if i.evidence["check"] == "snmp.interface"]
    assert inc.trigger is Trigger.HARDWARE and inc.departments == ["门诊收费"]
    assert inc.evidence["subject"] == "access/GigabitEthernet0/0/48"


async def test_link_down_trap_that_the_poll_does_not_confirm_is_no_incident(sim, tmp_path):
    h = Harness(config(sim, only="access"), tmp_path)
    sim.write("access", Switch("access").render())
    try:
        async with h.running():
            snmptrap(h.cfg, ACCESS, "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.48", "i", "48")
            await h.until(lambda: h.polls >= 1)
            await asyncio.sleep(0.3)
        assert [o for o in h.emitted if o.check == "snmp.interface"]
        assert h.incidents() == []
    finally:
        sim.write("access", Switch("access", oper_down={48}).render())


async def test_cold_start_trap_from_pysnmp_is_a_restart(sim, tmp_path):
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        NotificationType,
        ObjectIdentity,
        SnmpEngine,
        UdpTransportTarget,
        send_notification,
    )

    h = Harness(config(sim), tmp_path)
    async with h.running():
        sender = SnmpEngine()
        target = await UdpTransportTarget.create(("127.0.0.1", h.cfg.trap_port))
        target.set_local_address((CORE, 0))
        err, *_ = await send_notification(
            sender, CommunityData("public"), target, ContextData(), "trap",
            NotificationType(ObjectIdentity("1.3.6.1.6.3.1.1.5.1")),
        )  # fmt: skip
        assert err is None
        (inc,) = await h.until(lambda: [i for i in h.incidents() if i.evidence["check"] == "snmp.restart"])
        sender.close_dispatcher()
    assert inc.trigger is Trigger.SOFTWARE and inc.evidence["device"] == "core"


async def test_ups_on_battery_v3_trap_from_snmptrap(sim, tmp_path):
    h = Harness(config(sim), tmp_path)
    async with h.running():
        snmptrap(h.cfg, UPS, "1.3.6.1.2.1.33.2.1", v3=True)
        (inc,) = await h.until(lambda: [i for i in h.incidents() if i.trigger is Trigger.FORCE_MAJEURE])
    assert any(o.check == "snmp.ups.on_battery" and o.detail.get("via") == "trap" for o in h.emitted)
    assert inc.scope is Scope.HOSPITAL and inc.key == "agent-1/snmp.ups/ups"


def v2c_trap(port_index: int) -> bytes:
    """A real SNMPv2c linkDown trap datagram (encoded once, sent many times)."""
    from pyasn1.codec.ber import encoder
    from pysnmp.proto import api, rfc1902

    p = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    pdu = p.SNMPv2TrapPDU()
    p.apiTrapPDU.set_defaults(pdu)
    p.apiTrapPDU.set_varbinds(pdu, [
        ("1.3.6.1.2.1.1.3.0", rfc1902.TimeTicks(123)),
        ("1.3.6.1.6.3.1.1.4.1.0", rfc1902.ObjectName("1.3.6.1.6.3.1.1.5.3")),
        (f"1.3.6.1.2.1.2.2.1.1.{port_index}", rfc1902.Integer(port_index)),
    ])  # fmt: skip
    msg = p.Message()
    p.apiMessage.set_defaults(msg)
    p.apiMessage.set_community(msg, "public")
    p.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


async def test_trap_storm_is_one_incident_with_a_summary_and_bounded_memory(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(traps, "TICK_S", 0.5)
    h = Harness(config(sim, only="noisy", trap_rate=50, trap_storm=300), tmp_path)
    packets = [v2c_trap(i) for i in range(1, 49)]  # every edge port of the noisy switch flapping
    rss = psutil.Process().memory_info().rss
    async with h.running():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((NOISY, 0))
            for n in range(6000):
                s.sendto(packets[n % 48], ("127.0.0.1", h.cfg.trap_port))
                if n % 100 == 99:
                    await asyncio.sleep(0.02)  # ~5,000 a second; the receiver keeps up, the kernel drops none
        receiver = h.ctx.memory["snmp-traps"]
        await h.until(lambda: receiver.received >= 5000 and h.incidents())
        await asyncio.sleep(1.2)  # more ticks: still one incident
        incs = h.incidents()
    grown = psutil.Process().memory_info().rss - rss
    (inc,) = incs
    assert inc.evidence["check"] == "snmp.trap_storm" and inc.trigger is Trigger.SOFTWARE
    assert inc.departments == ["护士站"]
    assert inc.evidence["received"] >= 5000 and inc.evidence["dropped"] >= 4000
    assert inc.evidence["by_type"] == {"1.3.6.1.6.3.1.1.5.3": receiver.decoded}
    assert receiver.decoded <= 50 * 5  # rate-limited decoding: tokens, not thousands
    assert len(receiver.meters) == 1
    assert grown < 20 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB"


async def test_trap_port_in_use_is_a_clear_error(sim, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        cfg = config(sim, only="core").model_copy(update={"trap_port": taken.getsockname()[1]})
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{cfg.trap_port}.*in use"):
            await watch(cfg, ProbeContext(host="agent-1", state_dir=tmp_path), lambda obs: None)


async def test_link_down_trap_before_the_first_poll_still_counts_for_the_uplink(sim, tmp_path):
    # The agent has just started: the receiver listens but no round has named the ports yet. The trap
    # must not be dropped (it used to be: the uplink then needed two polls, the next a full interval away).
    h = Harness(config(sim, only="access"), tmp_path)
    task = asyncio.create_task(watch(h.cfg, h.ctx, h.emit))
    try:
        await asyncio.sleep(0.5)
        snmptrap(h.cfg, ACCESS, "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.48", "i", "48")
        await h.until(lambda: [o for o in h.emitted if o.check == "snmp.interface"])
        snmptrap(h.cfg, ACCESS, "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.7", "i", "7")  # an edge port
        await asyncio.sleep(1.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (o,) = [o for o in h.emitted if o.check == "snmp.interface"]
    assert (o.subject, o.ok, o.detail["via"], o.detail["if_index"]) == (
        "access/GigabitEthernet0/0/48",
        False,
        "trap",
        48,
    )
    assert h._want.is_set()  # and it asked for the confirming poll
