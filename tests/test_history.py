"""Health history: samples older than a day become 5-minute averages; past the retention they are pruned."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hisguard.server.app import create_app
from hisguard.server.domain import history
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Agent, HealthSample

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def _agent(db: Database, name: str = "his-db1") -> int:
    with db.session() as s:
        a = Agent(name=name, site="renmin", created_at=NOW, hospital_critical=False)
        s.add(a)
        s.flush()
        return a.id


def _seed(db: Database, agent_id: int, start: datetime, n: int, every_s: float = 30.0) -> None:
    with db.session() as s:
        for i in range(n):
            s.add(HealthSample(agent_id=agent_id, at=start + timedelta(seconds=i * every_s), data={"host.cpu/cpu": i}))


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    d.migrate()
    history._done_before.clear()
    yield d
    d.dispose()


def test_old_samples_become_five_minute_means_and_recent_ones_stay(db: Database) -> None:
    aid = _agent(db)
    old_start = NOW - timedelta(days=2)  # on a 5-minute boundary: 10 samples per bucket
    _seed(db, aid, old_start, 60)
    _seed(db, aid, NOW - timedelta(hours=2), 20)
    stats = history.compact(db, NOW, timedelta(days=30))
    assert {k: stats[k] for k in ("pruned", "read", "written")} == {"pruned": 0, "read": 60, "written": 6}
    with db.session() as s:
        rows = list(s.scalars(select(HealthSample).order_by(HealthSample.at)))
    old = [r for r in rows if r.at < NOW - timedelta(days=1)]
    assert [r.at for r in old] == [old_start + timedelta(minutes=5 * k) for k in range(6)]
    # Bucket k holds samples 10k..10k+9, whose mean is 10k + 4.5.
    assert [r.data["host.cpu/cpu"] for r in old] == [10 * k + 4.5 for k in range(6)]
    assert all(r.data["_n"] == 10 for r in old)
    assert len(rows) - len(old) == 20 and all("_n" not in r.data for r in rows if r not in old)
    # A second pass changes nothing.
    assert history.compact(db, NOW, timedelta(days=30))["written"] == 0
    history._done_before.clear()
    assert history.compact(db, NOW, timedelta(days=30))["written"] == 0


def test_a_late_sample_merges_into_its_average_by_weight() -> None:
    merged = history.merge([{"a": 10.0, "_n": 9}, {"a": 20.0, "b": 1.0}])
    assert merged == {"a": 11.0, "b": 1.0, "_n": 10.0}


def test_samples_past_the_retention_are_pruned(db: Database) -> None:
    aid = _agent(db)
    _seed(db, aid, NOW - timedelta(days=40), 10)
    _seed(db, aid, NOW - timedelta(days=3), 10)
    stats = history.compact(db, NOW, timedelta(days=30))
    assert stats["pruned"] == 10
    with db.session() as s:
        assert min(s.scalars(select(HealthSample.at))) >= NOW - timedelta(days=30)
        assert history.count(s, aid) == 1  # the 3-day-old ten in one bucket


def test_the_app_compacts_periodically(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, history_interval=0.2, history_retention_days=7)
    app = create_app(settings)
    with TestClient(app):
        db: Database = app.state.db
        aid = _agent(db)
        real_now = datetime.now(timezone.utc)
        _seed(db, aid, real_now - timedelta(days=10), 5)
        _seed(db, aid, real_now - timedelta(days=2), 30, every_s=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db.session() as s:
                if history.count(s, aid) <= 2:
                    break
            time.sleep(0.1)
        with db.session() as s:
            assert history.count(s, aid) <= 2  # 30 samples over 5 minutes: one or two buckets, the 10-day-old gone


def test_a_sample_stored_late_joins_its_bucket_on_the_next_pass(db: Database) -> None:
    aid = _agent(db)
    start = NOW - timedelta(days=2)
    _seed(db, aid, start, 10)
    history.compact(db, NOW, timedelta(days=30))
    with db.session() as s:  # an agent's spool delivered after an outage
        s.add(HealthSample(agent_id=aid, at=start + timedelta(seconds=7), data={"host.cpu/cpu": 15.5}))
    assert history.compact(db, NOW, timedelta(days=30))["written"] == 1
    with db.session() as s:
        rows = list(s.scalars(select(HealthSample).where(HealthSample.agent_id == aid)))
    assert len(rows) == 1 and rows[0].data == {"host.cpu/cpu": 5.5, "_n": 11.0}  # (4.5*10 + 15.5) / 11
