#!/usr/bin/env python3
"""Trigger-5 signals: how fast and how cheap (one run, this machine).

Prints:
  1. canary trip latency, change → observation handed to the agent, inotify vs polling (20 trips each);
  2. clamd scanning of a folder of new files through the probe (one IDSESSION) vs `clamdscan` on the same
     folder (needs clamd/clamdscan from Debian; a custom database, as in the tests);
  3. following a GBK antivirus log: lines parsed per second through the probe's log path;
  4. outbreak correlation: time per detection batch on a site with many detection incidents (SQLite).
Usage: bench/bench_trigger5.py [--files 500] [--lines 100000]
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
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hisguard.checks import antivirus, canary  # noqa: E402
from hisguard.checks.base import ProbeContext  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def canary_latency(mode: str, trips: int) -> list[float]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i in range(trips):
            folder, state = root / f"f{i}", root / f"s{i}"
            folder.mkdir()
            state.mkdir()
            cfg = canary.Config(name="b", folders=[folder], mode=mode, names=["门诊收费日报表.csv"])
            ctx = ProbeContext(host="h", state_dir=state)
            seen = asyncio.Event()
            when: list[float] = []

            def emit(obs, when=when, seen=seen) -> None:
                if any(o.ok is False for o in obs):
                    when.append(time.perf_counter())
                    seen.set()

            await canary.probe(cfg, ctx)
            task = asyncio.create_task(canary.watch(cfg, ctx, emit))
            await asyncio.sleep(0.05 + (i % 5) * 0.037)  # land at different points of the poll cycle
            target = folder / "门诊收费日报表.csv"
            t0 = time.perf_counter()
            with target.open("r+b") as f:
                f.write(os.urandom(64))
            await asyncio.wait_for(seen.wait(), 5)
            out.append((when[0] - t0) * 1000)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return out


def clamd_scan(files: int) -> None:
    clamd = shutil.which("clamd") or ("/usr/sbin/clamd" if os.path.exists("/usr/sbin/clamd") else None)
    if clamd is None:
        print("  2. clamd not installed: skipped (apt-get install clamav-daemon clamdscan)")
        return
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "db").mkdir()
        (root / "db" / "t.hdb").write_text("44d88612fea8a8f36de82e1278abb02f:68:Test.EICAR\n")
        sock = root / "clamd.sock"
        conf = root / "clamd.conf"
        conf.write_text(f"DatabaseDirectory {root / 'db'}\nLocalSocket {sock}\nForeground yes\nLogFile {root / 'l'}\n")
        proc = subprocess.Popen([clamd, f"--config-file={conf}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if antivirus.clamd_command(str(sock), "PING", 1) == b"PONG\0":
                        break
                except OSError:
                    time.sleep(0.05)
            folder = root / "share"
            folder.mkdir()
            for i in range(files):
                (folder / f"处方{i:05d}.txt").write_bytes(os.urandom(2048))
            state = root / "state"
            state.mkdir()
            cfg = antivirus.Config(
                name="av",
                timeout=120,
                interval=120,
                clamd=antivirus.ClamdSource(socket=str(sock), scan_paths=[folder], max_files=files),
            )
            t0 = time.perf_counter()
            obs = antivirus._round(cfg, ProbeContext(host="h", state_dir=state))
            first = time.perf_counter() - t0
            scanned = next(o for o in obs if o.check == "av.sources").detail["scanned"]
            t0 = time.perf_counter()
            antivirus._round(cfg, ProbeContext(host="h", state_dir=state))
            again = time.perf_counter() - t0
            peer = shutil.which("clamdscan")
            line = ""
            if peer:
                pconf = root / "clamdscan.conf"
                pconf.write_text(f"LocalSocket {sock}\n")
                t0 = time.perf_counter()
                subprocess.run([peer, f"--config-file={pconf}", "--no-summary", str(folder)], capture_output=True)
                line = f"; clamdscan (same folder, one SCAN): {time.perf_counter() - t0:.2f}s"
            print(
                f"  2. clamd: {scanned} new files scanned in {first:.2f}s ({scanned / first:.0f} files/s); "
                f"unchanged folder next round {again * 1000:.0f} ms{line}"
            )
        finally:
            proc.terminate()
            proc.wait(10)


def log_rate(lines: int) -> None:
    pattern = (ROOT / "tests" / "data" / "avlogs" / "pattern.txt").read_text(encoding="utf-8").strip()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        log = root / "av.log"
        log.write_bytes(b"")
        state = root / "state"
        state.mkdir()
        cfg = antivirus.Config(
            name="av", logs=[antivirus.LogSource(name="x", path=log, pattern=pattern, encoding="gbk")]
        )
        ctx = ProbeContext(host="h", state_dir=state)
        antivirus._round(cfg, ctx)
        body = []
        for i in range(lines):
            if i % 100 == 0:
                body.append(
                    f"2026-11-27 10:00:00 [实时防护] 发现病毒 病毒名:Trojan.Win32.A.{i} "
                    f"文件:C:\\病历\\{i}.exe 处理结果:已隔离"
                )
            else:
                body.append(f"2026-11-27 10:00:00 [系统] 病毒库升级成功 版本:2026.11.27.{i}")
        log.write_bytes(("\r\n".join(body) + "\r\n").encode("gbk"))
        t0 = time.perf_counter()
        rounds, n = 0, -1
        while True:  # a round reads at most 4 MiB; the rest waits for the next
            rounds += 1
            obs = antivirus._round(cfg, ctx)
            held = sum(1 for o in obs if o.check == "av.detection")
            if held == n:
                break
            n = held
        took = time.perf_counter() - t0
        print(
            f"  3. GBK log: {lines} lines ({log.stat().st_size / 2**20:.1f} MiB) in {took:.2f}s = "
            f"{lines / took:,.0f} lines/s, {n} detections ({rounds} rounds, the last finding nothing new)"
        )


def outbreak_cost(existing: int) -> None:
    from hisguard.server.domain import incidents, outbreak
    from hisguard.server.storage.db import Database

    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{d}/b.sqlite3")
        db.migrate()
        t = datetime.now(timezone.utc) - timedelta(days=1)
        with db.session() as s:
            for i in range(existing):  # a day of isolated detections, one every few minutes
                fields = {
                    "key": f"ws-{i}/av.detection/d{i}",
                    "host": f"ws-{i % 300}",
                    "trigger": 5,
                    "severity": "routine",
                    "scope": "host",
                    "department": None,
                    "departments": [],
                    "functions": [],
                    "title_zh": "x",
                    "title_en": "x",
                    "evidence": {"check": "av.detection", "threat": "T", "file": "f"},
                }
                inc = incidents.open_or_update(s, "renmin", None, fields, t + timedelta(minutes=11 * i))
                inc.status = "resolved"
        times = []
        with db.session() as s:
            for i in range(50):
                fields = {
                    "key": f"new-{i}",
                    "host": f"new-{i % 2}",
                    "trigger": 5,
                    "severity": "routine",
                    "scope": "host",
                    "department": None,
                    "departments": [],
                    "functions": [],
                    "title_zh": "x",
                    "title_en": "x",
                    "evidence": {"check": "av.detection"},
                }
                inc = incidents.open_or_update(s, "renmin", None, fields, datetime.now(timezone.utc))
                t0 = time.perf_counter()
                outbreak.correlate(s, "renmin", [inc.id])
                times.append((time.perf_counter() - t0) * 1000)
        db.dispose()
        print(
            f"  4. outbreak correlation per batch with {existing} past detections on the site: "
            f"median {statistics.median(times):.2f} ms, p95 {pct(times, 0.95):.2f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--trips", type=int, default=20)
    args = ap.parse_args()
    print("trigger 5 (virus) signals")
    for mode in ("inotify", "poll"):
        lat = asyncio.run(canary_latency(mode, args.trips))
        print(
            f"  1. canary trip ({mode:7}): median {statistics.median(lat):.1f} ms, p95 {pct(lat, 0.95):.1f} ms, "
            f"max {max(lat):.1f} ms over {len(lat)} rewrites"
        )
    clamd_scan(args.files)
    log_rate(args.lines)
    outbreak_cost(2000)


if __name__ == "__main__":
    main()
