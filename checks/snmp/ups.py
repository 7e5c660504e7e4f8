"""UPS units: on battery and runtime, bypass, output off, alarms and battery faults, per MIB the card speaks.

UPS-MIB (RFC 1628) first; APC PowerNet, Eaton XUPS and PPC (Megatec NetAgent, used by many Chinese
brands) where the card has them. A card that lacks an object (an Eaton card without xupsOutputSource)
is read for what it has; what it lacks is reported as not provided. Where no MIB says where the
output comes from, mains loss is read from the input voltage falling while the output holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hisguard.checks.base import Observation
from hisguard.checks.snmp import oids
from hisguard.checks.snmp.client import Session
from hisguard.checks.snmp.config import Config, Device
from hisguard.checks.snmp.interfaces import number

SCALARS = [
    oids.UPS_OUTPUT_SOURCE, oids.UPS_BATTERY_STATUS, oids.UPS_MINUTES_REMAINING, oids.UPS_CHARGE_REMAINING,
    oids.UPS_ALARMS_PRESENT, oids.UPS_INPUT_VOLTAGE_1, oids.UPS_OUTPUT_VOLTAGE_1,
    oids.APC_OUTPUT_STATUS, oids.APC_BATTERY_STATUS, oids.APC_RUNTIME, oids.APC_CAPACITY, oids.APC_REPLACE,
    oids.APC_INPUT_VOLTAGE, oids.APC_OUTPUT_VOLTAGE,
    oids.XUPS_OUTPUT_SOURCE, oids.XUPS_TIME_REMAINING, oids.XUPS_CAPACITY, oids.XUPS_ALARMS,
    oids.XUPS_INPUT_VOLTAGE_1, oids.XUPS_OUTPUT_VOLTAGE_1,
    oids.PPC_OUTPUT_STATUS, oids.PPC_BATTERY_STATUS, oids.PPC_RUNTIME, oids.PPC_CAPACITY, oids.PPC_REPLACE,
    oids.PPC_INPUT_VOLTAGE, oids.PPC_OUTPUT_VOLTAGE,
]  # fmt: skip
# UPS-MIB well-known alarms covered by their own conditions (or not a fault at all).
ALARMS_ELSEWHERE = {2, 3, 4, 9, 11, 12, 14, 15, 24}
MAINS_LOST_V = 50.0  # input below this while the output holds: running from the battery
MAX_V = 1000.0  # no UPS here runs above this: a larger "volts" value is in tenths (Huawei's GSE200M: 2369)
FULL_CHARGE = 50  # percent; with this much charge (or a "normal" battery) a runtime of 0 is not a reading


@dataclass
class UpsState:
    """What the card says, whatever its MIB; None where it does not say."""

    mibs: list[str] = field(default_factory=list)
    on_battery: bool | None = None
    on_battery_from: str | None = None
    low: bool = False
    depleted: bool = False
    minutes: float | None = None
    charge: float | None = None
    bypass: str | None = None
    bypass_known: bool = False
    output_off: str | None = None
    alarms: list[str] = field(default_factory=list)
    alarms_known: bool = False
    battery_fault: list[str] = field(default_factory=list)
    battery_fault_known: bool = False
    input_v: float | None = None
    output_v: float | None = None


def _read(s: dict[str, Any], alarm_rows: dict[str, Any]) -> UpsState:
    def num(oid: str) -> int | None:
        v = number(s.get(oid)) if oid in s else None
        return None if v in (None, -1, 65535, 2147483647) else v

    u = UpsState()
    runtimes: list[float] = []  # minutes remaining, per MIB in the order read
    normal: list[bool] = []  # each MIB's battery status: normal or not

    def volts(inp: str, out: str, unit: float) -> None:
        """Input and output voltage from this MIB, where no earlier MIB gave them."""
        for oid, attr in ((inp, "input_v"), (out, "output_v")):
            if getattr(u, attr) is None and (v := num(oid)) is not None:
                setattr(u, attr, round(v * unit / (10 if v * unit > MAX_V else 1), 1))

    # UPS-MIB (RFC 1628)
    if any(o.startswith("1.3.6.1.2.1.33.") for o in s):
        u.mibs.append("UPS-MIB")
    if (src := num(oids.UPS_OUTPUT_SOURCE)) is not None:
        u.on_battery, u.on_battery_from = src == oids.UPS_SOURCE_BATTERY, "upsOutputSource"
        u.bypass_known = True
        u.bypass = "bypass" if src == oids.UPS_SOURCE_BYPASS else None
        u.output_off = "none" if src == oids.UPS_SOURCE_NONE else None
    if (st := num(oids.UPS_BATTERY_STATUS)) is not None:
        u.low, u.depleted = st == 3, st == 4
        normal.append(st == 2)
    if (m := num(oids.UPS_MINUTES_REMAINING)) is not None:
        runtimes.append(m)
    u.charge = num(oids.UPS_CHARGE_REMAINING)
    if (present := num(oids.UPS_ALARMS_PRESENT)) is not None:
        u.alarms_known = True
        for value in alarm_rows.values():
            descr = str(value)
            n = number(descr.rsplit(".", 1)[-1]) if descr.startswith(oids.UPS_WELL_KNOWN_ALARM) else None
            if n in (9,):
                u.bypass, u.bypass_known = "onBypass", True
            elif n in (14, 15):
                u.output_off = oids.UPS_ALARM_NAMES[n]
            elif n == 1:
                u.battery_fault.append("batteryBad")
            elif n not in ALARMS_ELSEWHERE:
                u.alarms.append(oids.UPS_ALARM_NAMES.get(n or 0, descr))
        if present and not alarm_rows:
            u.alarms.append(f"{present} alarm(s) present")
        u.battery_fault_known = True
    volts(oids.UPS_INPUT_VOLTAGE_1, oids.UPS_OUTPUT_VOLTAGE_1, 1.0)
    # APC PowerNet
    if any(o.startswith("1.3.6.1.4.1.318.") for o in s):
        u.mibs.append("APC PowerNet")
    if (st := num(oids.APC_OUTPUT_STATUS)) is not None:
        if u.on_battery is None:
            u.on_battery, u.on_battery_from = st == oids.APC_ON_BATTERY, "upsBasicOutputStatus"
        u.bypass_known = True
        u.bypass = u.bypass or oids.APC_BYPASS.get(st)
        u.output_off = u.output_off or oids.APC_OFF.get(st)
    if (st := num(oids.APC_BATTERY_STATUS)) is not None:
        u.low = u.low or st == 3
        normal.append(st == 2)
        u.battery_fault_known = True
        if st in (4, 5):
            u.battery_fault.append({4: "battery in fault", 5: "no battery"}[st])
    if (rep := num(oids.APC_REPLACE)) is not None:
        u.battery_fault_known = True
        if rep == 2:
            u.battery_fault.append("battery needs replacing")
    if (ticks := num(oids.APC_RUNTIME)) is not None:
        runtimes.append(ticks / 6000)
    u.charge = u.charge if u.charge is not None else num(oids.APC_CAPACITY)
    volts(oids.APC_INPUT_VOLTAGE, oids.APC_OUTPUT_VOLTAGE, 1.0)
    # Eaton XUPS
    if any(o.startswith("1.3.6.1.4.1.534.") for o in s):
        u.mibs.append("Eaton XUPS")
    if (src := num(oids.XUPS_OUTPUT_SOURCE)) is not None:
        if u.on_battery is None:
            u.on_battery, u.on_battery_from = src == oids.UPS_SOURCE_BATTERY, "xupsOutputSource"
        u.bypass_known = True
        u.bypass = u.bypass or oids.XUPS_BYPASS.get(src)
        u.output_off = u.output_off or ("none" if src == oids.UPS_SOURCE_NONE else None)
    if (secs := num(oids.XUPS_TIME_REMAINING)) is not None:
        runtimes.append(secs / 60)
    u.charge = u.charge if u.charge is not None else num(oids.XUPS_CAPACITY)
    if (n := num(oids.XUPS_ALARMS)) is not None:
        u.alarms_known = True
        if n and not u.alarms:
            u.alarms.append(f"{n} alarm(s) active (xupsAlarms)")
    volts(oids.XUPS_INPUT_VOLTAGE_1, oids.XUPS_OUTPUT_VOLTAGE_1, 1.0)
    # PPC (Megatec NetAgent)
    if any(o.startswith("1.3.6.1.4.1.935.") for o in s):
        u.mibs.append("PPC (Megatec)")
    if (st := num(oids.PPC_OUTPUT_STATUS)) is not None:
        if u.on_battery is None:
            u.on_battery, u.on_battery_from = st == 3, "upsBaseOutputStatus"
        u.bypass_known = True
        u.bypass = u.bypass or ("onBypass" if st == 6 else None)
        u.output_off = u.output_off or ("sleeping" if st == 5 else None)  # standBy (8) is a healthy state
    if (st := num(oids.PPC_BATTERY_STATUS)) is not None:
        u.low = u.low or st == 3
        normal.append(st == 2)
    if (rep := num(oids.PPC_REPLACE)) in (1, 2):  # 0 and other values: not supported by the card
        u.battery_fault_known = True
        if rep == 2:
            u.battery_fault.append("battery needs replacing")
    if (secs := num(oids.PPC_RUNTIME)) is not None:
        runtimes.append(secs / 60)
    u.charge = u.charge if u.charge is not None else num(oids.PPC_CAPACITY)
    volts(oids.PPC_INPUT_VOLTAGE, oids.PPC_OUTPUT_VOLTAGE, 0.1)  # tenths of a volt
    # 0 minutes from a card whose battery is normal (UPS-MIB: "low" means runtime at or under its low
    # limit) or nearly full is a card that does not estimate runtime (two real cards here do): no reading.
    zero_is_placeholder = (any(normal) and not (u.low or u.depleted)) or (u.charge or 0) >= FULL_CHARGE
    u.minutes = next((m for m in runtimes if m > 0 or not zero_is_placeholder), None)
    if u.on_battery is None and u.input_v is not None and u.output_v is not None:
        u.on_battery = u.input_v < MAINS_LOST_V <= u.output_v
        u.on_battery_from = "input voltage"
    return u


async def observe(
    dev: Device, cfg: Config, sess: Session, scalars: dict[str, Any], mem: dict[str, Any], ob: Any
) -> list[Observation]:
    alarm_rows: dict[str, Any] = {}
    if number(scalars.get(oids.UPS_ALARMS_PRESENT)):
        alarm_rows = (await sess.columns([oids.UPS_ALARM_DESCR], 20, cfg.max_rows))[oids.UPS_ALARM_DESCR]
    u = _read(scalars, alarm_rows)
    if not u.mibs:
        raise LookupError("not a UPS this probe reads (no UPS-MIB, APC PowerNet, Eaton XUPS or PPC objects)")
    mem["coverage_ups"] = {
        "on_battery": u.on_battery_from,
        "runtime": "minutes remaining" if u.minutes is not None else None,
        "charge": "charge remaining" if u.charge is not None else None,
        "bypass": "output source" if u.bypass_known else None,
        "alarms": "alarm table" if u.alarms_known else None,
        "battery": "battery status" if u.battery_fault_known else None,
    }
    mins = round(u.minutes, 1) if u.minutes is not None else None
    detail = {
        "mib": " + ".join(u.mibs),
        "on_battery": u.on_battery,
        "on_battery_from": u.on_battery_from,
        "minutes_remaining": mins,
        "charge_percent": u.charge,
        "input_volts": u.input_v,
        "output_volts": u.output_v,
    }
    on_battery = bool(u.on_battery)
    draining = on_battery or u.low or u.depleted
    runtime_low = draining and (u.low or (mins is not None and mins < cfg.ups_runtime_warn))
    dropping = u.depleted or (draining and mins is not None and mins < cfg.ups_runtime_critical)
    obs = [
        ob("snmp.ups.runtime_low", dev.name, not runtime_low, mins, **detail),
        ob("snmp.ups.depleting", dev.name, not dropping, mins, **detail),
    ]
    if u.on_battery is not None:
        obs.append(ob("snmp.ups.on_battery", dev.name, not on_battery, mins, **detail))
    if u.bypass_known:
        obs.append(ob("snmp.ups.bypass", dev.name, u.bypass is None, None, **detail, bypass=u.bypass))
    if u.bypass_known or u.output_off:
        obs.append(ob("snmp.ups.output_off", dev.name, u.output_off is None, None, **detail, output=u.output_off))
    if u.alarms_known:
        obs.append(ob("snmp.ups.alarm", dev.name, not u.alarms, float(len(u.alarms)), **detail, alarms=u.alarms))
    if u.battery_fault_known:
        obs.append(ob("snmp.ups.battery_fault", dev.name, not u.battery_fault, None, **detail,
                      battery=u.battery_fault))  # fmt: skip
    return obs
