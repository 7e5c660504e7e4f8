"""Test hosts in network namespaces: each host its own namespace, linked to this one by a veth pair.

Addresses come from 198.18.0.0/15 (RFC 2544, for benchmarking); an `unreachable` route for the
whole range keeps any packet for a host whose link is down from leaving the machine.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

NET_RANGE = "198.18.0.0/15"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


@dataclass
class TestHost:
    ns: str
    veth: str  # our side
    peer: str  # the host's side, inside its namespace
    address: str


@dataclass
class TestNet:
    """A set of test hosts; use as a context manager so every namespace is removed afterwards."""

    __test__ = False  # not a test class, whatever its name

    tag: str = field(default_factory=lambda: f"hg{os.getpid() % 100000}")
    hosts: dict[str, TestHost] = field(default_factory=dict)
    _n: int = 0

    def __enter__(self) -> TestNet:
        sh("ip", "route", "replace", "unreachable", NET_RANGE, "metric", "4000")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(self, name: str) -> TestHost:
        self._n += 1
        n = self._n
        ns, veth, peer = f"{self.tag}-{name}", f"{self.tag}v{n}", f"{self.tag}p{n}"
        if n > 63:
            raise ValueError("a TestNet holds at most 63 hosts")
        # Each TestNet takes its own /24 of 198.18.0.0/15 (by process id), so parallel runs never clash.
        block = os.getpid() % 500 + 1
        base = f"198.{18 + block // 256}.{block % 256}."
        ours, theirs = f"{base}{n * 4 + 1}", f"{base}{n * 4 + 2}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "addr", "add", f"{ours}/30", "dev", veth)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{theirs}/30", "dev", peer)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        host = TestHost(ns, veth, peer, theirs)
        self.hosts[name] = host
        return host

    def down(self, name: str) -> None:
        """Cut the host's link, as a failed switch port or a dead server would."""
        h = self.hosts[name]
        sh("ip", "netns", "exec", h.ns, "ip", "link", "set", h.peer, "down")

    def up(self, name: str) -> None:
        h = self.hosts[name]
        sh("ip", "netns", "exec", h.ns, "ip", "link", "set", h.peer, "up")

    def loss(self, name: str, percent: int) -> None:
        """Drop `percent`% of ICMP arriving at the host, at random (nftables; tc netem is unavailable)."""
        h = self.hosts[name]
        run = ("ip", "netns", "exec", h.ns, "nft")
        sh(*run, "add", "table", "inet", "hgloss")
        sh(*run, "add", "chain", "inet", "hgloss", "in", "{ type filter hook input priority 0; }")
        sh(
            *run,
            "add",
            "rule",
            "inet",
            "hgloss",
            "in",
            "ip",
            "protocol",
            "icmp",
            "numgen",
            "random",
            "mod",
            "100",
            "<",
            str(percent),
            "drop",
        )

    def close(self) -> None:
        for h in self.hosts.values():
            sh("ip", "link", "del", h.veth, check=False)
            sh("ip", "netns", "del", h.ns, check=False)
        self.hosts.clear()
        sh("ip", "route", "del", "unreachable", NET_RANGE, "metric", "4000", check=False)
