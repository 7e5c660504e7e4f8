#!/usr/bin/env python3
"""From a critical report's arrival to plan activation and to the first notification delivered.

A real `hisguard-server run` process (SQLite by default, or --db URL), a real SMTP server (aiosmtpd)
in this process as tier 1's mailbox. Each round posts one critical trigger-1 report as an agent
would, then waits for the activation e-mail. Prints p50/p95/max of:
  - activation: the plan instance's activated_at minus the moment the POST was sent;
  - first notification: the e-mail's arrival at the SMTP server minus the same moment;
for reports one at a time, and for a burst of reports sent together. Target: p95 under 2 s.
Usage: bench/bench_activation.py [--rounds 40] [--burst 20] [--db URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import ServerProc, free_port, wait_until  # noqa: E402


class Mailbox:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}  # subject marker → arrival time
        self.lock = threading.Lock()
        self.port = free_port()
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                at = time.time()
                msg = message_from_bytes(envelope.original_content, policy=policy.default)
                subject = str(msg["Subject"])
                marker = subject.rsplit("#", 1)[-1].split()[0] if "#" in subject else ""
                with box.lock:
                    box.arrived.setdefault(marker, at)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()


def report(key: str, marker: str) -> dict[str, Any]:
    return {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": key,
        "state": "open",
        "trigger": 1,
        "severity": "critical",
        "scope": "hospital",
        "host": "core-sw",
        "departments": ["门诊挂号", "门诊收费"],
        "functions": ["outpatient_registration", "outpatient_billing"],
        "title_zh": f"核心交换机不可达 #{marker}",
        "title_en": f"Core switch unreachable #{marker}",
        "observed_at": datetime.now(timezone.utc).isoformat(),
        "evidence": {},
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def show(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"  {name:<28} n={len(ms):<4} p50 {statistics.median(ms):7.1f} ms   p95 {pct(ms, 0.95):7.1f} ms   "
        f"max {max(ms):7.1f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    args = ap.parse_args()

    mailbox = Mailbox()
    tmp = Path(tempfile.mkdtemp(prefix="hisguard-bench-activation-"))
    config = f"""
[server.notify]
smtp_port = {mailbox.port}
[server.sites."*"]
tiers = [["duty"]]
[server.sites."*".contacts.duty]
email = "duty@vendor.example"
"""
    server = ServerProc(tmp, db_url=args.db, extra_config=config).start()
    token = server.agent_token("bench-agent", f"bench-{uuid.uuid4().hex[:6]}")
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    sent: dict[str, float] = {}

    def post(marker: str) -> None:
        body = {"agent": "bench-agent", "version": "bench", "items": [report(f"bench/{marker}", marker)]}
        sent[marker] = time.time()
        r = client.post("/api/v1/reports", json=body)
        r.raise_for_status()

    try:
        post("warmup")
        wait_until(lambda: "warmup" in mailbox.arrived, 30, what="warm-up e-mail")
        singles = [f"s{i}" for i in range(args.rounds)]
        for m in singles:
            post(m)
            wait_until(lambda m=m: m in mailbox.arrived, 30, interval=0.005, what=f"e-mail {m}")
            time.sleep(0.05)
        burst = [f"b{i}" for i in range(args.burst)]
        with ThreadPoolExecutor(max_workers=len(burst) or 1) as pool:
            list(pool.map(post, burst))
        wait_until(lambda: all(m in mailbox.arrived for m in burst), 60, what="burst e-mails")

        activated: dict[str, float] = {}
        for case in server.get("/cases", limit=1000):
            marker = case["title"]["en"].rsplit("#", 1)[-1]
            if case["plan"]:
                activated[marker] = datetime.fromisoformat(case["plan"]["activated_at"]).timestamp()
        print(
            f"hisguard plan activation ({'SQLite' if not args.db else args.db.split(':')[0]}, real server, real SMTP)"
        )
        for label, markers in (("one report at a time", singles), (f"burst of {len(burst)} together", burst)):
            if not markers:
                continue
            print(label + ":")
            show("report → plan activated", [activated[m] - sent[m] for m in markers])
            show("report → first e-mail", [mailbox.arrived[m] - sent[m] for m in markers])
    finally:
        client.close()
        server.stop()
        mailbox.controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
