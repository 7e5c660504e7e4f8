"""Generated .snmprec recordings: access/core switches (Huawei, H3C, Cisco) and UPS units.

A line is `OID|type|value` (2 INTEGER, 4 STRING, 6 OID, 65 Counter32, 66 Gauge32, 67 TimeTicks);
snmpsim needs the lines sorted by OID, numerically.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Record = tuple[str, int, object]

SYS_OBJECT_IDS = {
    "huawei": "1.3.6.1.4.1.2011.2.23.96",
    "h3c": "1.3.6.1.4.1.25506.1.1",
    "cisco": "1.3.6.1.4.1.9.1.1208",
}


def render(records: Iterable[Record]) -> str:
    rows = sorted(records, key=lambda r: tuple(int(x) for x in r[0].split(".")))
    return "".join(f"{oid}|{tag}|{value}\n" for oid, tag, value in rows)


def port_name(vendor: str, n: int) -> str:
    if vendor == "cisco":
        return f"GigabitEthernet1/0/{n}"
    if vendor == "h3c":
        return f"GigabitEthernet1/0/{n}"
    return f"GigabitEthernet0/0/{n}"


@dataclass
class Switch:
    """A switch's state; `render()` is its recording. Change fields and render again to make it fail."""

    name: str
    vendor: str = "huawei"
    ports: int = 48
    uptime_ticks: int = 8_640_000  # one day
    oper_down: set[int] = field(default_factory=set)
    admin_down: set[int] = field(default_factory=set)
    cpu: int = 12
    mem: int = 35
    temp: int = 41
    in_errors: dict[int, int] = field(default_factory=dict)
    fan_state: int = 1  # Cisco: normal1 … critical3
    last_change: dict[int, int] = field(default_factory=dict)  # ifLastChange ticks per port

    def records(self) -> list[Record]:
        s = "1.3.6.1.2.1.1"
        recs: list[Record] = [
            (f"{s}.1.0", 4, f"{self.vendor} switch {self.name}, {self.ports} ports"),
            (f"{s}.2.0", 6, SYS_OBJECT_IDS[self.vendor]),
            (f"{s}.3.0", 67, self.uptime_ticks),
            (f"{s}.4.0", 4, "netops@hospital.example"),
            (f"{s}.5.0", 4, self.name),
            (f"{s}.6.0", 4, "machine room"),
            ("1.3.6.1.2.1.2.1.0", 2, self.ports),
        ]
        for n in range(1, self.ports + 1):
            t = "1.3.6.1.2.1.2.2.1"
            admin = 2 if n in self.admin_down else 1
            oper = 2 if (n in self.oper_down or admin == 2) else 1
            recs += [
                (f"{t}.1.{n}", 2, n),
                (f"{t}.2.{n}", 4, port_name(self.vendor, n)),
                (f"{t}.3.{n}", 2, 6),
                (f"{t}.5.{n}", 66, 1_000_000_000),
                (f"{t}.7.{n}", 2, admin),
                (f"{t}.8.{n}", 2, oper),
                (f"{t}.9.{n}", 67, self.last_change.get(n, 1000 + n)),
                (f"{t}.14.{n}", 65, self.in_errors.get(n, 0)),
                (f"{t}.20.{n}", 65, 0),
                (f"1.3.6.1.2.1.31.1.1.1.1.{n}", 4, port_name(self.vendor, n)),
                (f"1.3.6.1.2.1.31.1.1.1.18.{n}", 4, f"port {n}"),
            ]
        recs += self._vendor()
        return recs

    def _vendor(self) -> list[Record]:
        # Entity 67108867 is the main board; 67108873 a board without a CPU (reads 0).
        if self.vendor == "huawei":
            b = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1"
            return [
                (f"{b}.5.67108867", 2, self.cpu),
                (f"{b}.5.67108873", 2, 0),
                (f"{b}.7.67108867", 2, self.mem),
                (f"{b}.7.67108873", 2, 0),
                (f"{b}.11.67108867", 2, self.temp),
                (f"{b}.11.67108873", 2, self.temp - 5),
            ]
        if self.vendor == "h3c":
            b = "1.3.6.1.4.1.25506.2.6.1.1.1.1"
            return [
                (f"{b}.6.30", 2, self.cpu),
                (f"{b}.8.30", 2, self.mem),
                (f"{b}.12.30", 2, self.temp),
                (f"{b}.19.30", 2, 2),
                (f"{b}.19.31", 2, 4),
            ]
        b = "1.3.6.1.4.1.9.9"
        return [
            (f"{b}.109.1.1.1.1.2.1", 2, 1000),
            (f"{b}.109.1.1.1.1.8.1", 66, self.cpu),
            (f"{b}.109.1.1.1.1.12.1", 66, self.mem * 10_000_000),
            (f"{b}.109.1.1.1.1.13.1", 66, (100 - self.mem) * 10_000_000),
            (f"{b}.13.1.3.1.2.1", 4, "inlet"),
            (f"{b}.13.1.3.1.3.1", 66, self.temp),
            (f"{b}.13.1.3.1.6.1", 2, 1),
            (f"{b}.13.1.4.1.2.1", 4, "fan 1"),
            (f"{b}.13.1.4.1.3.1", 2, self.fan_state),
            (f"{b}.13.1.5.1.2.1", 4, "PSU 1"),
            (f"{b}.13.1.5.1.3.1", 2, 1),
        ]

    def render(self) -> str:
        return render(self.records())


@dataclass
class Ups:
    """A UPS speaking UPS-MIB (RFC 1628) or APC PowerNet."""

    name: str
    mib: str = "ietf"  # or "apc"
    on_battery: bool = False
    battery_low: bool = False
    minutes: int = 45
    charge: int = 100

    def render(self) -> str:
        s = "1.3.6.1.2.1.1"
        enterprise = "1.3.6.1.4.1.318.1.3.27" if self.mib == "apc" else "1.3.6.1.4.1.705.1"
        recs: list[Record] = [
            (f"{s}.1.0", 4, f"UPS {self.name}"),
            (f"{s}.2.0", 6, enterprise),
            (f"{s}.3.0", 67, 50_000_000),
            (f"{s}.5.0", 4, self.name),
        ]
        if self.mib == "apc":
            a = "1.3.6.1.4.1.318.1.1.1"
            recs += [
                (f"{a}.2.1.1.0", 2, 3 if self.battery_low else 2),
                (f"{a}.2.2.1.0", 66, self.charge),
                (f"{a}.2.2.3.0", 67, self.minutes * 6000),
                (f"{a}.4.1.1.0", 2, 3 if self.on_battery else 2),
            ]
        else:
            u = "1.3.6.1.2.1.33.1"
            recs += [
                (f"{u}.2.1.0", 2, 3 if self.battery_low else 2),
                (f"{u}.2.2.0", 2, 120 if self.on_battery else 0),
                (f"{u}.2.3.0", 2, self.minutes),
                (f"{u}.2.4.0", 2, self.charge),
                (f"{u}.4.1.0", 2, 5 if self.on_battery else 3),
            ]
        return render(recs)


def rewrite(text: str, changes: dict[str, tuple[int, object]]) -> str:
    """A recording with some OIDs' values replaced (for real recordings such as snmpsim's Eaton UPS)."""
    out = []
    for line in text.splitlines():
        oid = line.split("|", 1)[0]
        if oid in changes:
            tag, value = changes[oid]
            line = f"{oid}|{tag}|{value}"
        out.append(line)
    return "\n".join(out) + "\n"
