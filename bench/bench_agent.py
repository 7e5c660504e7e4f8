#!/usr/bin/env python3
"""Agent footprint and ping sweep, side by side with the tools hospitals run today.

Prints (one run, same machine):
  1. RSS and CPU of `hisguard-agent run` with the host probe and the ping probe on 50 targets,
     next to zabbix_agent2 and prometheus-blackbox-exporter (Debian packages) idling on 127.0.0.1;
  2. one ping sweep of 1,000 loopback addresses: hisguard's ping probe vs fping (default and -i 1).
Needs root for raw ICMP. Usage: bench/bench_agent.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import AgentProc, ServerProc, free_port, wait_until  # noqa: E402


def sample(procs: dict[str, psutil.Process], seconds: float) -> dict[str, dict[str, float]]:
    """Sample RSS every second; CPU as a share of one core over the whole window."""
    rss: dict[str, list[float]] = {k: [] for k in procs}
    cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for k, p in procs.items():
            rss[k].append(tree_rss(p) / 2**20)
        time.sleep(1.0)
    wall = time.monotonic() - t0
    out = {}
    for k, p in procs.items():
        cpu = (sum(p.cpu_times()[:2]) - cpu0[k]) / wall * 100
        out[k] = {"rss_avg": statistics.mean(rss[k]), "rss_max": max(rss[k]), "cpu_pct": cpu}
    return out


def tree_rss(p: psutil.Process) -> int:
    total = p.memory_info().rss
    for c in p.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def low_port() -> int:
    """A free port below 32768 (zabbix_agent2 refuses higher ones)."""
    import socket

    for port in range(20050, 32000, 7):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def start_zabbix(tmp: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("zabbix_agent2") or "/usr/sbin/zabbix_agent2"
    if not os.path.exists(exe):
        return None
    conf = tmp / "zabbix_agent2.conf"
    conf.write_text(
        f"Server=127.0.0.1\nListenIP=127.0.0.1\nListenPort={low_port()}\nHostname=bench\n"
        f"LogFile={tmp}/zabbix.log\nPidFile={tmp}/zabbix.pid\nControlSocket={tmp}/zabbix.sock\n"
        f"PluginSocket={tmp}/zabbix-plugin.sock\n"
    )
    out = (tmp / "zabbix.out").open("wb")
    proc = subprocess.Popen([exe, "-f", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    time.sleep(1)
    if proc.poll() is not None:
        print(f"zabbix_agent2 exited: {(tmp / 'zabbix.out').read_text()[-500:]}", file=sys.stderr)
        return None
    return proc


def start_blackbox(tmp: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("prometheus-blackbox-exporter")
    if not exe:
        return None
    conf = tmp / "blackbox.yml"
    conf.write_text("modules:\n  icmp:\n    prober: icmp\n    timeout: 5s\n")
    return subprocess.Popen(
        [exe, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def agent_python(extras: str = "") -> str:
    """An agent-only install (`pip install hisguard`, no server or test extras), as on a hospital server;
    `extras` adds agent extras (e.g. "snmp")."""
    venv = ROOT / "bench" / ".venv-agent"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    target = f"{ROOT}[{extras}]" if extras else str(ROOT)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", target], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(py)


def footprint(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = ServerProc(tmp / "server").start()
        token = server.agent_token("bench-agent", "bench")
        targets = "\n".join(f'  {{ address = "127.0.{i // 250}.{i % 250 + 1}" }},' for i in range(50))
        cfg = f"""
[agent]
name = "bench-agent"
state_dir = "state"
heartbeat_interval = 30
[server]
url = "{server.url}"
token = "{token}"
[[probe.host]]
interval = 30
[[probe.ping]]
interval = 10
timeout = 5
targets = [
{targets}
]
"""
        agent = AgentProc(tmp / "agent", cfg, python=agent_python()).start()
        peers = {"hisguard-agent (host + ping x50)": psutil.Process(agent.proc.pid)}
        zbx, bbx = start_zabbix(tmp), start_blackbox(tmp)
        if zbx:
            peers["zabbix_agent2 (idle, default plugins)"] = psutil.Process(zbx.pid)
        if bbx:
            peers["prometheus-blackbox-exporter (idle)"] = psutil.Process(bbx.pid)
        try:
            wait_until(lambda: server.get("/agents")[0]["last_seen"], 15, what="agent heartbeat")
            time.sleep(2)
            figures = sample(peers, seconds)
        finally:
            agent.stop()
            for p in (zbx, bbx):
                if p:
                    p.terminate()
                    p.wait(10)
            server.stop()
    print(f"\n## Agent footprint over {seconds:.0f} s\n")
    print("| process | RSS avg (MiB) | RSS max (MiB) | CPU (% of one core) |")
    print("|---|---:|---:|---:|")
    for name, f in figures.items():
        print(f"| {name} | {f['rss_avg']:.1f} | {f['rss_max']:.1f} | {f['cpu_pct']:.2f} |")
    ours = next(f for n, f in figures.items() if n.startswith("hisguard"))
    zbx = next((f for n, f in figures.items() if n.startswith("zabbix")), None)
    if zbx:
        ratio = ours["rss_max"] / zbx["rss_max"]
        result("agent RSS, host + ping x50 (vs zabbix_agent2)", f"{ours['rss_max']:.1f} MiB ({ratio:.2f}x)",
               f"zabbix_agent2 {zbx['rss_max']:.1f} MiB", "<= 2.5x", ratio <= 2.5)
    result("agent CPU, host + ping x50", f"{ours['cpu_pct']:.2f} % of one core")


def sweep(n: int) -> None:
    from hisguard.checks.base import ProbeContext
    from hisguard.checks.ping import Config, probe

    addrs = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(n)]
    cfg = Config(targets=[{"address": a} for a in addrs], count=1, reply_timeout=1.0, timeout=5,
                 concurrency=1000, fail_after=1, fail_window=1, clear_after=1)
    ctx = ProbeContext(host="bench", state_dir=Path(tempfile.gettempdir()))
    rows = []
    for _ in range(3):
        t = time.perf_counter()
        obs = asyncio.run(probe(cfg, ctx))
        rows.append(("hisguard ping probe (icmplib, 1 request each)", time.perf_counter() - t,
                     sum(1 for o in obs if o.ok)))
    fping = shutil.which("fping")
    if fping:
        for args, label in ((["-c1", "-q"], "fping -c1 -q (default 10 ms interval)"),
                            (["-c1", "-q", "-i", "1"], "fping -c1 -q -i 1")):
            t = time.perf_counter()
            out = subprocess.run([fping, *args, *addrs], capture_output=True, text=True)
            alive = out.stderr.count(" 1/1/0%")
            rows.append((label, time.perf_counter() - t, alive))
    ours = min(secs for label, secs, _ in rows if label.startswith("hisguard"))
    fast = [secs for label, secs, _ in rows if label.endswith("-i 1")]
    if fast:
        result(f"ping sweep of {n} loopback addresses", f"{ours:.2f} s", f"fping -i 1: {fast[0]:.2f} s",
               "faster than fping -i 1", ours < fast[0])
    print(f"\n## Ping sweep of {n} loopback addresses\n")
    print("| tool | seconds | answered |")
    print("|---|---:|---:|")
    for label, secs, alive in rows:
        print(f"| {label} | {secs:.3f} | {alive}/{n} |")


def result(metric: str, ours: str, peer: str = "", target: str = "", met: bool | None = None) -> None:
    """A line bench/run_all.py puts in the summary table."""
    import json

    row: dict[str, object] = {"metric": metric, "hisguard": ours, "peer": peer, "target": target}
    if met is not None:
        row["met"] = met
    print("RESULT " + json.dumps(row, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--sweep", type=int, default=1000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (raw ICMP)")
    sweep(args.sweep)
    footprint(args.seconds)


if __name__ == "__main__":
    main()
