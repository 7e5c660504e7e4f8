"""Clocks on the real PostgreSQL: two runners (as two replicas would) claim due clocks with
SELECT … FOR UPDATE SKIP LOCKED and each clock fires exactly once; the schema migrates there too."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from hisguard.server.domain import cases, clocks, incidents
from hisguard.server.domain.clocks import ClockRunner, ManualClock
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import CaseClock, CaseEvent, Notification
from tests.support.peers import need

ADMIN = "host=127.0.0.1 port=5432 dbname=postgres user=root connect_timeout=3"


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        import psycopg

        conn = psycopg.connect(ADMIN, autocommit=True)
    except Exception as exc:  # no server, no driver
        need(False, f"needs PostgreSQL on 127.0.0.1:5432 ({exc})")
        raise
    name = f"hisguard_clocks_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def _fields(i: int) -> dict:
    return {
        "key": f"host-{i}/ping.reachable",
        "host": f"host-{i}",
        "trigger": 1,
        "severity": "critical",
        "scope": "hospital",
        "department": None,
        "departments": ["门诊收费", "护士站"],
        "functions": ["outpatient_billing", "nurse_station"],
        "title_zh": f"主机 {i} 不可达",
        "title_en": f"Host {i} unreachable",
        "evidence": {},
    }


def test_two_replicas_fire_each_clock_once(pg_url: str) -> None:
    clock = ManualClock()
    clocks.use(clock)
    settings = ServerSettings.model_validate(
        {
            "sites": {
                "*": {
                    "contacts": {"a": {"email": "a@x.example"}, "b": {"email": "b@x.example"}},
                    "tiers": [["a"], ["b"]],
                }
            }
        }
    )
    cases.configure(settings)
    one, two = Database(pg_url), Database(pg_url)
    try:
        one.migrate()
        with one.session() as s:
            for i in range(60):
                inc = incidents.open_or_update(s, "renmin", None, _fields(i), clock.now())
                cases.sync(s, [inc.id], clock.now())
        clock.advance(timedelta(hours=4))
        runners = [ClockRunner(one, cases.on_clock), ClockRunner(two, cases.on_clock)]
        fired: list[list[int]] = [[], []]
        start = threading.Barrier(2)

        def run(i: int) -> None:
            start.wait()
            fired[i].extend(runners[i].tick())

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = fired[0] + fired[1]
        assert len(ids) == len(set(ids)) == 180  # response:1 and both continuity clocks of 60 cases
        with one.session() as s:
            assert s.scalar(select(func.count()).select_from(CaseClock).where(CaseClock.status == "fired")) == 180
            kinds = dict(s.execute(select(CaseEvent.kind, func.count()).group_by(CaseEvent.kind)).all())
            assert kinds["escalated"] == 60 and kinds["continuity"] == 120
            esc = s.scalar(select(func.count()).select_from(Notification).where(Notification.event == "escalated"))
            assert esc == 60  # one e-mail to tier 2 per case, none doubled
        assert runners[0].tick() == [] and runners[1].tick() == []
    finally:
        one.dispose()
        two.dispose()
        clocks.use(clocks.SystemClock())
        cases.configure(ServerSettings())
