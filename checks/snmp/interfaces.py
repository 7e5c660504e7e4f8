"""Interfaces, by ifIndex: which watched ports are down, redundant uplinks, error bursts and flaps.

A port is identified by its ifIndex and shown by ifName (else ifDescr) and its ifAlias — the
description staff wrote, often Chinese (门诊楼-3), decoded from UTF-8 or GBK. Names that repeat
on one device (an OLT's 744 ports under 8 names) get `#ifIndex` appended so no fault hides another.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

from hisguard.checks.base import Observation
from hisguard.checks.snmp import oids
from hisguard.checks.snmp.client import Session
from hisguard.checks.snmp.config import Config, Device

NAMES_EVERY = 20  # re-read interface names every N rounds (they rarely change)
LAG_NAMES = re.compile(r"^(eth-trunk|port-channel|bridge-aggregation|route-aggregation|aggregateport|link-aggregation|"
                       r"trunk|bond|ae)\s*\d", re.IGNORECASE)  # fmt: skip


class ConfigProblem(Exception):
    """The job's settings do not fit this device (e.g. an uplink name that is not one port)."""


def text(value: Any) -> str:
    """An OCTET STRING as text: UTF-8, else GBK (GB 18030), Chinese intact; control characters dropped."""
    try:
        raw = bytes(value)
    except Exception:
        return str(value)
    raw = raw.rstrip(b"\x00")
    for codec in ("utf-8", "gb18030"):
        try:
            decoded = raw.decode(codec)
            break
        except UnicodeDecodeError:
            continue
    else:
        decoded = raw.decode("latin-1")
    return "".join(c for c in decoded if unicodedata.category(c) != "Cc").strip()


def number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Port:
    index: str
    name: str  # ifName, else ifDescr, else if<index>
    descr: str
    alias: str
    type: int | None
    label: str  # the name, with #ifIndex when the name repeats on this device

    def shown(self, device: str) -> str:
        return f"{device} {self.label}" + (f"（{self.alias}）" if self.alias else "")

    def brief(self) -> dict[str, Any]:
        return {"port": self.label, "if_index": int(self.index), **({"alias": self.alias} if self.alias else {})}


async def read_ports(sess: Session, mem: dict[str, Any], oper: dict[str, Any], max_rows: int) -> dict[str, Port]:
    rounds = mem["rounds"] = mem.get("rounds", 0) + 1
    ports: dict[str, Port] = mem.get("ports", {})
    if ports and set(oper) == set(ports) and rounds % NAMES_EVERY:
        return ports
    cols = await sess.columns([oids.IF_NAME, oids.IF_DESCR, oids.IF_ALIAS, oids.IF_TYPE], 20, max_rows)
    names = {i: text(cols[oids.IF_NAME].get(i, "")) or text(cols[oids.IF_DESCR].get(i, "")) or f"if{i}" for i in oper}
    seen: dict[str, int] = {}
    for n in names.values():
        seen[n.lower()] = seen.get(n.lower(), 0) + 1
    ports = {
        i: Port(
            index=i,
            name=names[i],
            descr=text(cols[oids.IF_DESCR].get(i, "")),
            alias=text(cols[oids.IF_ALIAS].get(i, "")),
            type=number(cols[oids.IF_TYPE].get(i)),
            label=names[i] if seen[names[i].lower()] == 1 else f"{names[i]}#{i}",
        )
        for i in oper
    }
    mem["ports"] = ports
    mem.pop("stack", None)
    return ports


def resolve(dev: Device, ports: dict[str, Port], want: str) -> str:
    """The ifIndex a configured port means: '#12' or a number is an ifIndex; a name must name one port."""
    key = want.strip()
    if key.startswith("#") and key[1:] in ports:
        return key[1:]
    if key in ports and not any(p.name == key for p in ports.values()):
        return key
    low = key.lower()
    for field in ("label", "name", "descr", "alias"):
        hits = [i for i, p in ports.items() if getattr(p, field).lower() == low and getattr(p, field)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            shown = ", ".join(f"#{i} {ports[i].name}" + (f" ({ports[i].alias})" if ports[i].alias else "")
                              for i in hits[:8])  # fmt: skip
            raise ConfigProblem(
                f"uplink {want!r} is ambiguous: {len(hits)} ports of {dev.name} match ({shown}); "
                "give it by ifIndex, e.g. '#" + hits[0] + "'"
            )
    sample = ", ".join(p.label for p in list(ports.values())[:4])
    raise ConfigProblem(f"uplink {want!r} is not a port of this device ({len(ports)} ports, e.g. {sample})")


async def lag_members(
    sess: Session, mem: dict[str, Any], ports: dict[str, Port], max_rows: int
) -> dict[str, list[str]]:
    """Members of each link aggregation (IF-MIB ifStackTable), read when an uplink is one."""
    if "stack" not in mem:
        col = (await sess.columns([oids.IF_STACK_STATUS], 50, max_rows))[oids.IF_STACK_STATUS]
        stack: dict[str, list[str]] = {}
        for key in col:
            higher, _, lower = key.partition(".")
            if higher in ports and lower in ports:
                stack.setdefault(higher, []).append(lower)
        mem["stack"] = stack
    return mem["stack"]


def is_lag(port: Port) -> bool:
    return port.type == oids.IF_TYPE_LAG or bool(LAG_NAMES.match(port.name))


async def observe(dev: Device, cfg: Config, sess: Session, mem: dict[str, Any], ob: Any) -> list[Observation]:
    oper = (await sess.columns([oids.IF_OPER], 64, cfg.max_rows))[oids.IF_OPER]
    if not oper:
        mem["coverage_interfaces"] = None
        return []
    mem["coverage_interfaces"] = "IF-MIB"
    ports = await read_ports(sess, mem, oper, cfg.max_rows)
    uplinks = list(dict.fromkeys(resolve(dev, ports, u) for u in dev.uplinks))
    groups = [list(dict.fromkeys(resolve(dev, ports, m) for m in g)) for g in dev.uplink_groups]
    if any(is_lag(ports[u]) for u in uplinks):
        stack = await lag_members(sess, mem, ports, cfg.max_rows)
        groups += [stack[u] for u in uplinks if is_lag(ports[u]) and len(stack.get(u, [])) >= 2]
    grouped = {m for g in groups for m in g}
    down = [i for i, v in oper.items() if number(v) not in (oids.IF_UP, oids.IF_DORMANT)]  # dormant: waiting
    loopbacks = {i for i, p in ports.items() if p.type == oids.IF_TYPE_LOOPBACK}
    watched = (set(oper) - loopbacks) if dev.watch == "all" else set(uplinks) | grouped
    mem["watched"], mem["grouped"] = watched, grouped
    extra: dict[str, dict[str, Any]] = {}
    asks = [f"{c}.{i}" for i in down for c in (oids.IF_ADMIN, oids.IF_LAST_CHANGE)]
    asks += [f"{c}.{i}" for i in uplinks for c in (oids.IF_IN_ERRORS, oids.IF_OUT_ERRORS, oids.IF_LAST_CHANGE)]
    asks = list(dict.fromkeys(asks))
    for chunk in range(0, len(asks), 40):
        for oid, value in (await sess.get(asks[chunk : chunk + 40])).items():
            col, _, idx = oid.rpartition(".")
            extra.setdefault(idx, {})[col] = value

    def faulty(idx: str) -> bool:
        return idx in down and number(extra.get(idx, {}).get(oids.IF_ADMIN, 1)) != 2  # admin-down: switched off

    obs: list[Observation] = []
    edge_down = []
    for idx in sorted(oper, key=int):
        port = ports[idx]
        if idx not in watched:
            if faulty(idx):
                edge_down.append(port.label)
            continue
        detail: dict[str, Any] = {
            **port.brief(),
            "oper": number(oper[idx]),
            "admin": number(extra.get(idx, {}).get(oids.IF_ADMIN, 1)),
            "uplink": idx in uplinks,
            "name": port.shown(dev.name),
        }
        if (lc := extra.get(idx, {}).get(oids.IF_LAST_CHANGE)) is not None:
            detail["last_change_ticks"] = int(lc)
        # A member of a redundant group is judged with its group (one member down is not the outage).
        ok = None if idx in grouped and idx not in uplinks else not faulty(idx)
        obs.append(ob("snmp.interface", f"{dev.name}/{port.label}", ok, float(number(oper[idx]) or 0), **detail))
    for members in groups:
        obs += _group(dev, ports, members, [m for m in members if faulty(m)], ob)
    if dev.watch == "uplinks":
        obs.append(ob("snmp.edge_ports", dev.name, None, float(len(edge_down)), down=edge_down[:50]))
    obs += _errors(dev, cfg, mem, uplinks, ports, extra, ob)
    obs += _flaps(dev, cfg, mem, uplinks, ports, extra, ob)
    return obs


def _group(dev: Device, ports: dict[str, Port], members: list[str], failed: list[str], ob: Any) -> list[Observation]:
    label = "+".join(ports[m].label for m in members)
    detail = {
        "members": [ports[m].brief() for m in members],
        "down": [ports[m].brief() for m in failed],
        "name": f"{dev.name} {label}",
    }
    n, bad = len(members), len(failed)
    subject = f"{dev.name}/{label}"
    return [
        ob("snmp.uplink_redundancy", subject, not 0 < bad < n, float(bad), **detail),
        ob("snmp.uplink_group", subject, bad < n, float(bad), **detail),
    ]


def _errors(
    dev: Device,
    cfg: Config,
    mem: dict[str, Any],
    uplinks: list[str],
    ports: dict[str, Port],
    extra: dict[str, dict[str, Any]],
    ob: Any,
) -> list[Observation]:
    prev: dict[str, int] = mem.get("errors", {})
    now: dict[str, int] = {}
    obs = []
    for idx in uplinks:
        got = extra.get(idx, {})
        if oids.IF_IN_ERRORS not in got:
            continue
        total = int(got[oids.IF_IN_ERRORS]) + int(got.get(oids.IF_OUT_ERRORS, 0))
        now[idx] = total
        if idx in prev:
            delta = (total - prev[idx]) % 2**32  # Counter32 wraps
            port = ports[idx]
            obs.append(
                ob(
                    "snmp.if_errors",
                    f"{dev.name}/{port.label}",
                    delta < cfg.if_errors_max,
                    float(delta),
                    **port.brief(),
                    name=port.shown(dev.name),
                )
            )
    mem["errors"] = now
    return obs


def _flaps(
    dev: Device,
    cfg: Config,
    mem: dict[str, Any],
    uplinks: list[str],
    ports: dict[str, Port],
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
        lc = number(extra.get(idx, {}).get(oids.IF_LAST_CHANGE))
        if lc is None:
            continue
        current[idx] = lc
        if idx in prev and lc > prev[idx]:  # smaller: the device restarted, not a flap
            flaps[idx] = [*flaps.get(idx, []), now][-20:]
        recent = [t for t in flaps.get(idx, []) if t >= now - cfg.flap_window]
        port = ports[idx]
        obs.append(
            ob("snmp.if_flap", f"{dev.name}/{port.label}", len(recent) < cfg.flap_count, float(len(recent)),
               **port.brief(), name=port.shown(dev.name), flaps_in_window=len(recent), window_s=cfg.flap_window)
        )  # fmt: skip
    mem["last_change"] = current
    return obs
