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
