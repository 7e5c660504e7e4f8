"""Host page graphs over 1 h … 30 d: server time per request with a month of history (target p95 < 300 ms at 30 d).

Seeds an embedded SQLite server with two hosts' history in the shape the server keeps it: 29 days of
5-minute averages and the last day at one sample per 30 s heartbeat (11,232 rows each), and the
5-minute, 15-minute and hourly rollups its compaction writes. A host agent's
rows hold 14 values (CPU, memory, 3 disks, 3 ping targets and their round trips, a database login); an
agent that also polls a switch holds ~100 (20 ping targets, 5 services, 48 ports). Times GET
/hosts/N?range=… for a logged-in engineer in process (no network: the server's own time), and beside it
the same 30 days drawn from every stored sample (no rollups, no buckets: what the page did before
ranges) to show what they save.

    .venv/bin/python bench/bench_host_charts.py [--requests 10] [--days 30]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain import history, users, views
from hisguard.server.settings import SecuritySettings, ServerSettings
from hisguard.server.storage.models import Agent, AgentStatus, HealthSample
from hisguard.server.web import charts, timerange

TARGET_MS = 300.0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


PROFILES = {  # name → (ping targets, services, switch ports)
    "host agent": (3, 0, 0),
    "agent polling a switch": (20, 5, 48),
}


def sample(i: int, n: int | None, pings: int, services: int, ports: int) -> dict[str, float]:
    day = max(0.0, math.sin((i % 288) / 288 * 2 * math.pi))
    data: dict[str, float] = {"host.cpu/cpu": 10 + 60 * day, "host.memory/memory": 55 + 5 * day}
    for d in ("/", "/var", "/data"):
        data[f"host.disk/{d}"] = 60 + i / 1000
    for t in range(pings):
        data[f"ping.reachable/10.0.{t}.1"] = 0.0 if (i + t) % 97 else 0.2
        data[f"rtt:ping.reachable/10.0.{t}.1"] = 0.5 + t / 10 + day
    data["db.connect/his"] = 8 + 20 * day
    for k in range(services):
        data[f"service.answer/http://10.0.1.{k}/health"] = 5 + k + 10 * day
    for p in range(ports):
        data[f"snmp.interface/core/Gi1/0/{p}"] = 1
    if n is not None:
        data["_n"] = n
    return data


def seed(db: Any, name: str, shape: tuple[int, int, int], now: datetime, days: int) -> tuple[int, int, int]:
    """One host's history as the server keeps it: 5-minute averages, the last day as heartbeats."""
    with db.session() as s:
        agent = Agent(
            name=name.replace(" ", "-"), site="renmin", created_at=now, hospital_critical=False, last_seen=now
        )
        s.add(agent)
        s.flush()
        aid = agent.id
        snapshot = {"observations": [{"check": "host.cpu", "subject": "cpu", "value": 30, "limit": 95}]}
        s.add(AgentStatus(agent_id=aid, at=now, snapshot=snapshot))
    start, recent = now - timedelta(days=days), now - timedelta(days=1)
    old = (days - 1) * 288  # 5-minute averages of 10 heartbeats each
    rows = [
        {"agent_id": aid, "at": start + timedelta(minutes=5 * i), "data": sample(i, 10, *shape)} for i in range(old)
    ]
    rows += [
        {"agent_id": aid, "at": recent + timedelta(seconds=30 * i), "data": sample(i, None, *shape)}
        for i in range(2880)
    ]
    with db.session() as s:
        for k in range(0, len(rows), 2000):
            s.execute(HealthSample.__table__.insert(), rows[k : k + 2000])
    t = time.perf_counter()
    _, rollups, _ = history.rollup(db, now, budget=10**9)  # what the server's compaction pass writes
    print(f"   {name}: {rollups} rollups written in {time.perf_counter() - t:.1f} s")
    return aid, len(rows), len(rows[-1]["data"])


def time_ranges(client: TestClient, aid: int, requests: int) -> dict[str, tuple[float, float, int, float]]:
    results = {}
    for key in ("1h", "6h", "24h", "7d", "30d"):
        first = client.get(f"/hosts/{aid}?range={key}")
        assert first.status_code == 200
        points = max(len(m.split()) for m in re.findall(r'<polyline[^>]*points="([^"]+)"', first.text))
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            r = client.get(f"/hosts/{aid}?range={key}")
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        results[key] = (statistics.median(times), pct(times, 95), points, len(first.content) / 1024)
        print(
            f"   GET /hosts/{aid}?range={key:<4} p50 {results[key][0]:7.1f} ms  p95 {results[key][1]:7.1f} ms  "
            f"{points:4d} points a series  {results[key][3]:6.0f} KiB"
        )
    return results


def compare(db: Any, aid: int, now: datetime, runs: int) -> tuple[float, int, float]:
    """30 days drawn from every stored sample (no rollups, no buckets) and as the page draws them: query and SVG."""
    span = timerange.from_query({"range": "30d"}, now)
    prefixes = tuple(p for ps in views.CHARTS.values() for p in ps)
    naive, bucketed, points = [], [], 0
    for _ in range(runs):
        t = time.perf_counter()
        with db.session() as s:  # every stored sample, no rollups, no buckets
            stored = history._samples(s, aid, span.since, span.until, True)
        grouped: dict[str, dict[str, list[tuple[datetime, float]]]] = {c: {} for c in views.CHARTS}
        for at, data in stored:
            for name, value in data.items():
                if name.startswith(prefixes) and isinstance(value, (int, float)):
                    grouped[views.chart_of(name) or ""].setdefault(name, []).append((at, float(value)))
        _, drawn = charts.host_charts(grouped, span, None, "zh")
        naive.append((time.perf_counter() - t) * 1000)
        points = max(line.count for c in drawn.values() for line in c.lines)
        t = time.perf_counter()
        with db.session() as s:
            grouped = views.host_history(s, aid, span.since, span.until)
        charts.host_charts(grouped, span, None, "zh")
        bucketed.append((time.perf_counter() - t) * 1000)
    return statistics.median(naive), points, statistics.median(bucketed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-charts-"))
    settings = ServerSettings(data_dir=tmp, security=SecuritySettings(rate_per_token=100000, rate_burst=1000000))
    app = create_app(settings)
    with TestClient(app) as client:
        db = app.state.db
        now = utcnow()
        with db.session() as s:
            users.create_user(s, "bench", "engineer", "bench-password", now)
        seeded = {}
        for name, shape in PROFILES.items():
            t0 = time.perf_counter()
            seeded[name] = (seed(db, name, shape, now, args.days), time.perf_counter() - t0)
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        client.post("/login", data={"name": "bench", "password": "bench-password", "csrf": csrf}).raise_for_status()
        for name, ((aid, rows, size), took) in seeded.items():
            print(f"== {name}: {rows} history rows of {size} values, seeded in {took:.1f} s")
            results = time_ranges(client, aid, args.requests)
            naive_ms, naive_points, bucketed_ms = compare(db, aid, now, max(3, args.requests // 3))
            print(
                f"   30 d, query + SVG only: every stored sample {naive_ms:.0f} ms, {naive_points} points a series | "
                f"per-range buckets {bucketed_ms:.0f} ms, {results['30d'][2]} points a series"
            )
            p95 = results["30d"][1]
            row = {
                "metric": f"host page, {args.days} d of history, {name} ({size} values a row): "
                "GET /hosts/N?range=30d p95 server time",
                "hisguard": f"{p95:.0f} ms ({results['30d'][2]} points a series)",
                "peer": f"every stored sample drawn: {naive_ms:.0f} ms query+SVG, {naive_points} points",
                "target": f"< {TARGET_MS:.0f} ms",
                "met": p95 < TARGET_MS,
            }
            print("RESULT " + json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
