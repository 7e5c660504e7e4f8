"""One round over the SNMP job's devices: reachability, restarts, then interfaces, health or UPS per device.

A device the probe cannot read as configured (wrong community or keys, garbage, a table walk that
never ends, an uplink that is not one port) is a probe error naming the device and what was asked,
never an incident, and its other conditions keep their state. Every device says what it can and
cannot be read for (snmp.coverage): nothing is silently unmonitored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any

from hisguard.checks.base import Observation, ProbeContext, ProbeError
from hisguard.checks.snmp import health, interfaces, oids, ups
from hisguard.checks.snmp.client import Session, SnmpError
from hisguard.checks.snmp.config import Config, Device

TICKS_WRAP_S = 2**32 / 100  # TimeTicks wrap after ~497 days
SAME_RESTART_S = 120  # a trap and a poll seeing one restart within this count it once


class DeviceError(Exception):
    """This device cannot be read as configured; the message names it."""


def _cred_key(dev: Device) -> str:
    c = dev.credentials()
    digest = hashlib.sha256(repr((c, dev.address, dev.port)).encode()).hexdigest()[:16]
    return f"{dev.name}|{digest}"


class State:
    """What the job remembers between rounds and across agent restarts (under the context's state_dir):
    devices seen answering, each device's last uptime reading, and the restarts seen."""

    def __init__(self, ctx: ProbeContext) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.path = ctx.state_dir / "snmp-state.json"
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            saved = {}
        self.seen: set[str] = set(saved.get("seen", []))
        self.restarts: dict[str, list[float]] = {k: list(v) for k, v in saved.get("restarts", {}).items()}
        self.late: dict[str, float] = dict(saved.get("late", {}))  # restart time → when first seen, if late
        self.uptime: dict[str, tuple[float, float]] = {k: (v[0], v[1]) for k, v in saved.get("uptime", {}).items()}

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            data = {
                "seen": sorted(self.seen),
                "restarts": self.restarts,
                "late": self.late,
                "uptime": {k: list(v) for k, v in self.uptime.items()},
            }
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:
            pass  # memory still holds it; the next round retries

    def add_restart(self, device: str, at: float, window: float, late: bool = False) -> bool:
        """Record a restart (a trap and a poll seeing the same one count once)."""
        times = [t for t in self.restarts.get(device, []) if t >= time.time() - max(window, 86400)]
        if any(abs(t - at) < SAME_RESTART_S for t in times):
            return False
        self.restarts[device] = sorted([*times, at])[-50:]
        if late:
            self.late[device] = time.time()
        self.save()
        return True


def state(ctx: ProbeContext) -> State:
    st = ctx.memory.get("snmp")
    if st is None:
        st = ctx.memory["snmp"] = State(ctx)
    return st


async def _ping(address: str) -> bool | None:
    """Does the address answer ICMP echo? None if this process cannot ping at all."""
    from icmplib import async_ping
    from icmplib.exceptions import ICMPLibError

    for privileged in (os.name == "nt" or os.geteuid() == 0, False):
        try:
            host = await async_ping(address, count=2, interval=0.2, timeout=1.0, privileged=privileged)
            return host.is_alive
        except (ICMPLibError, OSError):
            continue
    return None


def _observer(dev: Device) -> Any:
    impact = dev.impact()
    base = {"device": dev.name, "address": dev.address}

    def ob(check: str, subject: str, ok: bool | None, value: float | None = None, **detail: Any) -> Observation:
        return Observation(
            check, subject, ok, impact, value, name=detail.pop("name", dev.name), detail={**base, **detail}
        )

    return ob


async def poll_device(dev: Device, cfg: Config, ctx: ProbeContext) -> list[Observation]:
    st = state(ctx)
    mem = st.devices.setdefault(dev.name, {})
    sess = mem["session"] = Session(dev.address, dev.port, dev.credentials(), dev.timeout, dev.retries)
    ob = _observer(dev)
    first = [oids.SYS_UPTIME, oids.SYS_OBJECT_ID] + (ups.SCALARS if dev.kind == "ups" else [])
    try:
        scalars: dict[str, Any] = {}
        for chunk in range(0, len(first), 30):
            scalars |= await sess.get(first[chunk : chunk + 30])
    except SnmpError as exc:
        if not exc.silent:
            raise DeviceError(f"{dev.name} ({dev.address}): {exc}") from exc
        return await _silent(dev, st, ob, exc)
    if not scalars:
        raise DeviceError(f"{dev.name} ({dev.address}): answers, but without sysUpTime or sysObjectID")
    if _cred_key(dev) not in st.seen:
        st.seen.add(_cred_key(dev))
        st.save()
    obs = [ob("snmp.reachable", dev.name, True), ob("snmp.agent", dev.name, True)]
    coverage: dict[str, str | None] = {"restarts": "sysUpTime" if oids.SYS_UPTIME in scalars else None}
    if oids.SYS_UPTIME in scalars:
        obs += _uptime(dev, cfg, st, scalars, ob)
    vendor = dev.vendor
    if vendor == "auto":
        sysoid = str(scalars.get(oids.SYS_OBJECT_ID, "")).lstrip(".")
        vendor = next((v for p, v in oids.ENTERPRISES.items() if sysoid.startswith(p)), "generic")
    try:
        if dev.kind == "ups":
            obs += await ups.observe(dev, cfg, sess, scalars, mem, ob)
            coverage |= mem["coverage_ups"]
        else:
            for part in await asyncio.gather(
                interfaces.observe(dev, cfg, sess, mem, ob), health.observe(dev, cfg, sess, vendor, mem, ob)
            ):
                obs += part
            coverage |= {"interfaces": mem.get("coverage_interfaces"), **mem["coverage_health"]}
    except (interfaces.ConfigProblem, LookupError) as exc:
        raise DeviceError(f"{dev.name} ({dev.address}): {exc}") from exc
    read = {k: v for k, v in coverage.items() if v}
    missing = [k for k, v in coverage.items() if not v]
    obs.append(ob("snmp.coverage", dev.name, None, float(len(read)), vendor=vendor, coverage=coverage,
                  read=read, not_provided=missing))  # fmt: skip
    return obs


async def _silent(dev: Device, st: State, ob: Any, exc: SnmpError) -> list[Observation]:
    seen = _cred_key(dev) in st.seen
    alive = await _ping(dev.address) if dev.ping else None
    if alive:
        if not seen:  # never read with these settings: misconfiguration, not a failure
            raise DeviceError(
                f"{dev.name} ({dev.address}): never answered: check address/community — no SNMP answer although "
                f"it answers ping ({exc}; check community / v3 user, the device's SNMP ACL, or that SNMP is enabled)"
            )
        return [ob("snmp.reachable", dev.name, True, ping=True), ob("snmp.agent", dev.name, False, ping=True)]
    if alive is None and not seen:
        raise DeviceError(
            f"{dev.name} ({dev.address}): never answered: check address/community ({exc}; "
            "ping is unavailable to tell a dead device from a wrong setting)"
        )
    if not any(k.startswith(f"{dev.name}|") for k in st.seen):  # neither, ever: wrong address, or never up
        return [
            ob("snmp.unreached", dev.name, False, ping=alive, never_seen_up=True,
               hint="never answered since configured: check address/community"),
            ob("snmp.agent", dev.name, True, ping=alive),
        ]  # fmt: skip
    # Neither answers: the device (or the path to it) is gone. The agent is not the fault then.
    return [ob("snmp.reachable", dev.name, False, ping=alive), ob("snmp.agent", dev.name, True, ping=alive)]


def _uptime(dev: Device, cfg: Config, st: State, scalars: dict[str, Any], ob: Any) -> list[Observation]:
    now = time.time()
    up_s = int(scalars[oids.SYS_UPTIME]) / 100.0
    prev = st.uptime.get(dev.name)
    if prev is None:
        if up_s < cfg.restart_hold:  # first sight of a device that has just restarted
            st.add_restart(dev.name, now - up_s, cfg.reboot_loop_window)
    else:
        prev_up, prev_at = prev
        elapsed = max(0.0, now - prev_at)
        wrapped = prev_up + elapsed > TICKS_WRAP_S - 600
        # Uptime went backwards, or grew far less than the time that passed (a restart while the agent
        # itself was down, seen only now). The tolerance absorbs clock skew between device and agent.
        expected = prev_up + elapsed
        if not wrapped and (up_s + 5 < prev_up or up_s + max(60.0, 0.05 * elapsed) < expected):
            at = now - up_s
            st.add_restart(dev.name, at, cfg.reboot_loop_window, late=now - at > cfg.restart_hold)
    st.uptime[dev.name] = (up_s, now)
    if prev is None:  # any saved (uptime, time) pair is a valid baseline; restarts save as they are seen
        st.save()
    return restart_observations(dev, cfg, st, ob, up_s)


def restart_observations(dev: Device, cfg: Config, st: State, ob: Any, up_s: float | None) -> list[Observation]:
    now = time.time()
    times = st.restarts.get(dev.name, [])
    in_window = [t for t in times if t >= now - cfg.reboot_loop_window]
    loop = len(in_window) >= cfg.reboot_loop_count
    recent = bool(times) and times[-1] >= now - cfg.restart_hold
    late_seen = st.late.get(dev.name)
    late = bool(times) and not recent and late_seen is not None and late_seen >= now - cfg.restart_hold
    last = times[-1] if times else None
    return [
        # A reboot loop supersedes the single restart (one incident, not two).
        ob("snmp.restart", dev.name, not recent or loop, up_s, restarted_at=last),
        # A restart first seen after restart_hold (the agent was down, or the device only now answers):
        # still recorded, at routine severity, for restart_hold from when it was seen.
        ob("snmp.restart.late", dev.name, not late or loop, up_s, restarted_at=last, seen_at=late_seen),
        ob(
            "snmp.reboot_loop",
            dev.name,
            not loop,
            float(len(in_window)),
            restarts_in_window=len(in_window),
            window_s=cfg.reboot_loop_window,
        ),
    ]


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    sem = asyncio.Semaphore(cfg.concurrency)
    deadline = max(1.0, cfg.timeout * 0.9)  # a device that keeps answering slowly must not sink the round

    async def one(dev: Device) -> list[Observation] | DeviceError:
        async with sem:
            try:
                return await asyncio.wait_for(poll_device(dev, cfg, ctx), deadline)
            except DeviceError as exc:
                return exc
            except SnmpError as exc:  # a later request failed (device went away mid-round, garbage)
                return DeviceError(f"{dev.name} ({dev.address}): {exc}")
            except asyncio.TimeoutError:
                sess = state(ctx).devices.get(dev.name, {}).get("session")
                asking = sess.asked() if sess is not None and sess.asking else "a table walk"
                return DeviceError(f"{dev.name} ({dev.address}): no complete answer within {deadline:g}s "
                                   f"(still asking {asking})")  # fmt: skip

    results = await asyncio.gather(*(one(d) for d in cfg.devices))
    obs: list[Observation] = []
    errors: list[str] = []
    for dev, res in zip(cfg.devices, results, strict=True):
        if isinstance(res, DeviceError):
            errors.append(str(res))
            obs.append(
                Observation(
                    "snmp.error",
                    dev.name,
                    None,
                    dev.impact(),
                    name=dev.name,
                    detail={"device": dev.name, "address": dev.address, "error": str(res)},
                )
            )
        else:
            obs += res
    # A device we could not read this round: its other conditions are unknown, not healthy.
    lost = ("snmp.reachable", "snmp.agent", "snmp.unreached")
    if errors or any(o.check in lost and o.ok is False for o in obs):
        ctx.mark_partial()
    receiver = ctx.memory.get("snmp-traps")
    if receiver is not None:  # trap-only conditions are reported every round like the others
        obs += receiver.storm_observations()
        receiver.polled()
    if errors and len(errors) == len(cfg.devices):
        raise ProbeError("; ".join(errors))
    return obs
