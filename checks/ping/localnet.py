"""Why nothing could be sent: this host's interfaces that are down and the route the kernel holds for a target.

Read only when a send failed. Routes come from /proc/net/route and /proc/net/ipv6_route (Linux,
main table); interfaces from psutil (Linux and Windows).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

RTF_UP, RTF_GATEWAY, RTF_REJECT = 0x1, 0x2, 0x200
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Route:
    network: IPNetwork
    metric: int
    reject: bool
    gateway: str | None
    dev: str

    def __str__(self) -> str:
        if self.reject:
            return f"unreachable {self.network}"
        via = f" via {self.gateway}" if self.gateway else ""
        return f"{self.network}{via} dev {self.dev}"


def _le32(hex_text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(hex_text), "little"))


def _routes_v4(text: str) -> list[Route]:
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or not int(f[3], 16) & RTF_UP:
            continue
        flags = int(f[3], 16)
        net = ipaddress.IPv4Network(f"{_le32(f[1])}/{_le32(f[7])}", strict=False)
        gateway = str(_le32(f[2])) if flags & RTF_GATEWAY else None
        out.append(Route(net, int(f[6]), bool(flags & RTF_REJECT), gateway, f[0]))
    return out


def _routes_v6(text: str) -> list[Route]:
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10:
            continue
        flags = int(f[8], 16)
        if not flags & (RTF_UP | RTF_REJECT):  # the kernel lists IPv6 reject routes without RTF_UP
            continue
        net = ipaddress.IPv6Network(f"{ipaddress.IPv6Address(bytes.fromhex(f[0]))}/{int(f[1], 16)}", strict=False)
        gateway = str(ipaddress.IPv6Address(bytes.fromhex(f[4]))) if flags & RTF_GATEWAY else None
        out.append(Route(net, int(f[5], 16), bool(flags & RTF_REJECT), gateway, f[9]))
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


class LocalNetwork:
    """A snapshot of this host's routes and interfaces, read once and asked about many targets."""

    def __init__(self) -> None:
        self.routes = _routes_v4(_read("/proc/net/route")) + _routes_v6(_read("/proc/net/ipv6_route"))
        self.down: dict[str, list[IPNetwork]] = {}
        try:
            stats, addrs = psutil.net_if_stats(), psutil.net_if_addrs()
        except (OSError, RuntimeError):
            return
        for name, st in stats.items():
            if st.isup or name == "lo" or name.lower().startswith("loopback"):
                continue
            nets = []
            for a in addrs.get(name, []):
                if a.family in (socket.AF_INET, socket.AF_INET6) and a.netmask:
                    try:
                        nets.append(ipaddress.ip_network(f"{a.address.split('%')[0]}/{a.netmask}", strict=False))
                    except ValueError:
                        continue
            if nets:
                self.down[name] = nets

    def route(self, ip: str) -> str:
        """The route the kernel would take to `ip` (longest prefix, lowest metric), or "no route"."""
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return "no route"
        best = [r for r in self.routes if r.network.version == addr.version and addr in r.network]
        if not best:
            return "no route"
        return str(min(best, key=lambda r: (-r.network.prefixlen, r.metric)))

    def interfaces_down(self, ips: list[str], everywhere: bool) -> list[str]:
        """This host's interfaces that are down on the targets' own subnets; if none and `everywhere`, every one."""
        addrs = []
        for ip in ips:
            try:
                addrs.append(ipaddress.ip_address(ip.split("%")[0]))
            except ValueError:
                continue
        facing = [
            name
            for name, nets in self.down.items()
            if any(a in net for a in addrs for net in nets if a.version == net.version)
        ]
        return sorted(facing) or (sorted(self.down) if everywhere else [])
