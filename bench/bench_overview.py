"""Overview page of the web console with 200 sites and 2,000 agents: server time per request (target < 300 ms).

Seeds an embedded SQLite server: 10 agents a site with heartbeats (some silent), open cases on a fifth
of the sites through the agents' report API (so the plan engine opens cases and clocks as in production).
Then times GET / for a logged-in engineer in process (no network: the server's own time) and prints p50/p95.

    .venv/bin/python bench/bench_overview.py [--sites 200] [--agents-per-site 10] [--requests 100]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient

from hisguard.report import utcnow
from hisguard.server.app import create_app
from hisguard.server.domain import users, views
from hisguard.server.domain.tokens import create_agent_token
from hisguard.server.settings import SecuritySettings, ServerSettings
from hisguard.server.storage.models import Agent, AgentStatus


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=200)
    ap.add_argument("--agents-per-site", type=int, default=10)
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-overview-"))
    # The bench is one caller hammering one page: lift the per-address rate limit, it is not what is measured.
    settings = ServerSettings(data_dir=tmp, security=SecuritySettings(rate_per_token=100000, rate_burst=1000000))
    app = create_app(settings)
    with TestClient(app) as client:
        db = app.state.db
        now = utcnow()
        t0 = time.perf_counter()
        tokens: dict[str, tuple[str, str]] = {}
        with db.session() as s:
            users.create_user(s, "bench", "engineer", "bench-password", now)
            for i in range(args.sites):
                site = f"site{i:03d}"
                for j in range(args.agents_per_site):
                    name = f"{site}-h{j:02d}"
                    if j == 0:
                        tokens[site] = (name, create_agent_token(s, name, site))
                        continue
                    silent = (i + j) % 37 == 0
                    seen = now - timedelta(minutes=30 if silent else 0.2)
                    a = Agent(name=name, site=site, created_at=now, last_seen=seen, interval_s=30.0)
                    s.add(a)
                    s.flush()
                    snap = {"observations": [{"check": "host.cpu", "subject": "cpu", "ok": True, "value": 12.0}]}
                    s.add(AgentStatus(agent_id=a.id, at=seen, snapshot=snap))
        severities = ("critical", "urgent", "routine")
        for i, (agent, token) in enumerate(tokens.values()):
            items: list[dict] = [{"type": "heartbeat", "observed_at": now.isoformat(), "interval_s": 30}]
            if i % 5 == 0:
                for k in range(2):
                    items.append(
                        {
                            "type": "incident",
                            "key": f"host/{agent}/fault{k}",
                            "state": "open",
                            "trigger": 1 + k,
                            "severity": severities[(i // 5 + k) % 3],
                            "scope": "host",
                            "host": agent,
                            "title_zh": "服务器故障",
                            "title_en": "Server fault",
                            "observed_at": now.isoformat(),
                        }
                    )
            r = client.post(
                "/api/v1/reports",
                json={"agent": agent, "version": "bench", "items": items},
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
        seeded = time.perf_counter() - t0
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = client.post("/login", data={"name": "bench", "password": "bench-password", "csrf": csrf})
        r.raise_for_status()
        first = client.get("/")
        tiles = first.text.count('class="tile ')
        red = first.text.count('class="tile sev-critical')
        page_times = []
        for _ in range(args.requests):
            t = time.perf_counter()
            r = client.get("/")
            page_times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        who = users.principal_of("bench", "engineer", None)
        query_times = []
        for _ in range(args.requests):
            t = time.perf_counter()
            with db.session() as s:
                views.overview(s, who, utcnow(), settings)
            query_times.append((time.perf_counter() - t) * 1000)
    print(f"seeded {args.sites} sites, {args.sites * args.agents_per_site} agents in {seeded:.1f} s")
    print(f"overview page: {tiles} tiles ({red} red), {len(first.content) / 1024:.0f} KiB")
    print(
        f"GET / server time over {args.requests} requests: p50 {statistics.median(page_times):.1f} ms, "
        f"p95 {pct(page_times, 95):.1f} ms, max {max(page_times):.1f} ms (target < 300 ms)"
    )
    print(
        f"  of which the overview query (views.overview): p50 {statistics.median(query_times):.1f} ms, "
        f"p95 {pct(query_times, 95):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
