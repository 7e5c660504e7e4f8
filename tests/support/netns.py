"""Test hosts in network namespaces: each host its own namespace, linked by a veth pair to the pinging side.

The pinging side is this namespace, or (`agent_ns=True`) a namespace of the TestNet's own, so a
test can change its sysctls (ping_group_range for unprivileged ICMP) and cut its links without
touching the machine. Each TestNet claims its own /24 of 198.18.0.0/15 (RFC 2544, benchmarking)
and an IPv6 /64 of 2001:2::/48 (RFC 5180): the claim is an `unreachable` route added with `ip route
add`, which fails if another TestNet holds the block, so parallel runs never share addresses, and
no packet for a host whose link is down leaves the machine.

Faults, each on one host: `down` (its link cut: silence), `drop` / `loss` (nftables drops ICMP at
random), `reject` (it answers with an ICMP error), `route_unreachable` (the pinging side has an
`unreachable` route for it: nothing can be sent), `agent_link_down` (the pinging side's interface
towards it is down), `block_output` (the pinging side's firewall drops what it sends: EPERM).
An interface taken down loses its IPv6 addresses (the kernel's default), so after
`agent_link_up` only the IPv4 address answers again.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from tests.support.peers import need_binary, need_root

BLOCKS = 512  # /24s in 198.18.0.0/15
REJECT_V4 = {"host-unreachable": "host-unreachable", "admin-prohibited": "admin-prohibited"}
REJECT_V6 = {"host-unreachable": "addr-unreachable", "admin-prohibited": "admin-prohibited"}


def need_namespaces() -> None:
    """Skip (in CI: fail) unless this process can build test networks: root, `ip` and `nft`."""
    need_root()
    need_binary("ip")
    need_binary("nft")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


@dataclass
class TestHost:
    ns: str
    veth: str  # the pinging side's end
    peer: str  # the host's end, inside its namespace
    address: str
    address6: str
    ours: str  # the pinging side's address on this link


@dataclass
class TestNet:
    """A set of test hosts; use as a context manager so every namespace and route is removed afterwards."""

    __test__ = False  # not a test class, whatever its name

    agent_ns: bool = False
    hosts: dict[str, TestHost] = field(default_factory=dict)
    block: int = -1
    agent: str | None = None  # the pinging side's namespace when agent_ns
    _n: int = 0
    _routes: list[tuple[str, ...]] = field(default_factory=list)
    _tables: list[str] = field(default_factory=list)  # nftables tables on the pinging side

    # -- addresses ----------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"198.{18 + self.block // 256}.{self.block % 256}."

    @property
    def prefix6(self) -> str:
        return f"2001:2:0:{self.block:x}::"

    @property
    def tag(self) -> str:
        return f"hgb{self.block}"

    def ours(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command on the pinging side."""
        pre = ("ip", "netns", "exec", self.agent) if self.agent else ()
        return sh(*pre, *cmd, check=check)

    def _claim(self) -> None:
        start = (os.getpid() * 7919) % BLOCKS
        for i in range(BLOCKS):
            b = (start + i) % BLOCKS
            net = f"198.{18 + b // 256}.{b % 256}.0/24"
            if sh("ip", "route", "add", "unreachable", net, "metric", "4000", check=False).returncode == 0:
                self.block = b
                self._routes.append(("ip", "route", "del", "unreachable", net, "metric", "4000"))
                break
        else:
            raise RuntimeError("every test address block is taken")
        net6 = f"{self.prefix6}/64"
        if sh("ip", "-6", "route", "add", "unreachable", net6, "metric", "4000", check=False).returncode == 0:
            self._routes.append(("ip", "-6", "route", "del", "unreachable", net6, "metric", "4000"))

    def __enter__(self) -> TestNet:
        self._claim()
        if self.agent_ns:
            self.agent = f"{self.tag}-agent"
            sh("ip", "netns", "add", self.agent)
            self.ours("ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- hosts ----------------------------------------------------------------------------------
    def add(self, name: str) -> TestHost:
        self._n += 1
        n = self._n
        if n > 63:
            raise ValueError("a TestNet holds at most 63 hosts")
        ns, veth, peer = f"{self.tag}-{name}", f"{self.tag}v{n}", f"{self.tag}p{n}"
        ours, theirs = f"{self.prefix}{n * 4 + 1}", f"{self.prefix}{n * 4 + 2}"
        ours6, theirs6 = f"{self.prefix6}{n * 4 + 1:x}", f"{self.prefix6}{n * 4 + 2:x}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        if self.agent:
            sh("ip", "link", "set", veth, "netns", self.agent)
        self.ours("ip", "addr", "add", f"{ours}/30", "dev", veth)
        self.ours("ip", "-6", "addr", "add", f"{ours6}/126", "dev", veth, "nodad")
        self.ours("ip", "link", "set", veth, "up")
        inside = ("ip", "netns", "exec", ns)
        sh(*inside, "ip", "addr", "add", f"{theirs}/30", "dev", peer)
        sh(*inside, "ip", "-6", "addr", "add", f"{theirs6}/126", "dev", peer, "nodad")
        sh(*inside, "ip", "link", "set", peer, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        host = TestHost(ns, veth, peer, theirs, theirs6, ours)
        self.hosts[name] = host
        return host

    # -- faults -----------------------------------------------------------------------------------
    def down(self, name: str) -> None:
        """Cut the host's link, as a failed switch port or a dead server would: requests go unanswered."""
        h = self.hosts[name]
        sh("ip", "netns", "exec", h.ns, "ip", "link", "set", h.peer, "down")

    def up(self, name: str) -> None:
        h = self.hosts[name]
        sh("ip", "netns", "exec", h.ns, "ip", "link", "set", h.peer, "up")

    def agent_link_down(self, name: str) -> None:
        """The pinging side's own interface towards the host goes down (its route goes with it)."""
        self.ours("ip", "link", "set", self.hosts[name].veth, "down")

    def agent_link_up(self, name: str) -> None:
        self.ours("ip", "link", "set", self.hosts[name].veth, "up")

    def _nft(self, name: str, *rule: str) -> None:
        h = self.hosts[name]
        run = ("ip", "netns", "exec", h.ns, "nft")
        sh(*run, "add", "table", "inet", "hgfault")
        sh(*run, "add", "chain", "inet", "hgfault", "in", "{ type filter hook input priority 0; }")
        sh(*run, "add", "rule", "inet", "hgfault", "in", *rule)

    def loss(self, name: str, percent: int) -> None:
        """Drop `percent`% of ICMP arriving at the host, at random (nftables; tc netem is unavailable)."""
        if percent >= 100:
            self._nft(name, "meta", "l4proto", "{ icmp, ipv6-icmp }", "drop")
            return
        for proto in (("ip", "protocol", "icmp"), ("ip6", "nexthdr", "ipv6-icmp")):
            self._nft(name, *proto, "numgen", "random", "mod", "100", "<", str(percent), "drop")

    def drop(self, name: str) -> None:
        """Every echo request to the host vanishes without a word."""
        self._nft(name, "icmp", "type", "echo-request", "drop")
        self._nft(name, "icmpv6", "type", "echo-request", "drop")

    def reject(self, name: str, kind: str = "host-unreachable") -> None:
        """The host refuses echo requests with an ICMP error (`host-unreachable` or `admin-prohibited`)."""
        self._nft(name, "icmp", "type", "echo-request", "reject", "with", "icmp", "type", REJECT_V4[kind])
        self._nft(name, "icmpv6", "type", "echo-request", "reject", "with", "icmpv6", "type", REJECT_V6[kind])

    def heal(self, name: str) -> None:
        """Remove the host's drop/loss/reject rules."""
        sh("ip", "netns", "exec", self.hosts[name].ns, "nft", "delete", "table", "inet", "hgfault", check=False)

    def block_output(self, name: str) -> None:
        """The pinging side's own firewall drops what it sends to the host: the send fails with EPERM."""
        h, table = self.hosts[name], f"{self.tag}out"
        self.ours("nft", "add", "table", "inet", table)
        self.ours("nft", "add", "chain", "inet", table, "out", "{ type filter hook output priority 0; }")
        self.ours("nft", "add", "rule", "inet", table, "out", "ip", "daddr", h.address, "drop")
        self.ours("nft", "add", "rule", "inet", table, "out", "ip6", "daddr", h.address6, "drop")
        self._tables.append(table)

    def route_unreachable(self, name: str) -> None:
        """An `unreachable` route for this one host on the pinging side: nothing can be sent to it."""
        h = self.hosts[name]
        self.ours("ip", "route", "add", "unreachable", f"{h.address}/32")
        self.ours("ip", "-6", "route", "add", "unreachable", f"{h.address6}/128")

    def route_restore(self, name: str) -> None:
        h = self.hosts[name]
        self.ours("ip", "route", "del", "unreachable", f"{h.address}/32", check=False)
        self.ours("ip", "-6", "route", "del", "unreachable", f"{h.address6}/128", check=False)

    def close(self) -> None:
        if not self.agent:
            for table in dict.fromkeys(self._tables):
                sh("nft", "delete", "table", "inet", table, check=False)
        self._tables.clear()
        for name, h in self.hosts.items():
            if not self.agent:
                self.route_restore(name)
                sh("ip", "link", "del", h.veth, check=False)
            sh("ip", "netns", "del", h.ns, check=False)
        self.hosts.clear()
        if self.agent:
            sh("ip", "netns", "del", self.agent, check=False)
            self.agent = None
        for cmd in self._routes:
            sh(*cmd, check=False)
        self._routes.clear()
