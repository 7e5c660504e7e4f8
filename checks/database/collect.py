"""One round's reading of the server: a few catalogue statements, in a worker thread, under a deadline."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from hisguard.checks.database.config import Config
from hisguard.checks.database.dialects.base import BackupAges, Corruption, DbError, DbInfo, Query, ServerFacts


@dataclass
class Snapshot:
    """What the server said this round, in the dialect-neutral shape the checks read."""

    server: ServerFacts
    databases: dict[str, DbInfo]
    backups: dict[str, BackupAges] | None
    corruption: dict[str, Corruption]
    columns: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # db → table → column → type
    rows: dict[str, dict[str, int | None]] = field(default_factory=dict)  # db → table → rows (None: unknown)
    anomalies: dict[str, int] = field(default_factory=dict)  # rule → anomalous rows
    errors: dict[str, str] = field(default_factory=dict)  # what could not be read, and why
    statements: int = 0
    elapsed_s: float = 0.0


def _connect(cfg: Config, password: str | None, database: str | None, deadline: float, counter: list[int]) -> Query:
    d = cfg.dialect_obj
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DbError("timeout", "deadline reached before connecting")
    conn = d.connect(
        cfg.host,
        cfg.port or d.default_port,
        cfg.user or d.default_user,
        password,
        database or "",
        min(cfg.connect_timeout, remaining),
        min(cfg.statement_timeout, remaining),
    )
    q = Query(conn, deadline, counter)
    try:
        d.setup(q, min(cfg.statement_timeout, max(0.1, deadline - time.monotonic())))
    except Exception as exc:
        _close(q)
        raise d.error(exc) from None
    return q


def _close(q: Query | None) -> None:
    if q is not None:
        with contextlib.suppress(Exception):
            q.conn.rollback()  # nothing to keep: the probe never writes
        with contextlib.suppress(Exception):
            q.conn.close()


def collect(cfg: Config, password: str | None, deadline: float, schema: bool = True) -> Snapshot:
    """Read the server (blocking). Raises DbError when the server cannot be reached or read at all."""
    d = cfg.dialect_obj
    started = time.monotonic()
    counter = [0]
    main_db = cfg.maintenance_database or d.maintenance_db
    sessions: dict[str | None, Query] = {}
    try:
        q = sessions[main_db] = _connect(cfg, password, main_db, deadline, counter)
        try:
            snap = Snapshot(
                server=d.server(q),
                databases=d.databases(q),
                backups=d.backups(q) if cfg.backups.enabled else None,
                corruption=d.corruption(q, cfg.read_error_log),
            )
        except Exception as exc:
            raise d.error(exc) from None
        wanted = [db for db in cfg.databases if db in snap.databases and snap.databases[db].state == "ONLINE"]
        for db in wanted:
            try:
                if d.per_database:
                    q = sessions.get(db) or sessions.setdefault(db, _connect(cfg, password, db, deadline, counter))
                if schema:
                    snap.columns[db] = d.columns(q, db)
                snap.rows[db] = d.row_counts(q, db)
            except Exception as exc:
                err = d.error(exc)
                if err.kind in ("timeout", "unreachable"):
                    raise err from None
                # No access to this database: say so, and conclude nothing about its tables.
                snap.errors[db] = str(err)
                snap.columns.pop(db, None)
                snap.rows.pop(db, None)
                continue
            rules = [r for r in cfg.anomalies if cfg.anomaly_database(r) == db]
            if rules:
                try:
                    d.use(q, db)
                except Exception as exc:
                    snap.errors[db] = str(d.error(exc))
                    continue
            for rule in rules:
                try:
                    snap.anomalies[rule.name] = _count(q, rule.query)
                except Exception as exc:
                    err = d.error(exc)
                    if err.kind in ("timeout", "unreachable"):
                        raise err from None
                    snap.errors[f"anomaly {rule.name}"] = str(err)
        snap.statements = counter[0]
        snap.elapsed_s = time.monotonic() - started
        return snap
    finally:
        for s in sessions.values():
            _close(s)


def _count(q: Query, sql: str) -> int:
    rows = q.rows(sql)
    if not rows:
        return 0
    value = next(iter(rows[0].values()))
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise DbError("query", f"anomaly query must return a count, got {value!r}") from None
