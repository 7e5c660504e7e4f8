"""SNMP figures, side by side in one run (prints them; asserts nothing).

1. Warm poll of a 48-port switch's interface status (ifOperStatus) through the probe's one
   long-lived pysnmp engine, against net-snmp `snmpbulkwalk` of the same column on the same
   snmpsim, per process (what a cron-style poller pays each time).
2. A whole warm probe round of that switch (status, uplink counters, CPU/memory/temperature).
3. Agent resident memory: `hisguard-agent run` with host+ping jobs, and with an SNMP job (four
   devices, trap receiver on) added, from an agent-only install (bench/.venv-agent, built by
   bench_agent.agent_python with the snmp extra), as on a hospital server. pysmi is hidden from
   the agent, as on a deployed agent (it is a test-only dependency; pysnmp loads it when present).

Run: .venv/bin/python bench/bench_snmp.py   (needs snmpsim from the test extra and Debian `snmp`)
"""

from __future__ import annotations

import asyncio
import json
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

from bench.bench_agent import agent_python  # noqa: E402
from hisguard.checks.base import ProbeContext  # noqa: E402
from hisguard.checks.snmp import Config, oids, poll_device  # noqa: E402
from hisguard.checks.snmp.client import Credentials, Session  # noqa: E402
from tests.data.snmp.gen import Switch, Ups  # noqa: E402
from tests.data.snmp.sim import SnmpSim, free_udp_port  # noqa: E402

ROUNDS = 40


def ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs):6.2f} ms, p90 {sorted(xs)[int(len(xs) * 0.9)]:6.2f} ms"


async def pysnmp_figures(sim: SnmpSim) -> tuple[list[float], list[float], float]:
    sess = Session("127.0.0.1", sim.port, Credentials("2c", community="sw48"), 2.0, 1)
    t = time.perf_counter()
    await sess.columns([oids.IF_OPER], max_repetitions=64)
    cold = (time.perf_counter() - t) * 1000
    status = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        rows = (await sess.columns([oids.IF_OPER], max_repetitions=64))[oids.IF_OPER]
        status.append((time.perf_counter() - t) * 1000)
        assert len(rows) == 48
    cfg = Config(devices=[{"name": "sw48", "address": "127.0.0.1", "port": sim.port, "community": "sw48",
                           "uplinks": ["GigabitEthernet0/0/47", "GigabitEthernet0/0/48"]}])  # fmt: skip
    ctx = ProbeContext(host="bench", state_dir=Path(tempfile.mkdtemp()))
    await poll_device(cfg.devices[0], cfg, ctx)
    whole = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        await poll_device(cfg.devices[0], cfg, ctx)
        whole.append((time.perf_counter() - t) * 1000)
    return status, whole, cold


def snmpbulkwalk_figures(sim: SnmpSim) -> list[float] | None:
    exe = shutil.which("snmpbulkwalk")
    if not exe:
        return None
    out = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        r = subprocess.run([exe, "-v2c", "-c", "sw48", "-Cr64", f"127.0.0.1:{sim.port}", oids.IF_OPER],
                           capture_output=True, text=True, check=True)  # fmt: skip
        out.append((time.perf_counter() - t) * 1000)
        assert r.stdout.count("\n") == 48
    return out


AGENT = """
[agent]
name = "bench"
state_dir = "{state}"
heartbeat_interval = 5
[server]
url = "http://127.0.0.1:9"
token = "x"
[[probe.host]]
interval = 2
timeout = 2
[[probe.ping]]
interval = 2
timeout = 2
count = 1
reply_timeout = 0.5
targets = [ { address = "127.0.0.1" } ]
"""

SNMP = """
[[probe.snmp]]
interval = 2
timeout = 2
traps = true
trap_listen = "127.0.0.1"
trap_port = {trap_port}
[[probe.snmp.devices]]
name = "sw48"
address = "127.0.0.1"
port = {port}
community = "sw48"
uplinks = ["GigabitEthernet0/0/48"]
[[probe.snmp.devices]]
name = "core"
address = "127.0.0.1"
port = {port}
community = "core"
[[probe.snmp.devices]]
name = "cisco"
address = "127.0.0.1"
port = {port}
community = "cisco"
[[probe.snmp.devices]]
name = "ups"
address = "127.0.0.1"
port = {port}
community = "ups"
kind = "ups"
"""

# The deployed agent has no pysmi; hide the test venv's copy so pysnmp runs without it.
LAUNCH = "import sys; sys.modules['pysmi'] = None; from hisguard.agent.cli import main; sys.exit(main())"


def agent_rss(python: str, config_text: str, seconds: float = 8.0) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(prefix="hg-bench-"))
    cfg = work / "agent.toml"
    cfg.write_text(config_text.replace("{state}", str(work / "state")), encoding="utf-8")
    # Run from the scratch directory: from the source tree, `-c` would import its hisguard/ instead.
    proc = subprocess.Popen([python, "-c", LAUNCH, "run", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=(work / "agent.log").open("wb"), cwd=work)  # fmt: skip
    try:
        p = psutil.Process(proc.pid)
        peak = 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError((work / "agent.log").read_text()[-2000:])
            peak = max(peak, p.memory_info().rss)
            time.sleep(0.2)
        return p.memory_info().rss / 2**20, peak / 2**20
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def result(metric: str, ours: str, peer: str, target: str, met: bool) -> None:
    """A line bench/run_all.py puts in its summary table."""
    row = {"metric": metric, "hisguard": ours, "peer": peer, "target": target, "met": met}
    print("RESULT " + json.dumps({k: v for k, v in row.items() if v != ""}, ensure_ascii=False))


def main() -> None:
    sim = SnmpSim(("127.0.0.1",))
    sim.write("sw48", Switch("sw48").render())
    sim.write("core", Switch("core", vendor="h3c").render())
    sim.write("cisco", Switch("cisco", vendor="cisco").render())
    sim.write("ups", Ups("ups").render())
    sim.start()
    try:
        status, whole, cold = asyncio.run(pysnmp_figures(sim))
        walk = snmpbulkwalk_figures(sim)
        print("SNMP poll of a 48-port switch (snmpsim on 127.0.0.1), interface status (ifOperStatus column):")
        print(f"  hisguard, one warm pysnmp engine      {ms(status)}   (cold first request {cold:.0f} ms)")
        if walk:
            print(f"  net-snmp snmpbulkwalk, per process    {ms(walk)}")
            ratio = statistics.median(status) / statistics.median(walk)
            print(f"  ratio hisguard / snmpbulkwalk         {ratio:.2f}x  (target ≤ 1.5x)")
            result(
                "warm poll of a 48-port switch's interface status (bench_snmp.py)",
                f"{statistics.median(status):.1f} ms ({ratio:.2f}×)",
                f"snmpbulkwalk per process: {statistics.median(walk):.1f} ms",
                "≤ 1.5× snmpbulkwalk",
                ratio <= 1.5,
            )
        else:
            print("  net-snmp snmpbulkwalk: not installed (Debian package snmp)")
        print(f"  whole warm probe round of the switch  {ms(whole)}  (status, uplink counters, CPU/mem/temp)")
        base = AGENT
        with_snmp = AGENT + SNMP.format(port=sim.port, trap_port=free_udp_port())
        python = agent_python("snmp")
        now0, peak0 = agent_rss(python, base)
        now1, peak1 = agent_rss(python, with_snmp)
        print("Agent resident memory (hisguard-agent run, agent-only install, 8 s, rounds every 2 s):")
        print(f"  host + ping jobs                      {now0:6.1f} MiB (peak {peak0:.1f})")
        print(f"  + SNMP job, 4 devices, trap receiver  {now1:6.1f} MiB (peak {peak1:.1f})  (target < 50 MiB)")
        result(
            "agent RSS with SNMP: 4 devices + trap receiver (bench_snmp.py)",
            f"{now1:.1f} MiB (without SNMP: {now0:.1f} MiB)",
            "",
            "< 50 MiB",
            now1 < 50,
        )
    finally:
        sim.close()


if __name__ == "__main__":
    main()
