#!/usr/bin/env python3
"""Service probe figures, side by side in one run (prints them; asserts nothing).

One agent (`hisguard-agent run`, agent-only install with the service extra, bench/.venv-agent) probes
200 HTTP targets and 50 DICOM C-ECHO / HL7 MLLP targets every round; prometheus-blackbox-exporter
(Debian package, http_2xx module as documented) probes the same 200 HTTP targets, all at once, as a
Prometheus scrape of 200 targets would ask it to. Printed:
  1. round time: the agent's 200-target HTTP job and 50-target DICOM/HL7 job (from its heartbeats),
     against blackbox_exporter's 200 concurrent /probe requests (wall time, and its own
     probe_duration_seconds);
  2. per-target latency (median, p90) as each tool measured it;
  3. resident memory: the agent with HTTP targets only, with HTTP + DICOM/HL7 (pynetdicom, python-hl7
     loaded), and blackbox_exporter after its rounds; CPU time per round.
Peers: uvicorn serving the 200 HTTP URLs, pynetdicom's Verification SCP (one AE for 25 called AE
titles), python-hl7's MLLP server on 25 ports, all on 127.0.0.1 in their own processes.

Run: .venv/bin/python bench/bench_service.py [--seconds 30] [--blackbox-rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_agent import agent_python, result, tree_rss  # noqa: E402
from tests.support.procs import AgentProc, ServerProc, free_port, wait_until  # noqa: E402

HTTP_TARGETS, DICOM_TARGETS, MLLP_TARGETS = 200, 25, 25


# -- peers (run in their own processes) -------------------------------------------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The 200 HTTP targets: /t/N answers 200 with a short body, as a health endpoint does."""
    if scope["type"] != "http":
        return
    body = b'{"status":"UP"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_pacs_and_lis() -> None:
    """pynetdicom's Verification SCP and python-hl7 MLLP listeners; prints their ports, serves until killed."""
    import hl7.mllp
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification
    from pynetdicom.transport import AssociationServer

    # socketserver's listen backlog is 5: 25 echoes at once would overflow it and wait for SYN retransmits
    # (1 s), timing the peer rather than the probe. A PACS serving a hospital listens with a deeper one.
    AssociationServer.request_queue_size = 128
    scp = AE(ae_title="PACS")
    scp.add_supported_context(Verification)
    scp.require_called_aet = False  # one SCP stands for 25 PACS nodes, each called by its own AE title
    scp.maximum_associations = 64
    dicom_port = free_port()
    scp.start_server(("127.0.0.1", dicom_port), block=False)

    async def ack(reader: Any, writer: Any) -> None:
        try:
            while True:
                msg = await reader.readmessage()
                writer.writemessage(msg.create_ack(ack_code="AA"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        ports = []
        for _ in range(MLLP_TARGETS):
            server = await hl7.mllp.start_hl7_server(ack, "127.0.0.1", 0)
            ports.append(server.sockets[0].getsockname()[1])
        print(json.dumps({"dicom": dicom_port, "mllp": ports}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Peers:
    def __init__(self) -> None:
        self.http_port = free_port()
        self.http = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.bench_service:app", "--host", "127.0.0.1",
             "--port", str(self.http_port), "--log-level", "warning", "--no-access-log", "--backlog", "2048"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.other = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--serve-peers"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.other.stdout is not None
        ports = json.loads(self.other.stdout.readline())
        self.dicom_port, self.mllp_ports = ports["dicom"], ports["mllp"]
        wait_until(self._http_up, 30, what="uvicorn")

    def _http_up(self) -> bool:
        try:
            return httpx.get(self.http_urls()[0], timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def http_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.http_port}/t/{i}" for i in range(HTTP_TARGETS)]

    def other_urls(self) -> list[str]:
        dicom = [f"dicom://PACS{i:02d}@127.0.0.1:{self.dicom_port}" for i in range(DICOM_TARGETS)]
        return dicom + [f"mllp://127.0.0.1:{p}" for p in self.mllp_ports]

    def close(self) -> None:
        for p in (self.http, self.other):
            p.terminate()
            p.wait(10)


# -- the agent -------------------------------------------------------------------------------------------


def agent_config(server: ServerProc, token: str, http: list[str], other: list[str]) -> str:
    def job(name: str, urls: list[str]) -> str:
        rows = "\n".join(f'  {{ url = "{u}", name = "svc {i}" }},' for i, u in enumerate(urls))
        return f'[[probe.service]]\nname = "{name}"\ninterval = 10\ntimeout = 9\ntargets = [\n{rows}\n]\n'

    text = f"""
[agent]
name = "bench-svc"
state_dir = "state"
heartbeat_interval = 2
[server]
url = "{server.url}"
token = "{token}"
{job("web", http)}
"""
    return text + (job("pacs-lis", other) if other else "")


def run_agent(tmp: Path, server: ServerProc, python: str, http: list[str], other: list[str],
              seconds: float) -> dict[str, Any]:  # fmt: skip
    name = "with-dicom-hl7" if other else "http-only"
    token = server.agent_token("bench-svc", "bench")
    agent = AgentProc(tmp / name, agent_config(server, token, http, other), python=python).start()
    assert agent.proc is not None
    proc = psutil.Process(agent.proc.pid)
    rounds: dict[str, dict[int, float]] = {"web": {}, "pacs-lis": {}}
    seen: dict[tuple[str, int, str], float] = {}  # (job, its round, target) → latency
    rss: list[float] = []
    try:
        agent_id = wait_until(lambda: next((a["id"] for a in server.get("/agents") if a["name"] == "bench-svc"
                                            and a["last_seen"]), None), 60, what="agent heartbeat")  # fmt: skip
        cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
        while time.monotonic() - t0 < seconds:
            rss.append(tree_rss(proc) / 2**20)
            snap = server.get(f"/agents/{agent_id}/health").get("snapshot") or {}
            probes = snap.get("probes") or {}
            for job, st in probes.items():
                if st.get("runs") and st.get("ok"):
                    rounds[job][st["runs"]] = st["ms"]
            for o in snap.get("observations") or []:
                if o.get("check") == "service.answer" and o.get("value") is not None:
                    job = o["job"]
                    seen[(job, probes.get(job, {}).get("runs", 0), o["subject"])] = o["value"]
            time.sleep(1.0)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - t0
        failing = [o for o in (snap.get("observations") or []) if o.get("ok") is False]
    finally:
        agent.stop()
    if "Traceback" in agent.output():
        print(agent.output()[-3000:], file=sys.stderr)
    runs = sum(len(r) for r in rounds.values() if r) or 1
    latencies = {job: [v for (j, _, _), v in seen.items() if j == job] for job in rounds}
    return {"rounds": {k: list(v.values()) for k, v in rounds.items()}, "latency": latencies, "rss_max": max(rss),
            "rss_avg": statistics.mean(rss), "cpu_per_round_ms": cpu / max(wall / 10, 1) * 1000,
            "failing": len(failing), "runs": runs}  # fmt: skip


# -- blackbox_exporter -------------------------------------------------------------------------------------


def run_blackbox(tmp: Path, urls: list[str], rounds: int) -> dict[str, Any] | None:
    exe = shutil.which("prometheus-blackbox-exporter")
    if not exe:
        print("prometheus-blackbox-exporter not installed (Debian package): no side-by-side figures")
        return None
    conf = tmp / "blackbox.yml"
    conf.write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n")
    port = free_port()
    proc = subprocess.Popen([exe, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ps = psutil.Process(proc.pid)
    base = f"http://127.0.0.1:{port}/probe"
    walls: list[float] = []
    durations: list[float] = []
    failed = 0
    rss: list[float] = []

    curl = shutil.which("curl")
    out_dir = tmp / "blackbox-replies"
    out_dir.mkdir()
    batch = tmp / "blackbox.curl"  # one curl, 200 requests at once: as a Prometheus scrape of 200 targets asks
    batch.write_text("".join(
        f'url = "{base}?module=http_2xx&target={quote(u, safe="")}"\noutput = "{out_dir}/{i}.txt"\n'
        for i, u in enumerate(urls)))  # fmt: skip

    def one_round() -> None:
        nonlocal failed
        t = time.perf_counter()
        if curl:
            subprocess.run([curl, "-s", "-Z", "--parallel-max", str(len(urls)), "-K", str(batch)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            replies = [(out_dir / f"{i}.txt").read_text() for i in range(len(urls))]
        else:  # a Python client instead: slower, so the wall time says more about it than the exporter
            with httpx.Client(timeout=30) as client:
                replies = [client.get(base, params={"module": "http_2xx", "target": u}).text for u in urls]
        walls.append((time.perf_counter() - t) * 1000)
        for text in replies:
            if re.search(r"^probe_success 1$", text, re.M) is None:
                failed += 1
            m = re.search(r"^probe_duration_seconds ([0-9.e+-]+)$", text, re.M)
            if m:
                durations.append(float(m.group(1)) * 1000)

    try:
        wait_until(lambda: proc.poll() is None and _up(base), 10, what="blackbox_exporter")
        one_round()  # warm: its first probes
        walls.clear()
        durations.clear()
        failed = 0
        cpu0 = sum(ps.cpu_times()[:2])
        for _ in range(rounds):
            one_round()
            rss.append(ps.memory_info().rss / 2**20)
            time.sleep(0.5)
        cpu = sum(ps.cpu_times()[:2]) - cpu0
    finally:
        proc.terminate()
        proc.wait(10)
    return {"walls": walls, "durations": durations, "failed": failed, "rss_max": max(rss),
            "cpu_per_round_ms": cpu / rounds * 1000, "client": "curl -Z" if curl else "httpx"}  # fmt: skip


def _up(base: str) -> bool:
    try:
        return httpx.get(base.removesuffix("/probe") + "/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- report ----------------------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30, help="how long each agent runs (rounds every 10 s)")
    ap.add_argument("--blackbox-rounds", type=int, default=10)
    ap.add_argument("--serve-peers", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_peers:
        serve_pacs_and_lis()
        return
    python = agent_python("service")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        peers = Peers()
        server = ServerProc(tmp / "server").start()
        try:
            http_only = run_agent(tmp, server, python, peers.http_urls(), [], args.seconds)
            both = run_agent(tmp, server, python, peers.http_urls(), peers.other_urls(), args.seconds)
            bbx = run_blackbox(tmp, peers.http_urls(), args.blackbox_rounds)
        finally:
            server.stop()
            peers.close()

    web, pl = both["rounds"]["web"], both["rounds"]["pacs-lis"]
    print(f"\n## One round ({HTTP_TARGETS} HTTP targets; {DICOM_TARGETS} DICOM C-ECHO + {MLLP_TARGETS} HL7 MLLP)\n")
    print("| what | rounds | median | max |")
    print("|---|---:|---:|---:|")
    print(f"| hisguard agent, {HTTP_TARGETS} HTTP targets (job round) | {len(web)} | {statistics.median(web):.0f} ms "
          f"| {max(web):.0f} ms |")  # fmt: skip
    print(f"| hisguard agent, {DICOM_TARGETS + MLLP_TARGETS} DICOM/HL7 targets (job round) | {len(pl)} | "
          f"{statistics.median(pl):.0f} ms | {max(pl):.0f} ms |")  # fmt: skip
    if bbx:
        print(f"| blackbox_exporter, {HTTP_TARGETS} concurrent /probe ({bbx['client']}, wall) | {len(bbx['walls'])} | "
              f"{statistics.median(bbx['walls']):.0f} ms | {max(bbx['walls']):.0f} ms |")  # fmt: skip
    print("\n## Per-target latency as each tool measured it\n")
    print("| what | samples | median | p90 |")
    print("|---|---:|---:|---:|")
    for label, xs in (("hisguard, HTTP", both["latency"]["web"]), ("hisguard, DICOM/HL7", both["latency"]["pacs-lis"]),
                      ("blackbox_exporter probe_duration_seconds", bbx["durations"] if bbx else [])):  # fmt: skip
        if xs:
            print(f"| {label} | {len(xs)} | {statistics.median(xs):.1f} ms | {pct(xs, 0.9):.1f} ms |")
    print("\n## Memory and CPU\n")
    print("| process | RSS max (MiB) | CPU per 10 s round (ms) | failing targets |")
    print("|---|---:|---:|---:|")
    print(f"| hisguard agent, {HTTP_TARGETS} HTTP | {http_only['rss_max']:.1f} | {http_only['cpu_per_round_ms']:.0f} "
          f"| {http_only['failing']} |")  # fmt: skip
    print(f"| hisguard agent, {HTTP_TARGETS} HTTP + {DICOM_TARGETS + MLLP_TARGETS} DICOM/HL7 | {both['rss_max']:.1f} "
          f"| {both['cpu_per_round_ms']:.0f} | {both['failing']} |")  # fmt: skip
    if bbx:
        print(f"| prometheus-blackbox-exporter, {HTTP_TARGETS} HTTP | {bbx['rss_max']:.1f} | "
              f"{bbx['cpu_per_round_ms']:.0f} | {bbx['failed']} |")  # fmt: skip
    peer = f"blackbox_exporter {statistics.median(bbx['walls']):.0f} ms" if bbx else ""
    result(f"service round, {HTTP_TARGETS} HTTP targets", f"{statistics.median(web):.0f} ms", peer)
    result(f"service round, {DICOM_TARGETS + MLLP_TARGETS} DICOM/HL7 targets", f"{statistics.median(pl):.0f} ms")
    result(f"agent RSS, {HTTP_TARGETS} HTTP + {DICOM_TARGETS + MLLP_TARGETS} DICOM/HL7 targets",
           f"{both['rss_max']:.1f} MiB (HTTP only {http_only['rss_max']:.1f} MiB)",
           f"blackbox_exporter {bbx['rss_max']:.1f} MiB" if bbx else "")  # fmt: skip


if __name__ == "__main__":
    main()
