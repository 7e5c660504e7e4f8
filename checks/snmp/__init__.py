"""SNMP probe (pysnmp, asyncio): switches, servers and UPS units — interfaces, restarts, load, power.

Per device, v2c or v3 (authPriv), its own timeout and retries. What it reports:
- snmp.reachable   neither SNMP nor ping answers: the device is gone (trigger 1);
- snmp.agent       ping answers but SNMP is silent: management software failure (trigger 2);
- snmp.interface   a watched port is down (uplinks on switches, every port on servers); an
                   admin-down port is not a fault; edge ports are summarised in snmp.edge_ports;
- snmp.if_errors   errors on an uplink climb fast; snmp.if_flap  an uplink keeps going down and up;
- snmp.restart / snmp.reboot_loop   sysUpTime went backwards (or a coldStart/warmStart trap);
- snmp.cpu / snmp.memory / snmp.temperature / snmp.hardware   Huawei, H3C, Cisco vendor MIBs;
- snmp.ups.*       on battery, runtime low, battery depleted (UPS-MIB, APC PowerNet, Eaton XUPS).
A device the probe cannot read (wrong community or keys, unknown port, not a UPS) is a probe
error naming the device (snmp.error), never an incident.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hisguard.checks.base import Emit, Impact, Observation, ProbeConfig, ProbeContext, ProbeError
from hisguard.checks.snmp import oids
from hisguard.checks.snmp.client import Credentials, Session, SnmpError

_TICKS_WRAP_S = 2**32 / 100  # TimeTicks wrap after ~497 days
_NAMES_EVERY = 20  # re-read interface names every N rounds (they rarely change)


class V3(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1)
    auth_protocol: Literal["MD5", "SHA", "SHA256", "SHA512"] = "SHA"
    auth_key: str = Field(min_length=8, description="Authentication pass phrase (≥ 8 characters)")
    priv_protocol: Literal["AES", "AES256", "DES"] = "AES"
    priv_key: str = Field(min_length=8, description="Privacy pass phrase (≥ 8 characters)")
    context: str = Field("", description="Context name (empty for most devices)")
    engine_id: str | None = Field(None, description="Hex engine ID of a trap sender (traps only)")

    def credentials(self) -> Credentials:
        return Credentials(
            "3",
            user=self.user,
            auth_protocol=self.auth_protocol,
            auth_key=self.auth_key,
            priv_protocol=self.priv_protocol,
            priv_key=self.priv_key,
            context=self.context,
        )


class Device(Impact):
    """A switch, server or UPS the agent reads over SNMP, and where it sits in the hospital."""

    name: str = Field(min_length=1, description="What staff call it (核心交换机, 门诊楼接入交换机 2)")
    address: str = Field(min_length=1)
    port: int = Field(161, ge=1, le=65535)
    kind: Literal["switch", "server", "ups"] = "switch"
    vendor: Literal["auto", "huawei", "h3c", "cisco", "generic"] = "auto"
    version: Literal["2c", "3"] = "2c"
    community: str = Field("public", min_length=1)
    v3: V3 | None = None
    timeout: float = Field(2.0, gt=0, le=30, description="Seconds per request")
    retries: int = Field(1, ge=0, le=5)
    uplinks: list[str] = Field(default_factory=list, description="Uplink ports (ifName, ifDescr or ifIndex)")
    interfaces: Literal["uplinks", "all"] | None = Field(
        None, description="Ports whose loss is a fault (default: uplinks on switches, all on servers)"
    )
    ping: bool = Field(True, description="When SNMP is silent, ping to tell a dead agent from a dead device")
    cpu_max: float = Field(90.0, gt=0, le=100)
    memory_max: float = Field(90.0, gt=0, le=100)
    temperature_max: float = Field(65.0, gt=0, le=150, description="°C; above it: over-temperature (trigger 6)")

    @model_validator(mode="after")
    def _v3(self) -> Device:
        if self.version == "3" and self.v3 is None:
            raise ValueError(f"device {self.name}: version 3 needs a v3 table (user, auth_key, priv_key)")
        return self

    @property
    def watch(self) -> str:
        return self.interfaces or ("all" if self.kind == "server" else "uplinks")

    def credentials(self) -> Credentials:
        if self.version == "3" and self.v3 is not None:
            return self.v3.credentials()
        return Credentials("2c", community=self.community)

    def impact(self) -> Impact:
        return Impact(
            department=self.department, departments=self.departments, hospital_critical=self.hospital_critical
        )


class Config(ProbeConfig):
    interval: float = Field(30.0, gt=0, le=86400)
    timeout: float = Field(20.0, gt=0)
    fail_after: int = Field(2, ge=1)
    fail_window: int = Field(3, ge=1)
    clear_after: int = Field(2, ge=1)
    devices: list[Device] = Field(min_length=1)
    concurrency: int = Field(32, ge=1, le=1000, description="Devices polled at once")
    restart_hold: float = Field(900.0, gt=0, description="Seconds a device restart stays reported")
    reboot_loop_count: int = Field(3, ge=2, description="Restarts within the window that make a reboot loop")
    reboot_loop_window: float = Field(3600.0, gt=0)
    if_errors_max: int = Field(1000, ge=1, description="Uplink errors per round above which the link is failing")
    flap_count: int = Field(3, ge=1, description="Uplink state changes within flap_window that make it flapping")
    flap_window: float = Field(900.0, gt=0, description="Seconds")
    ups_runtime_warn: float = Field(15.0, ge=0, description="Minutes on battery below which severity rises")
    ups_runtime_critical: float = Field(5.0, ge=0, description="Minutes below which the UPS is about to drop")
    # Trap receiver (runs for the agent's life when enabled)
    traps: bool = Field(False, description="Receive traps (linkDown/linkUp, cold/warm start, UPS on battery)")
    trap_listen: str = Field("0.0.0.0")
    trap_port: int = Field(162, ge=1, le=65535)
    trap_communities: list[str] = Field(default_factory=lambda: ["public"])
    trap_users: list[V3] = Field(default_factory=list, description="SNMPv3 trap senders (with engine_id)")
    trap_rate: float = Field(50.0, gt=0, le=10000, description="Traps a second decoded; beyond it only counted")
    trap_storm: int = Field(200, ge=10, description="Traps a minute from one device that make a trap storm")

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: list[Device]) -> list[Device]:
        seen: set[str] = set()
        for d in devices:
            if d.name in seen:
                raise ValueError(f"device name {d.name!r} is used twice")
            seen.add(d.name)
        # One engine holds one key set per SNMPv3 user name.
        keys: dict[str, tuple[Device, tuple[str, ...]]] = {}
        for d in devices:
            if d.version == "3" and d.v3 is not None:
                k = (d.v3.auth_protocol, d.v3.auth_key, d.v3.priv_protocol, d.v3.priv_key)
                other = keys.setdefault(d.v3.user, (d, k))
                if other[1] != k:
                    raise ValueError(
                        f"devices {other[0].name!r} and {d.name!r} use SNMPv3 user {d.v3.user!r} with different "
                        "keys; give each key set its own user name"
                    )
        return devices


class DeviceError(Exception):
    """This device cannot be read as configured; the message names it."""


def _session(dev: Device) -> Session:
    return Session(dev.address, dev.port, dev.credentials(), dev.timeout, dev.retries)


def _text(value: Any) -> str:
    try:
        raw = bytes(value)
        return raw.decode("utf-8", "replace").rstrip("\x00").strip()
    except Exception:
        return str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _cred_key(dev: Device) -> str:
    c = dev.credentials()
    digest = hashlib.sha256(repr((c, dev.address, dev.port)).encode()).hexdigest()[:16]
    return f"{dev.name}|{digest}"


class _State:
    """What the job remembers between rounds: per-device memory, devices seen answering, restarts."""

    def __init__(self, ctx: ProbeContext) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.path = ctx.state_dir / "snmp-state.json"
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            saved = {}
        self.seen: set[str] = set(saved.get("seen", []))
        self.restarts: dict[str, list[float]] = {k: list(v) for k, v in saved.get("restarts", {}).items()}

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seen": sorted(self.seen), "restarts": self.restarts}))
            os.replace(tmp, self.path)
        except OSError:
            pass  # memory still holds it; the next round retries

    def add_restart(self, device: str, at: float, window: float) -> bool:
        """Record a restart (a trap and a poll seeing the same one count once)."""
        times = [t for t in self.restarts.get(device, []) if t >= time.time() - max(window, 86400)]
        if any(abs(t - at) < 120 for t in times):
            return False
        self.restarts[device] = [*times, at][-50:]
        self.save()
        return True


def state(ctx: ProbeContext) -> _State:
    st = ctx.memory.get("snmp")
    if st is None:
        st = ctx.memory["snmp"] = _State(ctx)
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


async def poll_device(dev: Device, cfg: Config, ctx: ProbeContext) -> list[Observation]:
    st = state(ctx)
    mem = st.devices.setdefault(dev.name, {})
    impact = dev.impact()
    base = {"device": dev.name, "address": dev.address}
    sess = _session(dev)

    def ob(check: str, subject: str, ok: bool | None, value: float | None = None, **detail: Any) -> Observation:
        return Observation(
            check, subject, ok, impact, value, name=detail.pop("name", dev.name), detail={**base, **detail}
        )

    first = [oids.SYS_UPTIME, oids.SYS_OBJECT_ID]
    if dev.kind == "ups":
        first += [
            oids.UPS_OUTPUT_SOURCE,
            oids.UPS_BATTERY_STATUS,
            oids.UPS_MINUTES_REMAINING,
            oids.UPS_CHARGE_REMAINING,
            oids.APC_OUTPUT_STATUS,
            oids.APC_BATTERY_STATUS,
            oids.APC_RUNTIME,
            oids.APC_CAPACITY,
            oids.XUPS_OUTPUT_SOURCE,
            oids.XUPS_TIME_REMAINING,
            oids.XUPS_CAPACITY,
        ]
    try:
        scalars = await sess.get(first)
    except SnmpError as exc:
        if not exc.silent:
            raise DeviceError(f"{dev.name} ({dev.address}): {exc}") from exc
        return await _silent(dev, st, ob, exc)
    if oids.SYS_UPTIME not in scalars and dev.kind != "ups":  # some UPS cards omit MIB-II
        raise DeviceError(f"{dev.name} ({dev.address}): answers without sysUpTime (not a standard SNMP agent)")
    if _cred_key(dev) not in st.seen:
        st.seen.add(_cred_key(dev))
        st.save()
    obs = [ob("snmp.reachable", dev.name, True), ob("snmp.agent", dev.name, True)]
    if oids.SYS_UPTIME in scalars:
        obs += _uptime(dev, cfg, st, mem, scalars, ob)
    vendor = dev.vendor
    if vendor == "auto":
        sysoid = str(scalars.get(oids.SYS_OBJECT_ID, ""))
        vendor = next((v for p, v in oids.ENTERPRISES.items() if sysoid.startswith(p)), "generic")
    if dev.kind == "ups":
        obs += _ups(dev, cfg, scalars, ob)
        return obs
    tasks = [_interfaces(dev, cfg, sess, mem, ob), _health(dev, vendor, sess, ob)]
    for part in await asyncio.gather(*tasks):
        obs += part
    return obs


async def _silent(dev: Device, st: _State, ob: Any, exc: SnmpError) -> list[Observation]:
    seen = _cred_key(dev) in st.seen
    alive = await _ping(dev.address) if dev.ping else None
    if alive:
        if not seen:  # never read with these settings: misconfiguration, not a failure
            raise DeviceError(
                f"{dev.name} ({dev.address}): no SNMP answer although it answers ping — "
                "check community / v3 user, the device's SNMP ACL, or that SNMP is enabled"
            )
        return [ob("snmp.reachable", dev.name, True, ping=True), ob("snmp.agent", dev.name, False, ping=True)]
    if alive is None and not seen:
        raise DeviceError(f"{dev.name} ({dev.address}): {exc}; never answered, and ping is unavailable to tell why")
    # Neither answers: the device (or the path to it) is gone. The agent is not the fault then.
    return [ob("snmp.reachable", dev.name, False, ping=alive), ob("snmp.agent", dev.name, True, ping=alive)]


def _uptime(dev: Device, cfg: Config, st: _State, mem: dict[str, Any], scalars: dict[str, Any], ob: Any) -> list:
    now = time.time()
    up_s = int(scalars[oids.SYS_UPTIME]) / 100.0
    prev, prev_at = mem.get("uptime"), mem.get("uptime_at")
    if prev is None:
        if up_s < cfg.restart_hold:  # first sight of a device that has just restarted
            st.add_restart(dev.name, now - up_s, cfg.reboot_loop_window)
    elif up_s + 5 < prev and not (prev + (now - prev_at) > _TICKS_WRAP_S - 600):
        st.add_restart(dev.name, now - up_s, cfg.reboot_loop_window)
    mem["uptime"], mem["uptime_at"] = up_s, now
    return restart_observations(dev, cfg, st, ob, up_s)


def restart_observations(dev: Device, cfg: Config, st: _State, ob: Any, up_s: float | None) -> list[Observation]:
    now = time.time()
    times = st.restarts.get(dev.name, [])
    in_window = [t for t in times if t >= now - cfg.reboot_loop_window]
    loop = len(in_window) >= cfg.reboot_loop_count
    recent = bool(times) and times[-1] >= now - cfg.restart_hold
    return [
        # A reboot loop supersedes the single restart (one incident, not two).
        ob("snmp.restart", dev.name, not recent or loop, up_s, restarted_at=times[-1] if times else None),
        ob(
            "snmp.reboot_loop",
            dev.name,
            not loop,
            float(len(in_window)),
            restarts_in_window=len(in_window),
            window_s=cfg.reboot_loop_window,
        ),
    ]


async def _interfaces(dev: Device, cfg: Config, sess: Session, mem: dict[str, Any], ob: Any) -> list[Observation]:
    rounds = mem["rounds"] = mem.get("rounds", 0) + 1
    oper = (await sess.columns([oids.IF_OPER], max_repetitions=64))[oids.IF_OPER]
    names: dict[str, str] = mem.get("ifnames", {})
    if not names or set(oper) != set(names) or rounds % _NAMES_EVERY == 0:
        cols = await sess.columns([oids.IF_NAME, oids.IF_DESCR, oids.IF_TYPE], max_repetitions=20)
        descr = {i: _text(v) for i, v in cols[oids.IF_DESCR].items()}
        names = {i: (_text(cols[oids.IF_NAME].get(i, "")) or descr.get(i) or f"if{i}") for i in oper}
        mem["ifnames"], mem["ifdescr"] = names, descr
        mem["loopbacks"] = {i for i, v in cols[oids.IF_TYPE].items() if _int(v) == oids.IF_TYPE_LOOPBACK}
    uplinks = _resolve_uplinks(dev, names, mem.get("ifdescr", {}))
    watched = set(oper) - mem.get("loopbacks", set()) if dev.watch == "all" else set(uplinks)
    down = [i for i, v in oper.items() if _int(v) not in (oids.IF_UP, 5)]  # 5 dormant: waiting, not broken
    extra: dict[str, dict[str, Any]] = {}
    asks = [f"{c}.{i}" for i in down for c in (oids.IF_ADMIN, oids.IF_LAST_CHANGE)]
    asks += [f"{c}.{i}" for i in uplinks for c in (oids.IF_IN_ERRORS, oids.IF_OUT_ERRORS, oids.IF_LAST_CHANGE)]
    asks = list(dict.fromkeys(asks))
    for chunk in range(0, len(asks), 40):
        for oid, value in (await sess.get(asks[chunk : chunk + 40])).items():
            col, _, idx = oid.rpartition(".")
            extra.setdefault(idx, {})[col] = value
    obs = []
    edge_down = []
    for idx in sorted(oper, key=int):
        status = _int(oper[idx])
        admin = _int(extra.get(idx, {}).get(oids.IF_ADMIN, 1))
        fault = idx in down and admin != 2  # an admin-down port is switched off on purpose
        if idx not in watched:
            if fault:
                edge_down.append(names.get(idx, idx))
            continue
        port = names.get(idx, f"if{idx}")
        detail: dict[str, Any] = {
            "port": port,
            "if_index": int(idx),
            "oper": status,
            "admin": admin,
            "uplink": idx in uplinks,
            "name": f"{dev.name} {port}",
        }
        if (lc := extra.get(idx, {}).get(oids.IF_LAST_CHANGE)) is not None:
            detail["last_change_ticks"] = int(lc)
        obs.append(ob("snmp.interface", f"{dev.name}/{port}", not fault, float(status or 0), **detail))
    if dev.watch == "uplinks":
        obs.append(ob("snmp.edge_ports", dev.name, None, float(len(edge_down)), down=edge_down[:50]))
    prev_err: dict[str, int] = mem.get("errors", {})
    now_err: dict[str, int] = {}
    for idx in uplinks:
        got = extra.get(idx, {})
        if oids.IF_IN_ERRORS not in got:
            continue
        total = int(got[oids.IF_IN_ERRORS]) + int(got.get(oids.IF_OUT_ERRORS, 0))
        now_err[idx] = total
        if idx in prev_err:
            delta = (total - prev_err[idx]) % 2**32  # Counter32 wraps
            port = names.get(idx, idx)
            obs.append(
                ob(
                    "snmp.if_errors",
                    f"{dev.name}/{port}",
                    delta < cfg.if_errors_max,
                    float(delta),
                    port=port,
                    name=f"{dev.name} {port}",
                )
            )
    mem["errors"] = now_err
    obs += _flaps(dev, cfg, mem, uplinks, names, extra, ob)
    return obs


def _flaps(
    dev: Device,
    cfg: Config,
    mem: dict[str, Any],
    uplinks: list[str],
    names: dict[str, str],
    extra: dict[str, dict[str, Any]],
    ob: Any,
) -> list[Observation]:
    """An uplink whose ifLastChange moves between polls went down and up again: a flap polling alone misses."""
    now = time.time()
    prev: dict[str, int] = mem.get("last_change", {})
    flaps: dict[str, list[float]] = mem.setdefault("flaps", {})
    current: dict[str, int] = {}
    obs = []
    for idx in uplinks:
        lc = _int(extra.get(idx, {}).get(oids.IF_LAST_CHANGE))
        if lc is None:
            continue
        current[idx] = lc
        if idx in prev and lc > prev[idx]:  # smaller: the device restarted, not a flap
            flaps[idx] = [*flaps.get(idx, []), now][-20:]
        recent = [t for t in flaps.get(idx, []) if t >= now - cfg.flap_window]
        port = names.get(idx, idx)
        obs.append(
            ob(
                "snmp.if_flap",
                f"{dev.name}/{port}",
                len(recent) < cfg.flap_count,
                float(len(recent)),
                port=port,
                name=f"{dev.name} {port}",
                flaps_in_window=len(recent),
                window_s=cfg.flap_window,
            )
        )
    mem["last_change"] = current
    return obs


def _resolve_uplinks(dev: Device, names: dict[str, str], descr: dict[str, str]) -> list[str]:
    found = []
    by_name = {v.lower(): k for k, v in names.items()} | {v.lower(): k for k, v in descr.items()}
    for want in dev.uplinks:
        idx = want if want in names else by_name.get(want.lower())
        if idx is None:
            sample = ", ".join(list(names.values())[:4])
            raise DeviceError(
                f"{dev.name} ({dev.address}): uplink {want!r} is not a port of this device "
                f"({len(names)} ports, e.g. {sample})"
            )
        found.append(idx)
    return found


async def _health(dev: Device, vendor: str, sess: Session, ob: Any) -> list[Observation]:
    obs: list[Observation] = []
    cpu = mem_pct = temp = None
    faults: list[str] = []
    if vendor == "huawei":
        t = await sess.columns([oids.HUAWEI_CPU, oids.HUAWEI_MEM, oids.HUAWEI_TEMP])
        cpu = _max(t[oids.HUAWEI_CPU])
        mem_pct = _max(t[oids.HUAWEI_MEM])
        temp = _max(t[oids.HUAWEI_TEMP])
    elif vendor == "h3c":
        t = await sess.columns([oids.H3C_CPU, oids.H3C_MEM, oids.H3C_TEMP, oids.H3C_ERROR])
        cpu, mem_pct, temp = _max(t[oids.H3C_CPU]), _max(t[oids.H3C_MEM]), _max(t[oids.H3C_TEMP])
        faults = [
            f"entity {i}: errorStatus {int(v)}"
            for i, v in t[oids.H3C_ERROR].items()
            if _int(v) not in oids.H3C_ERROR_OK
        ]
    elif vendor == "cisco":
        t = await sess.columns([oids.CISCO_CPU_5MIN, oids.CISCO_MEM_USED, oids.CISCO_MEM_FREE])
        e = await sess.columns([oids.CISCO_TEMP_VALUE, oids.CISCO_FAN_STATE, oids.CISCO_SUPPLY_STATE])
        cpu = _max(t[oids.CISCO_CPU_5MIN])
        used = sum(int(v) for v in t[oids.CISCO_MEM_USED].values())
        free = sum(int(v) for v in t[oids.CISCO_MEM_FREE].values())
        mem_pct = 100.0 * used / (used + free) if used + free else None
        temp = _max(e[oids.CISCO_TEMP_VALUE])
        for col, what in ((oids.CISCO_FAN_STATE, "fan"), (oids.CISCO_SUPPLY_STATE, "power supply")):
            for i, v in e[col].items():
                if _int(v) not in oids.CISCO_STATE_OK:
                    faults.append(f"{what} {i}: {oids.CISCO_STATE_NAMES.get(_int(v) or 0, v)}")
    else:
        t = await sess.columns([oids.HR_PROCESSOR_LOAD])
        loads = [int(v) for v in t[oids.HR_PROCESSOR_LOAD].values()]
        cpu = sum(loads) / len(loads) if loads else None
    if cpu is not None:
        obs.append(ob("snmp.cpu", dev.name, cpu < dev.cpu_max, cpu, vendor=vendor))
    if mem_pct is not None:
        obs.append(ob("snmp.memory", dev.name, mem_pct < dev.memory_max, mem_pct, vendor=vendor))
    if temp is not None:
        obs.append(
            ob("snmp.temperature", dev.name, temp < dev.temperature_max, temp, vendor=vendor, limit=dev.temperature_max)
        )
    if vendor in ("h3c", "cisco"):
        obs.append(ob("snmp.hardware", dev.name, not faults, float(len(faults)), faults=faults[:20]))
    return obs


def _max(column: dict[str, Any]) -> float | None:
    values = [int(v) for v in column.values() if _int(v) is not None]
    return float(max(values)) if values else None


def _ups(dev: Device, cfg: Config, s: dict[str, Any], ob: Any) -> list[Observation]:
    def num(oid: str) -> int | None:
        return _int(s.get(oid)) if oid in s else None

    if num(oids.UPS_OUTPUT_SOURCE) is not None:
        mib = "UPS-MIB"
        on_battery = num(oids.UPS_OUTPUT_SOURCE) == oids.UPS_SOURCE_BATTERY
        status = num(oids.UPS_BATTERY_STATUS)
        low, depleted = status == 3, status == 4
        minutes = num(oids.UPS_MINUTES_REMAINING)
        charge = num(oids.UPS_CHARGE_REMAINING)
    elif num(oids.APC_OUTPUT_STATUS) is not None:
        mib = "APC PowerNet"
        on_battery = num(oids.APC_OUTPUT_STATUS) == oids.APC_ON_BATTERY
        low, depleted = num(oids.APC_BATTERY_STATUS) == 3, False
        ticks = num(oids.APC_RUNTIME)
        minutes = None if ticks is None else ticks // 6000
        charge = num(oids.APC_CAPACITY)
    elif num(oids.XUPS_OUTPUT_SOURCE) is not None:
        mib = "Eaton XUPS"
        on_battery = num(oids.XUPS_OUTPUT_SOURCE) == oids.UPS_SOURCE_BATTERY
        low = depleted = False
        secs = num(oids.XUPS_TIME_REMAINING)
        minutes = None if secs is None else secs // 60
        charge = num(oids.XUPS_CAPACITY)
    else:
        raise DeviceError(f"{dev.name} ({dev.address}): not a UPS this probe reads (no UPS-MIB, APC or Eaton objects)")
    mins = float(minutes) if minutes is not None else None
    detail = {"mib": mib, "on_battery": on_battery, "minutes_remaining": minutes, "charge_percent": charge}
    draining = on_battery or low or depleted
    runtime_low = draining and (low or (mins is not None and mins < cfg.ups_runtime_warn))
    dropping = depleted or (draining and mins is not None and mins < cfg.ups_runtime_critical)
    return [
        ob("snmp.ups.on_battery", dev.name, not on_battery, mins, **detail),
        ob("snmp.ups.runtime_low", dev.name, not runtime_low, mins, **detail),
        ob("snmp.ups.depleting", dev.name, not dropping, mins, **detail),
    ]


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    sem = asyncio.Semaphore(cfg.concurrency)

    async def one(dev: Device) -> list[Observation] | DeviceError:
        async with sem:
            try:
                return await poll_device(dev, cfg, ctx)
            except DeviceError as exc:
                return exc
            except SnmpError as exc:  # a later request failed (device went away mid-round, garbage)
                return DeviceError(f"{dev.name} ({dev.address}): {exc}")

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
    if errors or any(o.check in ("snmp.reachable", "snmp.agent") and o.ok is False for o in obs):
        ctx.mark_partial()
    receiver = ctx.memory.get("snmp-traps")
    if receiver is not None:  # trap-only conditions are reported every round like the others
        obs += receiver.storm_observations()
        receiver.polled()
    if errors and len(errors) == len(cfg.devices):
        raise ProbeError("; ".join(errors))
    return obs


async def watch(cfg: Config, ctx: ProbeContext, emit: Emit) -> None:
    """The trap receiver, when enabled: traps become observations at once and ask for a confirming poll."""
    if not cfg.traps:
        return
    from hisguard.checks.snmp.traps import TrapReceiver

    receiver = TrapReceiver(cfg, ctx, emit)
    await receiver.serve()


__all__ = ["Config", "Device", "DeviceError", "probe", "watch"]
