"""Trap receiver: traps feed the same observations as polling, and ask for a confirming poll.

A storm (thousands of traps a minute) must cost neither memory nor CPU: datagrams are counted
per source before any decoding, and only `trap_rate` a second are decoded; the rest are only
counted. A device sending more than `trap_storm` a minute is one condition, snmp.trap_storm,
with the counts as evidence — never one incident per trap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from typing import Any

from pyasn1.type.univ import OctetString
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config
from pysnmp.entity.rfc3413 import ntfrcv

from hisguard.checks.base import Emit, Observation, ProbeContext
from hisguard.checks.snmp import oids
from hisguard.checks.snmp.client import AUTH_PROTOCOLS, PRIV_PROTOCOLS, Session, SnmpError, enable_privacy, engine
from hisguard.checks.snmp.config import Config, Device
from hisguard.checks.snmp.interfaces import text
from hisguard.checks.snmp.polling import restart_observations, state

log = logging.getLogger("hisguard.snmp.traps")

MAX_SOURCES = 4096  # distinct senders tracked; the rest are counted together
TICK_S = 2.0
POLL_GAP = 1.0  # seconds between confirming polls asked by traps
RCVBUF = 8 * 2**20  # bytes the kernel may queue for the trap socket (~10,000 traps while the loop is busy)
_DOMAIN = (*udp.DOMAIN_NAME, 162)  # the receiver's own transport, apart from the pollers'


class _Meter:
    """Traps a minute from one source, in 60 one-second buckets (fixed memory)."""

    __slots__ = ("buckets", "dropped", "last", "total", "types")

    def __init__(self) -> None:
        self.buckets = [0] * 60
        self.last = int(time.monotonic())
        self.total = 0
        self.dropped = 0
        self.types: Counter[str] = Counter()

    def add(self, now: int) -> None:
        self._advance(now)
        self.buckets[now % 60] += 1
        self.total += 1

    def _advance(self, now: int) -> None:
        if now - self.last >= 60:
            self.buckets = [0] * 60
        else:
            for s in range(self.last + 1, now + 1):
                self.buckets[s % 60] = 0
        self.last = max(self.last, now)

    def per_minute(self, now: int) -> int:
        self._advance(now)
        return sum(self.buckets)


class _LimitedUdp(udp.UdpAsyncioTransport):
    """UDP server transport that counts every datagram and lets only admitted ones be decoded."""

    def __init__(self, admit: Any) -> None:
        super().__init__()
        self._admit = admit

    def datagram_received(self, datagram: bytes, transportAddress: Any) -> None:
        if self._admit(transportAddress[0]):
            super().datagram_received(datagram, transportAddress)


class TrapReceiver:
    def __init__(self, cfg: Config, ctx: ProbeContext, emit: Emit) -> None:
        self.cfg, self.ctx, self.emit = cfg, ctx, emit
        self.devices: dict[str, Device] = {}
        for d in cfg.devices:
            self.devices.setdefault(d.address, d)
        self.meters: dict[str, _Meter] = {}
        self.storming: set[str] = set()
        self.tokens = cfg.trap_rate
        self.refilled = time.monotonic()
        self.received = self.decoded = self.dropped = 0
        self.transport: _LimitedUdp | None = None
        self.bound: tuple[str, int] | None = None
        self._last_ask = 0.0
        self._deferred: asyncio.TimerHandle | None = None
        self.pending: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] | None = None  # port look-ups under way (set while serving)
        ctx.memory["snmp-traps"] = self

    # -- before decoding: count, rate-limit ---------------------------------------------------
    def _meter(self, source: str) -> _Meter:
        m = self.meters.get(source)
        if m is None:
            if len(self.meters) >= MAX_SOURCES:
                source = "(other)"
                m = self.meters.get(source)
            if m is None:
                m = self.meters[source] = _Meter()
        return m

    def admit(self, source: str) -> bool:
        now = time.monotonic()
        self.received += 1
        meter = self._meter(source)
        meter.add(int(now))
        self.tokens = min(self.cfg.trap_rate, self.tokens + (now - self.refilled) * self.cfg.trap_rate)
        self.refilled = now
        if self.tokens < 1 or source in self.storming:
            self.dropped += 1
            meter.dropped += 1
            return False
        self.tokens -= 1
        return True

    # -- after decoding: what the trap says -------------------------------------------------
    def on_trap(self, eng: Any, state_ref: Any, ctx_engine: Any, ctx_name: Any, var_binds: Any, cb_ctx: Any) -> None:
        try:
            exec_ctx = eng.observer.get_execution_context("rfc3412.receiveMessage:request")
            source = exec_ctx["transportAddress"][0]
        except Exception:  # no transport context: nothing to attribute the trap to
            return
        self.decoded += 1
        binds = {str(name): value for name, value in var_binds}
        trap = str(binds.get(oids.SNMP_TRAP_OID, ""))
        meter = self._meter(source)
        if len(meter.types) < 64 or trap in meter.types:
            meter.types[trap] += 1
        dev = self.devices.get(source)
        if dev is None:
            log.info("trap %s from %s, which is not a configured device", trap, source)
            return
        try:
            self._handle(dev, trap, binds)
        except Exception:  # a malformed trap must not stop the receiver
            log.exception("trap %s from %s could not be handled", trap, dev.name)

    def _handle(self, dev: Device, trap: str, binds: dict[str, Any]) -> None:
        obs: list[Observation] = []
        impact = dev.impact()
        base = {"device": dev.name, "address": dev.address, "via": "trap"}
        if trap in (oids.COLD_START, oids.WARM_START):
            st = state(self.ctx)
            st.add_restart(dev.name, time.time(), self.cfg.reboot_loop_window)

            def ob(check: str, subject: str, ok: bool | None, value: float | None = None, **detail: Any) -> Observation:
                return Observation(check, subject, ok, impact, value, name=dev.name, detail={**base, **detail})

            obs += restart_observations(dev, self.cfg, st, ob, None)
        elif trap in (oids.LINK_DOWN, oids.LINK_UP):
            index = next((str(int(v)) for k, v in binds.items() if k.startswith(oids.IF_INDEX + ".")), None)
            mem = state(self.ctx).devices.get(dev.name, {})
            port = mem.get("ports", {}).get(index or "")
            if index and port is None:
                # The first poll has not named this device's ports yet: ask the device for this one port
                # rather than drop the trap (a linkDown is the news a trap receiver exists for).
                if trap == oids.LINK_DOWN and self._tasks is not None:
                    task = asyncio.get_running_loop().create_task(self._link_down_unnamed(dev, index))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif port is not None and trap == oids.LINK_DOWN and self._watched(dev, mem, index or ""):
                obs.append(self._link_down(dev, port.label, port.shown(dev.name), port.brief()))
        elif trap in (oids.UPS_TRAP_ON_BATTERY, oids.APC_TRAP_ON_BATTERY):
            obs.append(Observation("snmp.ups.on_battery", dev.name, False, impact, None, name=dev.name, detail=base))
        # A trap counts as one bad round until the confirming poll has run, however often it repeats.
        obs = [o for o in obs if o.ok is not False or (o.check, o.subject) not in self.pending]
        self.pending.update((o.check, o.subject) for o in obs if o.ok is False)
        if obs:
            self.emit(obs)
        self._ask_poll()

    def _watched(self, dev: Device, mem: dict[str, Any], index: str) -> bool:
        """Is this port watched on its own? A member of a redundant group waits for the confirming poll."""
        if index in mem.get("grouped", set()):
            return False
        return dev.watch == "all" or index in mem.get("watched", set())

    def _link_down(self, dev: Device, label: str, name: str, brief: dict[str, Any]) -> Observation:
        # One bad round for the port; the confirming poll supplies the second.
        detail = {"device": dev.name, "address": dev.address, "via": "trap", **brief, "name": name}
        return Observation("snmp.interface", f"{dev.name}/{label}", False, dev.impact(), 2.0, name=name, detail=detail)

    async def _link_down_unnamed(self, dev: Device, index: str) -> None:
        sess = Session(dev.address, dev.port, dev.credentials(), dev.timeout, dev.retries)
        cols = (oids.IF_NAME, oids.IF_DESCR, oids.IF_ALIAS)
        try:
            got = await sess.get([f"{c}.{index}" for c in cols])
        except SnmpError as exc:
            log.info("linkDown from %s for ifIndex %s: port not readable (%s)", dev.name, index, exc)
            return
        name_, descr, alias = (text(got.get(f"{c}.{index}", "")) for c in cols)
        label = name_ or descr or f"if{index}"
        wanted = {u.strip().lower() for u in dev.uplinks}
        named = {f"#{index}", index, label.lower(), descr.lower(), alias.lower()} - {""}
        if dev.watch != "all" and not (wanted & named):
            return
        shown = f"{dev.name} {label}" + (f"（{alias}）" if alias else "")
        brief = {"port": label, "if_index": int(index), **({"alias": alias} if alias else {})}
        obs = [self._link_down(dev, label, shown, brief)]
        obs = [o for o in obs if (o.check, o.subject) not in self.pending]
        self.pending.update((o.check, o.subject) for o in obs)
        if obs:
            self.emit(obs)
        self._ask_poll()

    def polled(self) -> None:
        """The scheduled probe has run: traps may count again."""
        self.pending.clear()

    def _ask_poll(self) -> None:
        """A confirming poll soon: at most one a POLL_GAP, however many traps, and never lost."""
        if self._deferred is not None:
            return
        wait = self._last_ask + POLL_GAP - time.monotonic()
        if wait <= 0:
            self._poll()
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait, self._poll)

    def _poll(self) -> None:
        self._deferred = None
        self._last_ask = time.monotonic()
        self.ctx.poll_now()

    # -- every tick: storms ----------------------------------------------------------------------
    def storm_observations(self) -> list[Observation]:
        now = int(time.monotonic())
        obs = []
        for source, meter in list(self.meters.items()):
            rate = meter.per_minute(now)
            dev = self.devices.get(source)
            storming = rate >= self.cfg.trap_storm or (source in self.storming and rate >= self.cfg.trap_storm // 2)
            if storming:
                self.storming.add(source)
            else:
                self.storming.discard(source)
            if dev is None:
                if rate == 0 and source not in self.storming:
                    del self.meters[source]  # forget idle unknown senders
                continue
            obs.append(
                Observation(
                    "snmp.trap_storm",
                    dev.name,
                    not storming,
                    dev.impact(),
                    float(rate),
                    name=dev.name,
                    detail={
                        "device": dev.name,
                        "address": dev.address,
                        "per_minute": rate,
                        "received": meter.total,
                        "dropped": meter.dropped,
                        "by_type": dict(meter.types.most_common(10)),
                    },
                )
            )
        return obs

    def tick(self) -> None:
        obs = self.storm_observations()
        if any(o.ok is False for o in obs):
            self._ask_poll()
        if obs:
            self.emit(obs)

    # -- life cycle ------------------------------------------------------------------------------
    def open(self) -> None:
        eng = engine()
        where = f"{self.cfg.trap_listen}:{self.cfg.trap_port}"
        # Bind here, not inside pysnmp, which binds in a background task and would lose the error.
        family = socket.AF_INET6 if ":" in self.cfg.trap_listen else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.cfg.trap_listen, self.cfg.trap_port))
            # A storm arrives faster than a busy loop drains it: let the kernel hold a burst (capped by
            # net.core.rmem_max) so datagrams are counted rather than lost before they are seen.
            try:  # above rmem_max needs CAP_NET_ADMIN (root); otherwise the kernel's cap applies
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), RCVBUF)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.setblocking(False)
            self.transport = _LimitedUdp(self.admit).open_server_mode(sock=sock)
        except Exception as exc:
            sock.close()
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if self.cfg.trap_port < 1024 else ""
            raise RuntimeError(f"trap receiver cannot listen on {where}: {exc}{hint}") from exc
        config.add_transport(eng, _DOMAIN, self.transport)
        for i, community in enumerate(self.cfg.trap_communities):
            config.add_v1_system(eng, f"hg-trap-{i}", community)
        if self.cfg.trap_users:
            enable_privacy()
        for u in self.cfg.trap_users:
            config.add_v3_user(
                eng,
                u.user,
                AUTH_PROTOCOLS[u.auth_protocol],
                u.auth_key,
                PRIV_PROTOCOLS[u.priv_protocol],
                u.priv_key,
                securityEngineId=OctetString(hexValue=u.engine_id) if u.engine_id else None,
            )
        self.receiver = ntfrcv.NotificationReceiver(eng, self.on_trap)
        log.info("receiving traps on %s", where)

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
        for task in list(self._tasks or ()):
            task.cancel()
        with contextlib.suppress(Exception):
            eng = engine()
            self.receiver.close(eng)
            eng.transport_dispatcher.unregister_transport(_DOMAIN)
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close_transport()
            self.transport = None

    async def serve(self) -> None:
        self.open()
        self._tasks = set()
        try:
            while True:
                await asyncio.sleep(TICK_S)
                self.tick()
        finally:
            self.close()
