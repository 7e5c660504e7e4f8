"""Device health: CPU, memory, temperature and failed parts, from standard MIBs first, vendor tables where they add.

Standard: ENTITY-SENSOR-MIB (any vendor's temperature sensors), ENTITY-STATE-MIB (disabled parts),
HOST-RESOURCES-MIB (servers' CPU and memory). Vendor: Huawei hwEntityState (with its own CPU, memory
and temperature thresholds) and fan/power tables, H3C hh3cEntityExt (either arc), Cisco CISCO-PROCESS/ENVMON
(CISCO-MEMORY-POOL where IOS has no CPM memory).
Placeholders are never readings: 65535, −1, 0 where a vendor uses it for "no sensor", notSupported,
notPresent, unavailable. A device's own threshold (and its own warning state, where it gives one) is
used unless the configuration sets a limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hisguard.checks.base import Observation
from hisguard.checks.snmp import oids
from hisguard.checks.snmp.client import Session
from hisguard.checks.snmp.config import Config, Device
from hisguard.checks.snmp.interfaces import number, text

SENTINELS = {65535, 65534, -1, 2147483647, 4294967295, -2147483648}
DEFAULTS = {"cpu": 90.0, "memory": 90.0, "temperature": 65.0}
ASPECTS = ("cpu", "memory", "temperature", "hardware")
REVISIT = 20  # rounds between full looks for tables a device did not have (after a firmware upgrade, say)
STANDARD = [
    oids.SENSOR_TYPE, oids.SENSOR_SCALE, oids.SENSOR_PRECISION, oids.SENSOR_VALUE, oids.SENSOR_OPER,
    oids.STATE_ADMIN, oids.STATE_OPER, oids.HR_PROCESSOR_LOAD,
    oids.HR_STORAGE_TYPE, oids.HR_STORAGE_DESCR, oids.HR_STORAGE_UNITS, oids.HR_STORAGE_SIZE, oids.HR_STORAGE_USED,
]  # fmt: skip
VENDOR = {
    "huawei": [oids.HUAWEI_OPER, oids.HUAWEI_CPU, oids.HUAWEI_CPU_THRESHOLD, oids.HUAWEI_MEM,
               oids.HUAWEI_MEM_THRESHOLD, oids.HUAWEI_TEMP, oids.HUAWEI_TEMP_THRESHOLD,
               oids.HUAWEI_FAN_STATE, oids.HUAWEI_POWER_STATE],
    "h3c": [*oids.H3C_COLUMNS, *oids.H3C_OLD.values()],
    "cisco": [oids.CISCO_CPU_5MIN, oids.CISCO_MEM_USED, oids.CISCO_MEM_FREE, oids.CISCO_TEMP_DESCR,
              oids.CISCO_TEMP_VALUE, oids.CISCO_TEMP_THRESHOLD, oids.CISCO_TEMP_STATE, oids.CISCO_FAN_DESCR,
              oids.CISCO_FAN_STATE, oids.CISCO_SUPPLY_DESCR, oids.CISCO_SUPPLY_STATE, oids.CISCO_POOL_NAME,
              oids.CISCO_POOL_USED, oids.CISCO_POOL_FREE],
}  # fmt: skip
MIB = {"huawei": "HUAWEI-ENTITY-EXTENT-MIB", "h3c": "HH3C-ENTITY-EXT-MIB", "cisco": "CISCO-PROCESS/ENVMON-MIB"}


@dataclass
class Reading:
    value: float
    where: str  # the part it belongs to ("entity 67108873", "inlet")
    limit: float | None = None  # the device's own threshold for it
    alarm: str | None = None  # the device's own verdict on it when not normal ("warning"), whatever the value


@dataclass
class Health:
    readings: dict[str, list[Reading]] = field(default_factory=lambda: {a: [] for a in ASPECTS[:3]})
    faults: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # aspect → where it was read

    def add(self, aspect: str, source: str, reading: Reading) -> None:
        self.readings[aspect].append(reading)
        self.sources.setdefault(aspect, source)


def _value(raw: Any) -> int | None:
    v = number(raw)
    return None if v is None or v in SENTINELS else v


def _own(raw: Any, below: float = 1000) -> float | None:
    """A threshold the device states; 0, placeholders and limits that cannot be crossed (100 % for a
    percentage: H3C ships CPU and memory thresholds of 100) are not thresholds."""
    v = _value(raw)
    return float(v) if v and 0 < v < below else None


def _standard(h: Health, t: dict[str, dict[str, Any]]) -> None:
    for idx, kind in t[oids.SENSOR_TYPE].items():
        oper = number(t[oids.SENSOR_OPER].get(idx, oids.SENSOR_OK))
        if number(kind) != oids.SENSOR_CELSIUS:
            continue
        h.sources.setdefault("hardware", "ENTITY-SENSOR-MIB")
        if oper == oids.SENSOR_NONOPERATIONAL:
            h.faults.append(f"sensor {idx}: nonoperational")
        raw = _value(t[oids.SENSOR_VALUE].get(idx))
        if oper != oids.SENSOR_OK or raw is None:
            continue  # unavailable: not a reading
        scale = number(t[oids.SENSOR_SCALE].get(idx, 9)) or 9
        precision = number(t[oids.SENSOR_PRECISION].get(idx, 0)) or 0
        celsius = raw * 10.0 ** ((scale - 9) * 3) / 10.0**precision
        if -40 <= celsius <= 200:
            h.add("temperature", "ENTITY-SENSOR-MIB", Reading(round(celsius, 1), f"sensor {idx}"))
    for idx, oper in t[oids.STATE_OPER].items():
        h.sources.setdefault("hardware", "ENTITY-STATE-MIB")
        if number(oper) == oids.STATE_DISABLED and number(t[oids.STATE_ADMIN].get(idx)) != oids.STATE_LOCKED:
            h.faults.append(f"entity {idx}: disabled")
    loads = [v for raw in t[oids.HR_PROCESSOR_LOAD].values() if (v := _value(raw)) is not None]
    if loads:
        h.add("cpu", "HOST-RESOURCES-MIB", Reading(sum(loads) / len(loads), f"{len(loads)} processors"))
    cache = sum(
        _value(t[oids.HR_STORAGE_USED].get(idx)) or 0
        for idx, d in t[oids.HR_STORAGE_DESCR].items()
        if text(d).lower() in oids.HR_CACHE_DESCRS
    )
    for idx, kind in t[oids.HR_STORAGE_TYPE].items():
        size, used = _value(t[oids.HR_STORAGE_SIZE].get(idx)), _value(t[oids.HR_STORAGE_USED].get(idx))
        if str(kind) == oids.HR_STORAGE_RAM and size and used is not None:
            pct = round(100.0 * max(0, used - cache) / size, 1)  # Linux "used" includes buffers and page cache
            h.add("memory", "HOST-RESOURCES-MIB", Reading(pct, "physical memory"))


def _entity_readings(
    h: Health, t: dict[str, dict[str, Any]], mib: str, columns: tuple[str, ...], zero: set[str]
) -> None:
    """CPU, memory and temperature per entity with the entity's own threshold (cpu, thr, mem, thr, temp, thr);
    0 is "no sensor" for the aspects in `zero`, and for any aspect where the entity states no threshold
    either (H3C answers 0/0 for the CPU of a fan or a slot)."""
    for aspect, col, thr in zip(ASPECTS[:3], columns[::2], columns[1::2], strict=True):
        for idx, raw in t[col].items():
            v = _value(raw)
            limit = _own(t[thr].get(idx), 1000 if aspect == "temperature" else 100)
            if v is None or (v == 0 and (aspect in zero or not _value(t[thr].get(idx)))):
                continue
            h.add(aspect, mib, Reading(float(v), f"entity {idx}", limit))


def _huawei(h: Health, t: dict[str, dict[str, Any]]) -> None:
    mib = MIB["huawei"]
    # 0: this entity has no such sensor (every board but the main one, on most models)
    _entity_readings(h, t, mib, tuple(VENDOR["huawei"][1:7]), {"cpu", "memory", "temperature"})
    for idx, raw in t[oids.HUAWEI_OPER].items():
        h.sources.setdefault("hardware", mib)
        if (state := number(raw)) in oids.HUAWEI_OPER_FAULT:
            h.faults.append(f"entity {idx}: {oids.HUAWEI_OPER_FAULT[state]}")
    for idx, raw in t[oids.HUAWEI_FAN_STATE].items():
        h.sources.setdefault("hardware", mib)
        if number(raw) == 2:
            h.faults.append(f"fan {idx}: abnormal")
    for idx, raw in t[oids.HUAWEI_POWER_STATE].items():
        h.sources.setdefault("hardware", mib)
        if number(raw) == 2:
            h.faults.append(f"power supply {idx}: not supplying")


def _h3c(h: Health, t: dict[str, dict[str, Any]]) -> None:
    mib = MIB["h3c"]
    if not any(t[c] for c in oids.H3C_COLUMNS):  # the device answers on the older arc only
        mib = "H3C-ENTITY-EXT-MIB (compatible)"
        t = {**t, **{c: t[old] for c, old in oids.H3C_OLD.items()}}
    _entity_readings(h, t, mib, oids.H3C_COLUMNS[1:7], {"temperature"})
    for idx, raw in t[oids.H3C_ERROR].items():
        h.sources.setdefault("hardware", mib)
        if (err := number(raw)) not in oids.H3C_ERROR_OK and err is not None:
            h.faults.append(f"entity {idx}: {oids.H3C_ERROR_NAMES.get(err, f'errorStatus {err}')}")
    for idx, raw in t[oids.H3C_OPER].items():
        if number(raw) == 4:
            h.faults.append(f"entity {idx}: dangerous")


def _cisco(h: Health, t: dict[str, dict[str, Any]]) -> None:
    loads = [float(v) for raw in t[oids.CISCO_CPU_5MIN].values() if (v := _value(raw)) is not None]
    if loads:
        h.add("cpu", "CISCO-PROCESS-MIB", Reading(max(loads), "cpm"))
    used = sum(v for raw in t[oids.CISCO_MEM_USED].values() if (v := _value(raw)) is not None)
    free = sum(v for raw in t[oids.CISCO_MEM_FREE].values() if (v := _value(raw)) is not None)
    if used + free:
        h.add("memory", "CISCO-PROCESS-MIB", Reading(round(100.0 * used / (used + free), 1), "cpm"))
    else:  # IOS 12.x: per memory pool (Processor, I/O, ...)
        for idx, raw in t[oids.CISCO_POOL_USED].items():
            used, free = _value(raw), _value(t[oids.CISCO_POOL_FREE].get(idx))
            if used is not None and free is not None and used + free:
                where = text(t[oids.CISCO_POOL_NAME].get(idx, "")) or f"pool {idx}"
                h.add("memory", "CISCO-MEMORY-POOL-MIB", Reading(round(100.0 * used / (used + free), 1), where))
    for idx, raw in t[oids.CISCO_TEMP_VALUE].items():
        state, v = number(t[oids.CISCO_TEMP_STATE].get(idx, 1)), _value(raw)
        if state == 5 or v is None:  # notPresent
            continue
        where = text(t[oids.CISCO_TEMP_DESCR].get(idx, "")) or f"sensor {idx}"
        alarm = None if state in oids.CISCO_STATE_OK else oids.CISCO_STATE_NAMES.get(state or 0, f"state {state}")
        limit = _own(t[oids.CISCO_TEMP_THRESHOLD].get(idx))
        h.add("temperature", "CISCO-ENVMON-MIB", Reading(float(v), where, limit, alarm))
    for what, col, descr in (
        ("fan", oids.CISCO_FAN_STATE, oids.CISCO_FAN_DESCR),
        ("power supply", oids.CISCO_SUPPLY_STATE, oids.CISCO_SUPPLY_DESCR),
    ):
        for idx, raw in t[col].items():
            h.sources.setdefault("hardware", "CISCO-ENVMON-MIB")
            if (state := number(raw)) not in oids.CISCO_STATE_OK:
                name = text(t[descr].get(idx, "")) or f"{what} {idx}"
                h.faults.append(f"{name}: {oids.CISCO_STATE_NAMES.get(state or 0, state)}")


async def read(sess: Session, vendor: str, max_rows: int, mem: dict[str, Any]) -> Health:
    """Walk the health tables; after a full look, only those the device has (all again every REVISIT rounds)."""
    wanted = STANDARD + VENDOR.get(vendor, [])
    rounds = mem["health_rounds"] = mem.get("health_rounds", 0) + 1
    known: set[str] | None = mem.get("health_columns")
    full = known is None or rounds % REVISIT == 1
    cols = wanted if full else [c for c in wanted if c in (known or set())]
    got = await sess.columns(cols, 10, max_rows) if cols else {}
    if full:
        mem["health_columns"] = {c for c in cols if got.get(c)}
    t = {c: got.get(c, {}) for c in wanted}
    h = Health()
    _standard(h, t)
    if vendor in VENDOR:
        {"huawei": _huawei, "h3c": _h3c, "cisco": _cisco}[vendor](h, t)
    return h


async def observe(
    dev: Device, cfg: Config, sess: Session, vendor: str, mem: dict[str, Any], ob: Any
) -> list[Observation]:
    h = await read(sess, vendor, cfg.max_rows, mem)
    mem["coverage_health"] = {a: h.sources.get(a) for a in ASPECTS}
    configured = {"cpu": dev.cpu_max, "memory": dev.memory_max, "temperature": dev.temperature_max}
    check = {"cpu": "snmp.cpu", "memory": "snmp.memory", "temperature": "snmp.temperature"}
    obs = []
    for aspect, readings in h.readings.items():
        if not readings:
            continue

        def limit(r: Reading) -> float:
            return configured[aspect] or r.limit or DEFAULTS[aspect]  # noqa: B023

        def alarm(r: Reading) -> str | None:  # the device's own verdict counts unless the configuration decides
            return None if configured[aspect] else r.alarm  # noqa: B023

        def shown(r: Reading) -> dict[str, Any]:
            state = {"device_state": r.alarm} if r.alarm else {}
            return {"where": r.where, "value": r.value, "limit": limit(r), **state}

        worst = max(readings, key=lambda r: (alarm(r) is not None, r.value - limit(r)))
        over = [r for r in readings if r.value >= limit(r) or alarm(r)]
        obs.append(
            ob(
                check[aspect],
                dev.name,
                not over,
                worst.value,
                vendor=vendor,
                source=h.sources[aspect],
                where=worst.where,
                limit=limit(worst),
                limit_from="config" if configured[aspect] else ("device" if worst.limit else "default"),
                **({"device_state": worst.alarm} if alarm(worst) else {}),
                readings=[shown(r) for r in readings[:20]],
            )
        )
    if "hardware" in h.sources:
        obs.append(ob("snmp.hardware", dev.name, not h.faults, float(len(h.faults)), faults=h.faults[:20],
                      source=h.sources["hardware"]))  # fmt: skip
    return obs
