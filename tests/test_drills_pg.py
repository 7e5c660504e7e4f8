"""Drills, schedule, dispatch, review and statistics on PostgreSQL (the multi-replica backend): the 0003
migration applies there and the same flow gives the same figures. Skips without PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hisguard.server.domain.clocks import ManualClock
from tests.support.peers import need
from tests.test_cases import (
    SITE,
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    site_settings,
    smtp_fixture,  # noqa: F401
    wait_for,
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        import psycopg

        admin = psycopg.connect("host=127.0.0.1 port=5432 dbname=postgres user=root connect_timeout=3", autocommit=True)
    except Exception as exc:  # no server or no driver
        need(False, f"needs PostgreSQL on 127.0.0.1:5432 ({exc})")
        raise
    name = f"hisguard_drills_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_drill_schedule_review_and_stats_on_postgresql(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path, pg_url: str
) -> None:
    settings = site_settings(smtp, http, tmp_path, city="洛阳").model_copy(
        update={"database_url": pg_url, "vendor_city": "郑州"}
    )
    srv = Server(settings, ManualClock())
    srv.token("li", "engineer")
    srv.token("mgr", "service_manager")
    try:
        srv.app.state.schedule_runner.tick()
        d = srv.post("/drills", "li", {"site": SITE, "trigger": 6}).json()
        wait_for(lambda: smtp.messages, what="drill e-mail")
        srv.clock.advance(minutes=3)
        srv.post(f"/cases/{d['case_id']}/acknowledge", "li")
        srv.post(f"/cases/{d['case_id']}/steps/activate", "mgr")
        assert srv.post(f"/cases/{d['case_id']}/dispatch", "li", {"engineer": "李工"}).status_code == 201
        closed = srv.post(f"/drills/{d['id']}/close", "mgr", {"improvements": ["备用机房钥匙交值班室"]}).json()
        steps = {st["key"]: st for st in closed["evaluation"]["steps"]}
        assert steps["activate"]["minutes"] == 3.0 and steps["activate"]["met"] is True
        md = srv.get(f"/cases/{d['case_id']}/review.md", "li").text
        assert "包车或服务车立即出发" in md and "备用机房钥匙交值班室" in md
        st = srv.get("/stats", "li", site=SITE).json()["sites"][0]
        assert st["cases"] == 0 and st["drills"]["done"] == 1
        srv.clock.advance(days=181)  # training was never held (due after 91 days); the drill is not yet due
        assert {r.kind for r in srv.app.state.schedule_runner.tick()} == {"training"}
        srv.clock.advance(days=2)  # 183 days after the drill
        assert {r.kind for r in srv.app.state.schedule_runner.tick()} == {"drill"}
        (site,) = [e for e in srv.get("/schedule", "li").json() if e["site"] == SITE]
        assert site["drill"]["overdue"] and site["drill"]["overdue_days"] == 1
        assert srv.app.state.schedule_runner.tick() == []
    finally:
        srv.close()
