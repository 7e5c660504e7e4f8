"""SNMP figures, side by side in one run, like for like (prints them; asserts nothing).

1. Warm vs warm: a 48-port switch's interface status (ifOperStatus, GETBULK walk) through the
   probe's one long-lived pysnmp engine, against net-snmp's C library in-process (ezsnmp, one
   session kept open), on the same snmpsim device.
2. Cold vs cold: the same walk by a fresh process each time — `python -c` with the probe's client,
   against net-snmp's `snmpbulkwalk` (what a cron-style poller pays each time).
3. A whole warm probe round of that switch (status, uplink counters, CPU/memory/temperature).
4. Agent memory, judged on the peak (VmHWM): `hisguard-agent run` with host+ping jobs, and with an SNMP job (four
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

try:
    import ezsnmp
except ImportError:  # the test extra installs it; without it the warm peer is reported missing
    ezsnmp = None

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_agent import agent_python  # noqa: E402
from hisguard.checks.base import ProbeContext  # noqa: E402
from hisguard.checks.snmp import Config, oids  # noqa: E402
from hisguard.checks.snmp.client import Credentials, Session  # noqa: E402
from hisguard.checks.snmp.polling import poll_device  # noqa: E402
from tests.data.snmp.gen import Switch, Ups  # noqa: E402
from tests.data.snmp.sim import SnmpSim, free_udp_port  # noqa: E402

ROUNDS = 40
COLD_ROUNDS = 10


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


def ezsnmp_figures(sim: SnmpSim) -> list[float] | None:
    """net-snmp's C library in-process, one session kept open: the warm like-for-like peer."""
    if ezsnmp is None:
        return None
    sess = ezsnmp.Session(hostname="127.0.0.1", port_number=sim.port, version=2, community="sw48", timeout=2,
                          retries=1, set_max_repeaters_to_num=64)  # fmt: skip
    sess.bulk_walk(oids.IF_OPER)
    out = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        rows = sess.bulk_walk(oids.IF_OPER)
        out.append((time.perf_counter() - t) * 1000)
        assert len(rows) == 48, len(rows)
    return out


COLD = (
    "import sys, asyncio; sys.modules['pysmi'] = None\n"
    "from hisguard.checks.snmp.client import Credentials, Session\n"
    "s = Session('127.0.0.1', {port}, Credentials('2c', community='sw48'), 2.0, 1)\n"
    "rows = asyncio.run(s.columns(['{oid}'], 64))['{oid}']\n"
    "assert len(rows) == 48, len(rows)\n"
)


def cold_hisguard_figures(sim: SnmpSim) -> list[float]:
    """A fresh Python process per walk, with the probe's client (as a one-shot poller would run it)."""
    code = COLD.format(port=sim.port, oid=oids.IF_OPER)
    out = []
    for _ in range(COLD_ROUNDS):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
    return out


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


def vm_hwm(pid: int) -> float:
    """The process's peak resident set (VmHWM), MiB: the kernel's own high-water mark, not a sample."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def agent_rss(python: str, config_text: str, seconds: float = 8.0) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(prefix="hg-bench-"))
    cfg = work / "agent.toml"
    cfg.write_text(config_text.replace("{state}", str(work / "state")), encoding="utf-8")
    # Run from the scratch directory: from the source tree, `-c` would import its hisguard/ instead.
    proc = subprocess.Popen([python, "-c", LAUNCH, "run", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=(work / "agent.log").open("wb"), cwd=work)  # fmt: skip
    try:
        p = psutil.Process(proc.pid)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError((work / "agent.log").read_text()[-2000:])
            time.sleep(0.2)
        return p.memory_info().rss / 2**20, vm_hwm(proc.pid)
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
        warm_peer = ezsnmp_figures(sim)
        cold_ours = cold_hisguard_figures(sim)
        walk = snmpbulkwalk_figures(sim)
        print("SNMP walk of a 48-port switch's interface status (ifOperStatus, GETBULK), snmpsim on 127.0.0.1:")
        print("  warm (a long-lived client in one process):")
        print(f"    hisguard, one pysnmp engine          {ms(status)}   (its first request {cold:.0f} ms)")
        if warm_peer:
            ratio = statistics.median(status) / statistics.median(warm_peer)
            print(f"    net-snmp C library (ezsnmp), session {ms(warm_peer)}")
            print(f"    ratio hisguard / ezsnmp              {ratio:.2f}x")
            result(
                "warm walk of a 48-port switch's ifOperStatus, warm vs warm (bench_snmp.py)",
                f"{statistics.median(status):.1f} ms ({ratio:.2f}×)",
                f"net-snmp in-process (ezsnmp): {statistics.median(warm_peer):.1f} ms",
                "≤ 3× net-snmp's C library",
                ratio <= 3,
            )
        else:
            print("    net-snmp C library (ezsnmp): not installed (pip install ezsnmp)")
        print("  cold (a fresh process for each walk):")
        print(f"    hisguard, python -c + probe client   {ms(cold_ours)}")
        if walk:
            ratio = statistics.median(cold_ours) / statistics.median(walk)
            print(f"    net-snmp snmpbulkwalk                {ms(walk)}")
            print(f"    ratio hisguard / snmpbulkwalk        {ratio:.2f}x")
            result(
                "cold walk (a fresh process each) of a 48-port switch's ifOperStatus (bench_snmp.py)",
                f"{statistics.median(cold_ours):.0f} ms ({ratio:.1f}×)",
                f"snmpbulkwalk: {statistics.median(walk):.1f} ms",
                "stated, no target (the agent polls warm)",
                True,
            )
        else:
            print("    net-snmp snmpbulkwalk: not installed (Debian package snmp)")
        print(f"  whole warm probe round of the switch   {ms(whole)}  (status, uplink counters, health tables)")
        base = AGENT
        with_snmp = AGENT + SNMP.format(port=sim.port, trap_port=free_udp_port())
        python = agent_python("snmp")
        now0, peak0 = agent_rss(python, base)
        now1, peak1 = agent_rss(python, with_snmp)
        print("Agent memory (hisguard-agent run, agent-only install, 8 s, rounds every 2 s), peak = VmHWM:")
        print(f"  host + ping jobs                      peak {peak0:6.1f} MiB (at the end {now0:.1f})")
        print(f"  + SNMP job, 4 devices, trap receiver  peak {peak1:6.1f} MiB (at the end {now1:.1f})  (target < 50)")
        result(
            "agent peak memory (VmHWM) with SNMP: 4 devices + trap receiver (bench_snmp.py)",
            f"{peak1:.1f} MiB (without SNMP: {peak0:.1f} MiB)",
            "",
            "< 50 MiB",
            peak1 < 50,
        )
    finally:
        sim.close()


if __name__ == "__main__":
    main()
