"""The PostgreSQL backend: selected by URL, migrated by the same Alembic scripts, ingest idempotent,
and a database that goes away answered with 503 (the agent keeps its data), never 2xx or 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, select

from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Base, Incident, Receipt
from tests.support import pg
from tests.support.procs import ServerProc
from tests.support.reports import incident


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg.database("hisguard_pg") as url:
        yield url


def test_fresh_database_migrates_to_every_table_of_the_models(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        assert db.engine.dialect.name == "postgresql" and db.engine.dialect.driver == "psycopg"
        db.migrate()
        db.migrate()  # a second start finds nothing to do
        tables = set(inspect(db.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        indexes = {ix["name"]: ix for ix in inspect(db.engine).get_indexes("incidents")}
        assert indexes["ux_incidents_open_key"]["unique"]
        with db.session() as s:
            assert s.scalars(select(Receipt)).all() == []
    finally:
        db.dispose()


def test_server_on_postgres_stores_each_report_once_and_503s_when_the_database_is_gone(
    pg_url: str, tmp_path: Path
) -> None:
    srv = ServerProc(tmp_path / "srv", db_url=pg_url).start()
    try:
        token = srv.agent_token("ws-01", "renmin")
        headers = {"Authorization": f"Bearer {token}"}
        batch = {"agent": "ws-01", "version": "t", "items": [incident(f"k{i}") for i in range(5)]}
        r1 = httpx.post(f"{srv.url}/api/v1/reports", json=batch, headers=headers, timeout=30)
        r2 = httpx.post(f"{srv.url}/api/v1/reports", json=batch, headers=headers, timeout=30)
        assert r1.status_code == r2.status_code == 200
        assert r1.json()["duplicates"] == 0 and r2.json()["duplicates"] == 5
        assert len(srv.incidents()) == 5
        # The database is dropped under the running server: nothing can be stored, so no 2xx.
        conn = pg.admin()
        name = pg_url.rsplit("/", 1)[1]
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]
        more = {"agent": "ws-01", "version": "t", "items": [incident("k-late")]}
        r3 = httpx.post(f"{srv.url}/api/v1/reports", json=more, headers=headers, timeout=30)
        assert r3.status_code == 503, r3.text
        assert r3.headers["retry-after"]
        conn = pg.admin()
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]
    finally:
        srv.stop()


def test_server_pointed_at_a_closed_port_refuses_to_start_rather_than_accept(tmp_path: Path) -> None:
    from tests.support.procs import free_port

    url = f"postgresql+psycopg://root@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(Exception):  # noqa: B017 — the token command (and the server) cannot reach it
        ServerProc(tmp_path / "srv", db_url=url)
    db = Database(url)
    with pytest.raises(Exception, match="connect"), db.session() as s:
        s.scalars(select(Incident)).all()
    db.dispose()
