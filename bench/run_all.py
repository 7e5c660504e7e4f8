#!/usr/bin/env python3
"""Run every bench/bench_*.py, one after the other, and write bench/RESULTS.md.

    sudo .venv/bin/python bench/run_all.py [--only NAME ...] [--skip NAME ...] [--timeout 1200]

Each benchmark runs with its own defaults, in its own process, with this interpreter. A
benchmark reports a figure for the summary table by printing a line

    RESULT {"metric": "...", "hisguard": "...", "peer": "...", "target": "...", "met": true}

("peer", "target" and "met" are optional); everything it prints is kept below the table, so
benchmarks that print no RESULT line still appear in full. Exit status 1 if a benchmark failed
or a stated target was missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
# Benchmarks whose peers set a slower pace than --timeout allows: bench_detection waits for
# Prometheus' and Zabbix' own alarms and resolved messages (about 13–14 minutes).
TIMEOUTS = {"bench_detection": 2400.0}


@dataclass
class Run:
    name: str
    rc: int | None
    seconds: float
    output: str
    results: list[dict[str, Any]] = field(default_factory=list)


def parse_results(output: str) -> list[dict[str, Any]]:
    found = []
    for line in output.splitlines():
        if not line.startswith("RESULT "):
            continue
        try:
            row = json.loads(line[len("RESULT ") :])
        except ValueError:
            continue
        if isinstance(row, dict) and "metric" in row:
            found.append(row)
    return found


def run_one(path: Path, timeout: float) -> Run:
    print(f"== {path.name}", flush=True)
    started = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, str(path)],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        rc, text = out.returncode, out.stdout + (f"\n[stderr]\n{out.stderr.strip()}" if out.stderr.strip() else "")
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, text = None, partial + f"\n[timed out after {timeout:g}s]"
    run = Run(path.stem, rc, time.monotonic() - started, text.strip(), parse_results(text))
    print(f"   {'ok' if rc == 0 else 'FAILED'} in {run.seconds:.0f}s, {len(run.results)} results", flush=True)
    return run


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(runs: list[Run], started: datetime) -> str:
    cpu = os.cpu_count()
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `bench/run_all.py` on {started:%Y-%m-%d %H:%M} UTC, one run, same machine: "
        f"{platform.system()} {platform.release()}, {cpu} CPU(s), Python {platform.python_version()}.",
        "",
        "| benchmark | metric | hisguard | peer (same run or stated default) | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        if not run.results:
            failed = "timed out" if run.rc is None else f"failed (exit {run.rc})"
            status = "no summary line" if run.rc == 0 else failed
            lines.append(f"| {run.name} | *see output below* |  |  |  | {status} |")
        for r in run.results:
            met = r.get("met")
            mark = "" if met is None else ("yes" if met else "**no**")
            if run.rc != 0:
                mark = f"failed (exit {run.rc})"
            lines.append(
                f"| {run.name} | {_cell(r.get('metric'))} | {_cell(r.get('hisguard'))} | {_cell(r.get('peer'))} "
                f"| {_cell(r.get('target'))} | {mark} |"
            )
    lines += ["", "## Output", ""]
    for run in runs:
        lines += [f"### {run.name} ({run.seconds:.0f} s)", "", "```", run.output, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=[], help="run only these (e.g. bench_detection)")
    ap.add_argument("--skip", nargs="*", default=[], help="skip these")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds allowed per benchmark")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    wanted = {n.removesuffix(".py") for n in args.only}
    skipped = {n.removesuffix(".py") for n in args.skip}
    benches = [p for p in sorted(HERE.glob("bench_*.py")) if (not wanted or p.stem in wanted) and p.stem not in skipped]
    if not benches:
        print("no benchmark selected", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    runs = [run_one(p, max(args.timeout, TIMEOUTS.get(p.stem, 0.0))) for p in benches]
    args.out.write_text(render(runs, started) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    bad = [r.name for r in runs if r.rc != 0] + [
        f"{r.name}: {x['metric']}" for r in runs for x in r.results if x.get("met") is False
    ]
    if bad:
        print("failed or missed: " + "; ".join(bad), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
