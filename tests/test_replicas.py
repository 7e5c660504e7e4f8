"""Two `hisguard-server` replicas on the machine's PostgreSQL: agents send every batch to both at
once (a retry to the other replica after a lost reply) and alternate which one they call first.
Nothing is stored twice, each plan clock fires once, each notification goes out once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from hisguard.report import utcnow
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import CaseClock, CaseEvent, Incident, Notification, Receipt
from tests.support import pg
from tests.support.procs import ServerProc, wait_until
from tests.test_cases import SmtpSink

AGENTS = 4
BATCHES = 6
PER_BATCH = 5


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.stop()


def _config(smtp: SmtpSink) -> str:
    return f"""clock_interval = 0.2
[server.notify]
smtp_port = {smtp.port}
interval = 0.2
timeout = 5
[server.sites."*".contacts.a]
email = "a@vendor.example"
[server.sites."*".contacts.b]
email = "b@vendor.example"
[server.sites."*"]
tiers = [["a"], ["b"]]
"""


def _item(agent: str, n: int) -> dict:
    return {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": f"{agent}/host-{n}/ping.reachable",
        "state": "open",
        "trigger": 1,
        "severity": "critical",
        "scope": "hospital",
        "host": f"{agent}-host-{n}",
        "title_zh": f"主机 {n} 不可达",
        "title_en": f"Host {n} unreachable",
        "observed_at": utcnow().isoformat(),
    }


def test_two_replicas_same_reports_no_duplicates_clocks_and_notifications_once(tmp_path: Path, smtp: SmtpSink) -> None:
    with pg.database("hisguard_replicas") as url:
        extra = _config(smtp)
        one = ServerProc(tmp_path / "one", db_url=url, extra_config=extra).start()
        two = ServerProc(tmp_path / "two", db_url=url, extra_config=extra).start()
        db = Database(url)
        try:
            tokens = {f"agent-{i}": one.agent_token(f"agent-{i}", f"site-{i % 2}") for i in range(AGENTS)}
            statuses: list[int] = []
            sent_ids: set[str] = set()
            keys: set[str] = set()

            def post(url: str, token: str, batch: dict) -> None:
                r = httpx.post(
                    f"{url}/api/v1/reports", json=batch, headers={"Authorization": f"Bearer {token}"}, timeout=60
                )
                statuses.append(r.status_code)
                if r.status_code == 200:
                    assert sorted(r.json()["stored"]) == sorted(i["id"] for i in batch["items"])

            def agent(name: str) -> None:
                for b in range(BATCHES):
                    items = [_item(name, b * PER_BATCH + j) for j in range(PER_BATCH)]
                    batch = {"agent": name, "version": "t", "items": items}
                    sent_ids.update(i["id"] for i in items)
                    keys.update(i["key"] for i in items)
                    order = (one, two) if b % 2 == 0 else (two, one)  # agents alternate replicas
                    pair = [threading.Thread(target=post, args=(s.url, tokens[name], batch)) for s in order]
                    for t in pair:
                        t.start()
                    for t in pair:
                        t.join()

            threads = [threading.Thread(target=agent, args=(name,)) for name in tokens]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert statuses and all(code == 200 for code in statuses), Counter(statuses)
            assert len(statuses) == 2 * AGENTS * BATCHES
            with db.session() as s:
                assert set(s.scalars(select(Receipt.id))) == sent_ids
                rows = s.execute(select(Incident.site, Incident.key)).all()
                assert len(rows) == len(set(rows)) == len(keys) == AGENTS * BATCHES * PER_BATCH

            # Activation notifications: each (case, event, contact, channel) queued once and mailed once.
            def all_sent() -> bool:
                with db.session() as s:
                    n = s.scalar(select(func.count()).select_from(Notification))
                    sent = s.scalar(select(func.count()).select_from(Notification).where(Notification.status == "sent"))
                return bool(n) and n == sent

            wait_until(all_sent, 60, interval=0.3, what="every notification sent")
            # Every response deadline passes at once (moved in the database): both replicas' clock
            # runners race for them.
            with db.session() as s:
                s.execute(
                    update(CaseClock)
                    .where(CaseClock.status == "pending", CaseClock.name == "response:1")
                    .values(due_at=utcnow() - timedelta(seconds=1))
                )
                due = s.scalar(select(func.count()).select_from(CaseClock).where(CaseClock.name == "response:1"))
            assert due

            def fired() -> bool:
                with db.session() as s:
                    pending = s.scalar(
                        select(func.count())
                        .select_from(CaseClock)
                        .where(CaseClock.name == "response:1", CaseClock.status == "pending")
                    )
                return pending == 0

            wait_until(fired, 60, interval=0.3, what="response clocks fired")
            wait_until(all_sent, 60, interval=0.3, what="escalation mails sent")
            time.sleep(1.0)  # a doubled firing or sending would show within a few runner ticks
            with db.session() as s:
                escalated = Counter(s.scalars(select(CaseEvent.case_id).where(CaseEvent.kind == "escalated")).all())
                assert len(escalated) == due and set(escalated.values()) == {1}
                firers = set(s.scalars(select(CaseClock.fired_by).where(CaseClock.name == "response:1")))
                notes = s.execute(
                    select(Notification.case_id, Notification.event, Notification.contact, Notification.channel)
                ).all()
                assert len(notes) == len(set(notes))
                n_sent = s.scalar(select(func.count()).select_from(Notification).where(Notification.status == "sent"))
            assert len(firers) >= 1
            assert len(smtp.messages) == n_sent  # mailed exactly once each
            assert sum(1 for _, m in smtp.messages if "b@vendor.example" in str(m["To"])) >= due
        finally:
            db.dispose()
            one.stop()
            two.stop()
