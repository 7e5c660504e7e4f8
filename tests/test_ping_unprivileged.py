"""The unprivileged ICMP path (datagram sockets, ping_group_range), as a non-root agent uses it."""

import subprocess
import sys

from tests.support.netns import TestNet
from tests.support.peers import need_binary, need_root

SCRIPT = """
import asyncio, json, pathlib
from hisguard.checks.base import ProbeContext
from hisguard.checks.ping import Config, probe
cfg = Config(targets=[{"address": "127.0.0.1"}, {"address": "127.0.0.2"}], privileged="no", count=2, timeout=2,
             interval=2)
obs = asyncio.run(probe(cfg, ProbeContext(host="t", state_dir=pathlib.Path("."))))
print(json.dumps([[o.subject, o.ok, o.value] for o in obs]))
"""


def run_in(ns: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30
    )


def test_datagram_icmp_works_where_ping_group_range_allows_it():
    need_root()
    need_binary("ip")
    with TestNet() as net:
        host = net.add("unpriv")
        subprocess.run(["ip", "netns", "exec", host.ns, "sysctl", "-qw", "net.ipv4.ping_group_range=1 0"], check=True)
        refused = run_in(host.ns)
        assert refused.returncode != 0 and "CAP_NET_RAW" in refused.stderr  # a clear probe error, with the fix
        subprocess.run(
            ["ip", "netns", "exec", host.ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"], check=True
        )
        allowed = run_in(host.ns)
        assert allowed.returncode == 0, allowed.stderr
        assert '["127.0.0.1", true, 0.0]' in allowed.stdout


OUTCOMES = """
import asyncio, json, pathlib, sys
from hisguard.checks.base import ProbeContext
from hisguard.checks.ping import Config, probe
cfg = Config(targets=[{"address": a} for a in sys.argv[1:]], privileged="no", count=3)
obs = asyncio.run(probe(cfg, ProbeContext(host="t", state_dir=pathlib.Path("."))))
print(json.dumps({o.subject: [o.ok, o.detail.get("outcome"), o.detail.get("error")] for o in obs}))
"""


def test_datagram_icmp_tells_every_outcome_apart_as_an_unprivileged_user():
    # A service account without CAP_NET_RAW: errors come through the socket's error queue (IP_RECVERR).
    import json

    need_root()
    need_binary("ip")
    need_binary("nft")
    need_binary("setpriv")
    with TestNet(agent_ns=True) as net:
        for name in ("ok", "drop", "refuse", "route", "ifdown"):
            net.add(name)
        net.drop("drop")
        net.reject("refuse", "admin-prohibited")
        net.route_unreachable("route")
        net.agent_link_down("ifdown")
        net.ours("sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
        addrs = {a: n for n, h in net.hosts.items() for a in (h.address, h.address6)}
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        out = net.ours(*nobody, sys.executable, "-c", OUTCOMES, *addrs, check=False)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
    expect = {"ok": "answered", "drop": "lost", "refuse": "refused", "route": "unsendable", "ifdown": "unsendable"}
    for address, name in addrs.items():
        ok, outcome, error = seen[address]
        assert (outcome, ok) == (expect[name], name == "ok"), (address, seen[address])
        if name == "refuse":
            assert error == f"ICMP admin-prohibited from {address}"
        if name == "ifdown":
            assert error == "ENETUNREACH: Network is unreachable"  # no route at all in the agent's namespace
    assert seen["t"][0] is True  # some targets could be sent to: the agent's own network is fine
