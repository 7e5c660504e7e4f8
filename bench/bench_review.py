#!/usr/bin/env python3
"""Review exports and contract-review statistics: how long a person waits for them.

In process, on SQLite (or --db URL), with the plan engine on a hand-moved clock: --cases real cases
over a year at one site (each reported, acknowledged after a varying delay, a third with an engineer
sent on site, all recovered) plus --drills drills. Prints the median and max of:
  - GET /stats for the site and the year (drills excluded);
  - GET /cases/{id}/review.md of a case with its full timeline;
  - GET /cases/{id}/review.pdf, the first call (font discovery) and the following ones, and the PDF size.
Usage: bench/bench_review.py [--cases 300] [--drills 4] [--rounds 5] [--db URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from hisguard.server.app import create_app  # noqa: E402
from hisguard.server.domain.clocks import ManualClock  # noqa: E402
from hisguard.server.domain.tokens import create_agent_token, create_engineer_token  # noqa: E402
from hisguard.server.settings import ServerSettings  # noqa: E402

SITE = "renmin"


def event(clock: ManualClock, key: str, state: str, scope: str, severity: str) -> dict[str, Any]:
    return {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": key,
        "state": state,
        "trigger": 1 + hash(key) % 6,
        "severity": severity,
        "scope": scope,
        "host": key.split("/")[0],
        "departments": ["门诊收费"] if scope == "department" else [],
        "functions": ["outpatient_billing"] if scope == "department" else [],
        "title_zh": "核心交换机 网络不可达",
        "title_en": "Core switch unreachable",
        "observed_at": clock.now().isoformat(),
        "evidence": {},
    }


def timed(fn: Any, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def result(metric: str, ms: list[float]) -> None:
    print(f"{metric}: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms ({len(ms)} runs)")
    print("RESULT " + json.dumps({"metric": metric, "hisguard": f"{statistics.median(ms):.0f} ms median"}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--drills", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    settings = ServerSettings.model_validate(
        {
            "data_dir": str(tmp),
            "database_url": args.db,
            "watchdog_interval": 600,
            "clock_interval": 60,
            "vendor_city": "郑州",
            # No contacts: notifications are not what is measured here (bench_activation.py measures them).
            "sites": {SITE: {"name_zh": "人民医院", "city": "洛阳"}},
            "security": {"rate_per_token": 100000, "rate_burst": 1000000},  # the set-up calls back to back
        }
    )
    clock = ManualClock()
    app = create_app(settings, clock)
    with TestClient(app) as client:
        with app.state.db.session() as s:
            agent = create_agent_token(s, "his-db-01", SITE)
            eng = create_engineer_token(s, "li", "engineer", None)
        ah, eh = {"Authorization": f"Bearer {agent}"}, {"Authorization": f"Bearer {eng}"}
        start = clock.now()
        t0 = time.perf_counter()
        last = 0  # the latest case with an engineer sent on site: the longest timeline
        for i in range(args.cases):
            scope, sev = [("hospital", "critical"), ("department", "urgent"), ("host", "routine")][i % 3]
            key = f"host{i}/ping.reachable/10.0.{i // 250}.{i % 250}"
            r = client.post(
                "/api/v1/reports",
                headers=ah,
                json={"agent": "his-db-01", "version": "b", "items": [event(clock, key, "open", scope, sev)]},
            )
            r.raise_for_status()
            listed = client.get("/api/v1/cases", headers=eh, params={"limit": 1})
            assert listed.status_code == 200, listed.text
            cid = listed.json()[0]["id"]
            clock.advance(minutes=2 + i % 40)
            client.post(f"/api/v1/cases/{cid}/acknowledge", headers=eh)
            client.post(f"/api/v1/cases/{cid}/steps/record", headers=eh)
            if i % 3 == 1:
                last = cid
                client.post(f"/api/v1/cases/{cid}/dispatch", headers=eh, json={"engineer": "李工"})
                clock.advance(hours=3)
                client.post(f"/api/v1/cases/{cid}/arrival", headers=eh)
            client.post(
                "/api/v1/reports",
                headers=ah,
                json={"agent": "his-db-01", "version": "b", "items": [event(clock, key, "resolved", scope, sev)]},
            )
            clock.advance(timedelta(days=365) / args.cases)
        for _ in range(args.drills):
            d = client.post("/api/v1/drills", headers=eh, json={"site": SITE, "trigger": 1}).json()
            clock.advance(minutes=5)
            client.post(f"/api/v1/drills/{d['id']}/close", headers=eh, json={})
        print(
            f"set-up: {args.cases} cases and {args.drills} drills in {time.perf_counter() - t0:.1f} s "
            f"({settings.db_url.split(':')[0]})"
        )

        params = {"site": SITE, "from": start.isoformat()}
        st = client.get("/api/v1/stats", headers=eh, params=params).json()["sites"][0]
        assert st["cases"] == args.cases and st["drills"]["done"] == args.drills, st
        result(
            f"GET /stats, one site, a year, {args.cases} cases",
            timed(lambda: client.get("/api/v1/stats", headers=eh, params=params).raise_for_status(), args.rounds),
        )
        md = client.get(f"/api/v1/cases/{last}/review.md", headers=eh).text
        rows = sum(1 for line in md.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit())
        result(
            f"GET review.md ({rows} timeline rows)",
            timed(lambda: client.get(f"/api/v1/cases/{last}/review.md", headers=eh).raise_for_status(), args.rounds),
        )
        first = timed(lambda: client.get(f"/api/v1/cases/{last}/review.pdf", headers=eh).raise_for_status(), 1)
        print(f"GET review.pdf, first call (finds and reads the CJK font): {first[0]:.0f} ms")
        result(
            "GET review.pdf (CJK font embedded)",
            timed(lambda: client.get(f"/api/v1/cases/{last}/review.pdf", headers=eh).raise_for_status(), args.rounds),
        )
        size = len(client.get(f"/api/v1/cases/{last}/review.pdf", headers=eh).content)
        print(f"review.pdf size: {size / 1024:.0f} KiB (font subset embedded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
