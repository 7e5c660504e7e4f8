#!/usr/bin/env python3
"""Detection latency: from a link going down to the incident on the server, next to the peers' defaults.

A real `hisguard-server run`, a real `hisguard-agent run` pinging a test host in a network
namespace (tests/support/netns.TestNet). Each trial waits a random phase of the ping interval,
cuts the host's link, and polls the server's API every 0.1 s until the incident is open; then
restores the link and waits for the incident to resolve. Prints p50/p95/max over the trials.

The agent uses the recommended setting for hospital-critical targets (ping every 5 s, 3 echo
requests, 1 s reply timeout, 2 failed rounds of 3 confirm, 2 good rounds clear), which keeps one
lost packet from raising an incident.

Peers' default detection delay, stated from their shipped defaults (not run here):
  - Zabbix template "ICMP Ping": item icmpping with the default update interval 1m (the template
    sets no delay), trigger `max(/ICMP Ping/icmpping,#3)=0`, i.e. three failed checks in a row:
    120–180 s after the link goes down (zabbix/zabbix templates/net/icmp_ping/template_module_icmp_ping.yaml).
  - Prometheus + blackbox exporter: global scrape_interval 1m and evaluation_interval 1m
    (Prometheus configuration docs), alert `probe_success == 0` with no `for:`, Alertmanager
    route group_wait 30s before the first notification (Alertmanager configuration docs):
    30–150 s from link down to the notification.

Needs root (network namespaces, raw ICMP). Usage: bench/bench_detection.py [--trials 10] [--interval 5]
Prints RESULT lines (JSON) for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.netns import TestNet  # noqa: E402
from tests.support.procs import AgentProc, ServerProc, wait_until  # noqa: E402

ZABBIX_DEFAULT_S = (120.0, 180.0)
PROMETHEUS_DEFAULT_S = (30.0, 150.0)


def agent_config(server: ServerProc, token: str, address: str, interval: float) -> str:
    return f"""
[agent]
name = "his-bench"
state_dir = "state"
heartbeat_interval = 5
log_level = "WARNING"

[server]
url = "{server.url}"
token = "{token}"
timeout = 2
retry_max = 1

[[probe.ping]]
name = "core"
interval = {interval}
timeout = {min(interval, 4.5)}
count = 3
packet_interval = 0.2
reply_timeout = 1.0
fail_after = 2
fail_window = 3
clear_after = 2
privileged = "yes"
targets = [{{ address = "{address}", name = "核心交换机 core switch", hospital_critical = true }}]
"""


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run(trials: int, interval: float) -> dict[str, list[float]]:
    detect: list[float] = []
    clear: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hg-bench-detect-") as tmp, TestNet() as net:
        host = net.add("core")
        server = ServerProc(Path(tmp) / "server").start()
        token = server.agent_token("his-bench", "bench")
        agent = AgentProc(Path(tmp) / "agent", agent_config(server, token, host.address, interval)).start()
        key = f"his-bench/ping.reachable/{host.address}"

        def state() -> str | None:
            for inc in server.incidents():
                if inc["key"] == key and inc["status"] == "open":
                    return "open"
            return None

        try:
            wait_until(lambda: server.get("/agents")[0]["last_seen"], 30, what="first heartbeat")
            time.sleep(interval * 2)  # a few healthy rounds first
            for i in range(trials):
                time.sleep(random.uniform(0, interval))  # cut at a random phase of the ping schedule
                net.down("core")
                cut = time.monotonic()
                wait_until(lambda: state() == "open", interval * 6 + 30, 0.1, "the incident")
                detect.append(time.monotonic() - cut)
                net.up("core")
                back = time.monotonic()
                wait_until(lambda: state() is None, interval * 6 + 30, 0.1, "the incident to resolve")
                clear.append(time.monotonic() - back)
                print(
                    f"  trial {i + 1}/{trials}: detected in {detect[-1]:.2f}s, cleared in {clear[-1]:.2f}s", flush=True
                )
        finally:
            agent.stop()
            server.stop()
    return {"detect": detect, "clear": clear}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--interval", type=float, default=5.0, help="ping interval of the agent (s)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, raw ICMP)")
    print(f"detection latency, link down in a namespace → incident open on the server ({args.trials} trials):")
    print(f"  agent: ping every {args.interval:g}s, 3 requests, 1s reply timeout, 2 of 3 rounds confirm")
    r = run(args.trials, args.interval)
    d, c = r["detect"], r["clear"]
    p50, p95 = percentile(d, 50), percentile(d, 95)
    print(f"hisguard detection: p50 {p50:.1f}s  p95 {p95:.1f}s  max {max(d):.1f}s  (mean {statistics.mean(d):.1f}s)")
    print(f"hisguard recovery (link up → incident resolved): p50 {percentile(c, 50):.1f}s  max {max(c):.1f}s")
    print(f"Zabbix 'ICMP Ping' template defaults: {ZABBIX_DEFAULT_S[0]:.0f}–{ZABBIX_DEFAULT_S[1]:.0f}s (1m checks, #3)")
    print(
        f"Prometheus + blackbox + Alertmanager defaults: {PROMETHEUS_DEFAULT_S[0]:.0f}–{PROMETHEUS_DEFAULT_S[1]:.0f}s "
        "(1m scrape, 1m evaluation, 30s group_wait)"
    )
    results = [
        {
            "metric": "detection latency, link down → incident (p95)",
            "hisguard": f"{p95:.1f} s (p50 {p50:.1f} s, {len(d)} trials)",
            "peer": f"Zabbix ICMP template {ZABBIX_DEFAULT_S[0]:.0f}–{ZABBIX_DEFAULT_S[1]:.0f} s; "
            f"Prometheus defaults {PROMETHEUS_DEFAULT_S[0]:.0f}–{PROMETHEUS_DEFAULT_S[1]:.0f} s",
            "target": "≤ 15 s p95",
            "met": p95 <= 15.0,
        },
        {
            "metric": "recovery, link up → incident resolved (p50)",
            "hisguard": f"{percentile(c, 50):.1f} s",
            "peer": "",
            "target": "",
        },
    ]
    for res in results:
        print("RESULT " + json.dumps(res, ensure_ascii=False))


if __name__ == "__main__":
    main()
