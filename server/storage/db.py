"""Engine, sessions and migrations. SQLite (WAL) is the embedded default; PostgreSQL by URL.

sqlite:////var/lib/hisguard/hisguard.sqlite3?timeout=10      (seconds to wait for a write lock)
postgresql+psycopg://hisguard:…@db.vendor.example/hisguard   (several replicas may share it)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_LOCK_TIMEOUT = 10.0  # seconds a writer waits for SQLite's lock before ingest answers 503
# PostgreSQL errors after which the whole transaction may simply be run again.
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db_path = parsed.database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        timeout = float(parsed.query.get("timeout", SQLITE_LOCK_TIMEOUT))  # type: ignore[arg-type]
        engine = create_engine(
            parsed.difference_update_query(["timeout"]),
            connect_args={"timeout": timeout, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        # A lost database must fail a request in seconds (the agent keeps its data), not hang it.
        connect_args = {"connect_timeout": 5} if parsed.get_driver_name() == "psycopg" else {}
        return create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=10, connect_args=connect_args
        )
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (run on every start)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together: one migrates, the others wait, then find nothing to do.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(847001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")  # features may add independent branches off one revision


def retryable(exc: DBAPIError) -> bool:
    """A deadlock or serialization failure between replicas: running the transaction again is safe."""
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def claim_receipts(s: Session, items: Iterable[tuple[str, int | None]], now: datetime) -> set[str]:
    """Record report item ids (with their agents) in one statement; return those this transaction stored first.

    INSERT … ON CONFLICT DO NOTHING: a replica storing the same id at the same moment makes this
    one wait for its commit and then skip the id, so each item is applied exactly once.
    Ids go in sorted so two overlapping batches lock them in the same order (no deadlock).
    """
    from hisguard.server.storage.models import Receipt

    owner = dict(items)
    unique = sorted(owner)
    if not unique:
        return set()
    rows = [{"id": i, "agent_id": owner[i], "received_at": now} for i in unique]
    stmt = _claim_statement(s.get_bind().dialect.name)
    if stmt is None:  # other backends: look, then insert (the primary key still refuses a doubled id)
        seen = set(s.scalars(select(Receipt.id).where(Receipt.id.in_(unique))))
        fresh = [r for r in rows if r["id"] not in seen]
        if fresh:
            s.execute(Receipt.__table__.insert(), fresh)
        return {r["id"] for r in fresh}
    # executemany of one cached statement (SQLAlchemy sends it as a multi-row INSERT … RETURNING)
    return set(s.execute(stmt, rows).scalars())


def upsert_status(s: Session, rows: Iterable[tuple[int, datetime, dict[str, Any]]]) -> None:
    """Agents' latest health snapshots: insert or replace each agent's one row (never older over newer)."""
    from hisguard.server.storage.models import AgentStatus

    params = [{"agent_id": agent_id, "at": at, "snapshot": snapshot} for agent_id, at, snapshot in rows]
    if not params:
        return
    dialect = s.get_bind().dialect.name
    stmt = _UPSERT.get(dialect)
    if stmt is None and dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        table = AgentStatus.__table__
        ins = insert(table)
        stmt = _UPSERT[dialect] = ins.on_conflict_do_update(
            index_elements=["agent_id"],
            set_={"at": ins.excluded.at, "snapshot": ins.excluded.snapshot},
            where=table.c.at <= ins.excluded.at,
        )
    if stmt is not None:
        s.execute(stmt, params)
        return
    for p in params:
        row = s.get(AgentStatus, p["agent_id"])
        if row is None:
            s.add(AgentStatus(**p))
        elif row.at <= p["at"]:
            row.at, row.snapshot = p["at"], p["snapshot"]


_UPSERT: dict[str, Any] = {}
_CLAIM: dict[str, Any] = {}


def _claim_statement(dialect: str) -> Any:
    if dialect not in _CLAIM:
        from hisguard.server.storage.models import Receipt

        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            return None
        _CLAIM[dialect] = (
            insert(Receipt.__table__).on_conflict_do_nothing(index_elements=["id"]).returning(Receipt.__table__.c.id)
        )
    return _CLAIM[dialect]


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # SQLite has one writer: writers of this process queue here instead of spinning on the file lock.
        self._write_lock = threading.Lock()
        self.lock_timeout = float(make_url(url).query.get("timeout", SQLITE_LOCK_TIMEOUT))  # type: ignore[arg-type]

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s, s.begin():
            yield s

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A transaction that writes; on SQLite taken one at a time within this process."""
        if not self.is_sqlite:
            with self.session() as s:
                yield s
            return
        if not self._write_lock.acquire(timeout=self.lock_timeout):
            raise TimeoutError("another write to the SQLite database is taking too long")
        try:
            with self.session() as s:
                yield s
        finally:
            self._write_lock.release()

    def dispose(self) -> None:
        self.engine.dispose()
