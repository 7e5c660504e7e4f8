#!/usr/bin/env python3
"""Agent footprint and ping sweep, side by side with the tools hospitals run today.

Prints (one run, same machine):
  1. one ping sweep of 1,000 loopback addresses, hisguard's ping probe and fping at the same pacing
     (1 ms apart, and unpaced), 5 runs each, medians of wall time and CPU;
  2. `hisguard-agent run` pinging 1,000, 2,000 and 5,000 loopback targets at the shipped cadence
     (every 5 s, 5 requests each) next to fping sending the same requests on the same schedule:
     CPU per echo request (real CPU time: psutil / getrusage), share of a core, RSS;
  3. RSS and CPU of `hisguard-agent run` with the host probe and the ping probe on 50 targets,
     next to zabbix_agent2 and prometheus-blackbox-exporter (Debian packages) idling on 127.0.0.1.
About 8 minutes. Needs root for raw ICMP. Usage: bench/bench_agent.py [--seconds 60] [--scale 1000,2000,5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def agent_python(extras: str = "") -> str:
    """An agent-only install (`pip install hisguard`, no server or test extras), as on a hospital server;
    `extras` adds agent extras (e.g. "snmp")."""
    venv = ROOT / "bench" / ".venv-agent"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    target = f"{ROOT}[{extras}]" if extras else str(ROOT)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--upgrade", target],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        result(
            "agent RSS, host + ping x50 (vs zabbix_agent2)",
            f"{ours['rss_max']:.1f} MiB ({ratio:.2f}x)",
            f"zabbix_agent2 {zbx['rss_max']:.1f} MiB",
            "<= 2.5x",
            ratio <= 2.5,
        )
    result("agent CPU, host + ping x50", f"{ours['cpu_pct']:.2f} % of one core")


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sweep(n: int, runs: int) -> None:
    """One echo to each of `n` loopback addresses, hisguard's probe and fping at the same pacing, `runs` each:
    paced 1 ms apart (fping -i 1) and unpaced (fping -i 0); medians of wall time and CPU."""
    from hisguard.checks.base import ProbeContext
    from hisguard.checks.ping import Config, probe

    addrs = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(n)]
    fping = shutil.which("fping")
    rows = []
    for label, rate, interval_ms in (("paced 1 ms", 1000, "1"), ("unpaced", 100_000, "0")):
        cfg = Config(targets=[{"address": a} for a in addrs], count=1, reply_timeout=1.0, timeout=n / rate + 2,
                     interval=n / rate + 2, rate=rate, privileged="yes")  # fmt: skip
        walls, cpus, answered = [], [], 0
        for _ in range(runs):  # a fresh context: the sockets are opened again each run, as fping does
            ctx = ProbeContext(host="bench", state_dir=Path(tempfile.gettempdir()))
            t, c = time.perf_counter(), _cpu_self()
            obs = asyncio.run(probe(cfg, ctx))
            walls.append(time.perf_counter() - t)
            cpus.append(_cpu_self() - c)
            answered = sum(1 for o in obs if o.ok and o.check == "ping.reachable")
        rows.append((f"hisguard ping probe, {label} (rate {rate}/s)", walls, cpus, answered))
        if fping:
            walls, cpus = [], []
            for _ in range(runs):
                t, c = time.perf_counter(), _cpu_children()
                out = subprocess.run([fping, "-c1", "-q", "-i", interval_ms, *addrs], capture_output=True, text=True)
                walls.append(time.perf_counter() - t)
                cpus.append(_cpu_children() - c)
                answered = out.stderr.count(" 1/1/0%")
            rows.append((f"fping -c1 -q -i {interval_ms}, {label}", walls, cpus, answered))
    print(f"\n## Ping sweep of {n} loopback addresses, one echo each ({runs} runs each, medians)\n")
    print("| tool | wall (s) | CPU (ms) | answered |")
    print("|---|---:|---:|---:|")
    for label, walls, cpus, alive in rows:
        print(f"| {label} | {statistics.median(walls):.3f} | {statistics.median(cpus) * 1000:.0f} | {alive}/{n} |")
    med = {label: (statistics.median(w), statistics.median(c)) for label, w, c, _ in rows}
    for pace in ("paced 1 ms", "unpaced"):
        ours = next(v for k, v in med.items() if k.startswith("hisguard") and pace in k)
        theirs = next((v for k, v in med.items() if k.startswith("fping") and pace in k), None)
        if theirs:
            result(
                f"ping sweep of {n} loopback addresses, {pace} (median of {runs})",
                f"{ours[0]:.2f} s, {ours[1] * 1000:.0f} ms CPU",
                f"fping: {theirs[0]:.2f} s, {theirs[1] * 1000:.0f} ms CPU",
            )


def scale(sizes: list[int], seconds: float) -> None:
    """`hisguard-agent run` pinging N loopback targets at the shipped cadence (every 5 s, 5 requests each) next
    to fping sending the same requests on the same schedule (one `fping -c 5 -p 50 -i 0.1` process a round,
    as Zabbix runs it): CPU per echo request and RSS, as N grows."""
    from hisguard.checks.ping import Config

    fping = shutil.which("fping")
    shipped = Config(targets=[{"address": "127.0.0.1"}])
    interval, count = shipped.interval, shipped.count
    gap_ms = 1000 / shipped.rate  # the same pacing for fping: requests 0.1 ms apart, 50 ms apart per target
    rows = []
    python = agent_python()  # an agent-only install, as on a hospital server
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = ServerProc(tmp / "server").start()
        try:
            for n in sizes:
                addrs = [f"127.2.{i // 250}.{i % 250 + 1}" for i in range(n)]
                name = f"bench-scale-{n}"
                token = server.agent_token(name, "bench")
                targets = "\n".join(f'  {{ address = "{a}" }},' for a in addrs)
                cfg = (f'[agent]\nname = "{name}"\nstate_dir = "state"\nlog_level = "WARNING"\n[server]\n'
                       f'url = "{server.url}"\ntoken = "{token}"\n[[probe.ping]]\nname = "network"\n'
                       f"targets = [\n{targets}\n]\n")  # fmt: skip
                agent = AgentProc(tmp / name, cfg, python=python).start()
                try:
                    proc = psutil.Process(agent.proc.pid)
                    wait_until(lambda: _runs(server, name) >= 1, 90, 0.5, "a first round")  # noqa: B023
                    time.sleep(interval)
                    cpu0, t0, rss = sum(proc.cpu_times()[:2]), time.monotonic(), []
                    while time.monotonic() - t0 < seconds:
                        rss.append(proc.memory_info().rss / 2**20)
                        time.sleep(1.0)
                    cpu, wall = sum(proc.cpu_times()[:2]) - cpu0, time.monotonic() - t0
                finally:
                    agent.stop()
                # The job keeps its cadence: the window holds wall / interval rounds of n × count requests.
                rows.append(
                    (f"hisguard-agent, {n} targets", n, cpu, wall, round(wall / interval * n * count), max(rss))
                )
                if fping:
                    cpu, peak, rounds, t0 = 0.0, 0.0, 0, time.monotonic()
                    cmd = [fping, "-c", str(count), "-q", "-p", "50", "-i", f"{gap_ms:g}", *addrs]
                    while time.monotonic() - t0 < seconds:
                        tick = time.monotonic()
                        cpu_used, rss_peak = run_measured(cmd)
                        cpu += cpu_used
                        peak = max(peak, rss_peak)
                        rounds += 1
                        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
                    rows.append((f"fping, {n} targets", n, cpu, time.monotonic() - t0, rounds * n * count, peak))
        finally:
            server.stop()
    print(f"\n## Ping at hospital scale: every {interval:g} s, {count} requests a target ({seconds:.0f} s each)\n")
    print("| who | echo requests | CPU (s) | CPU per request (µs) | % of one core | RSS max (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, _, cpu, wall, echoes, peak in rows:
        per = cpu / echoes * 1e6 if echoes else float("nan")
        print(f"| {label} | {echoes} | {cpu:.2f} | {per:.1f} | {cpu / wall * 100:.1f} | {peak:.1f} |")
    for n in sizes:
        ours = next(r for r in rows if r[0].startswith("hisguard") and r[1] == n)
        theirs = next((r for r in rows if r[0].startswith("fping") and r[1] == n), None)
        per = ours[2] / ours[4] * 1e6 if ours[4] else float("nan")
        if theirs and theirs[4]:
            fper = theirs[2] / theirs[4] * 1e6
            share = ours[2] / ours[3] * 100
            result(
                f"ping CPU per echo request, {n} targets every {interval:g} s × {count}",
                f"{per:.0f} µs ({share:.1f} % of a core, RSS {ours[5]:.0f} MiB, {per / fper:.2f}× fping)",
                f"fping {fper:.0f} µs ({theirs[2] / theirs[3] * 100:.1f} % of a core)",
                "≤ 3× fping",
                per <= 3 * fper,
            )


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run a program to its end: its own CPU seconds (wait4) and peak RSS in MiB (sampled once it is exec'd;
    ru_maxrss would count the forked Python it started as)."""
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc, peak = psutil.Process(child.pid), 0.0
    while True:
        pid, _, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = 0  # reaped here
            return usage.ru_utime + usage.ru_stime, peak
        try:
            if proc.exe().endswith(Path(cmd[0]).name):
                peak = max(peak, proc.memory_info().rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.01)


def _runs(server: ServerProc, name: str) -> int:
    agents = [a for a in server.get("/agents") if a["name"] == name]
    if not agents:
        return 0
    try:
        return int(server.get(f"/agents/{agents[0]['id']}/health")["snapshot"]["probes"]["network"]["runs"])
    except (KeyError, TypeError):
        return 0


def result(metric: str, ours: str, peer: str = "", target: str = "", met: bool | None = None) -> None:
    """A line bench/run_all.py puts in the summary table."""
    import json

    row: dict[str, object] = {"metric": metric, "hisguard": ours, "peer": peer, "target": target}
    if met is not None:
        row["met"] = met
    print("RESULT " + json.dumps(row, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="footprint window")
    ap.add_argument("--sweep", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5, help="sweeps per tool and pacing")
    ap.add_argument("--scale", default="1000,2000,5000", help="ping target counts for the scale run")
    ap.add_argument("--scale-seconds", type=float, default=30, help="window per size and tool")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (raw ICMP)")
    sweep(args.sweep, args.runs)
    scale([int(x) for x in args.scale.split(",") if x], args.scale_seconds)
    footprint(args.seconds)


if __name__ == "__main__":
    main()
