"""One round's reading of the server: a few catalogue statements, in a worker thread, under a deadline.

Only the first session and the server-wide statements decide whether the server can be read at
all. Everything after them — a database, the lock views, an exact count, an anomaly rule — that
fails or runs out of time is recorded as not verified this round (with why) and the round goes
on: a slow rule is that rule's problem, never "database unreachable".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hisguard.checks.database.config import Config
from hisguard.checks.database.dialects.base import (
    Activity,
    BackupAges,
    Corruption,
    DbError,
    DbInfo,
    LockWait,
    Query,
    ServerFacts,
    Session,
    TableStats,
)
from hisguard.checks.database.locks import UNKNOWN, chains, session_id
from hisguard.checks.database.rows import Plan

ANOMALY_TAG = "/* hisguard:anomaly */ "
Planner = Callable[[str, dict[str, TableStats]], Plan]


@dataclass
class Snapshot:
    """What the server said this round, in the dialect-neutral shape the checks read."""

    server: ServerFacts
    databases: dict[str, DbInfo]
    backups: dict[str, BackupAges] | None
    corruption: dict[str, Corruption]
    columns: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # db → table → column → type
    stats: dict[str, dict[str, TableStats]] = field(default_factory=dict)  # db → table → statistics
    rows: dict[str, dict[str, int | None]] = field(default_factory=dict)  # db → table → best known rows
    exact: dict[str, dict[str, int]] = field(default_factory=dict)  # db → table → exact count (this round or held)
    suspects: dict[str, dict[str, str]] = field(default_factory=dict)  # db → table → why the statistics were doubted
    rows_unverified: dict[str, dict[str, str]] = field(default_factory=dict)  # db → table → why it was not counted
    gone: dict[str, dict[str, bool | None]] = field(
        default_factory=dict
    )  # db → table missing → dropped? (None: hidden)
    databases_gone: dict[str, bool | None] = field(default_factory=dict)  # listed db not visible → dropped?
    anomalies: dict[str, int] = field(default_factory=dict)  # rule → anomalous rows
    activity: Activity | None = None  # None: could not be read (see unverified)
    unverified: dict[str, str] = field(default_factory=dict)  # "anomaly NAME", "locks", "activity", "db NAME" → why
    refused: dict[str, str] = field(default_factory=dict)  # "database NAME" → a login refused because it is full
    errors: dict[str, str] = field(default_factory=dict)  # what could not be read, and why
    statements: int = 0
    elapsed_s: float = 0.0


class _Round:
    """The sessions of one round and its time budget."""

    def __init__(self, cfg: Config, password: str | None, deadline: float) -> None:
        self.cfg = cfg
        self.d = cfg.dialect_obj
        self.password = password
        self.deadline = deadline
        self.counter = [0]
        self.sessions: dict[str | None, Query] = {}

    def connect(self, database: str | None) -> Query:
        d, cfg = self.d, self.cfg
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DbError("timeout", "deadline reached before connecting")
        conn = d.connect(
            cfg.host,
            cfg.port or d.default_port,
            cfg.user or d.default_user,
            self.password,
            database or "",
            min(cfg.connect_timeout, remaining),
            min(cfg.statement_timeout, remaining),
        )
        q = Query(conn, self.deadline, self.counter)
        try:
            d.setup(q, min(cfg.statement_timeout, max(0.1, self.deadline - time.monotonic())))
        except Exception as exc:
            _close(q)
            raise d.error(exc) from None
        self.sessions[database] = q
        return q

    def session(self, database: str | None) -> Query:
        q = self.sessions.get(database)
        if q is not None and not self.d.broken(q):
            return q
        if q is not None:
            _close(self.sessions.pop(database))
        return self.connect(database)

    def reconnect(self, database: str | None) -> None:
        """After a statement timed out or the session broke: a fresh session for what follows."""
        q = self.sessions.pop(database, None)
        if q is not None:
            _close(q)

    def room(self) -> bool:
        """Is there time left to start an optional statement and let it run to its own limit?"""
        return self.deadline - time.monotonic() > min(self.cfg.statement_timeout, 2.0) + 0.2

    def close(self) -> None:
        for s in self.sessions.values():
            _close(s)
        self.sessions.clear()


def _close(q: Query | None) -> None:
    if q is not None:
        with contextlib.suppress(Exception):
            q.conn.rollback()  # nothing to keep: the probe never writes
        with contextlib.suppress(Exception):
            q.conn.close()


def collect(
    cfg: Config,
    password: str | None,
    deadline: float,
    schema: bool = True,
    planner: Planner | None = None,
    expected: dict[str, list[str]] | None = None,
    exact_limit: int | None = None,
) -> Snapshot:
    """Read the server (blocking). Raises DbError when the server cannot be reached or read at all.

    `planner` says which tables' statistics are in doubt (they get an exact count, at most
    `exact_limit`, default cfg.exact_counts); `expected` lists the baseline's tables per database
    so a missing one can be told apart from one hidden from this login.
    """
    d = cfg.dialect_obj
    started = time.monotonic()
    r = _Round(cfg, password, deadline)
    main_db = cfg.maintenance_database or d.maintenance_db
    limit = cfg.exact_counts if exact_limit is None else exact_limit
    try:
        q = r.connect(main_db)
        try:
            snap = Snapshot(
                server=d.server(q),
                databases=d.databases(q),
                backups=d.backups(q) if cfg.backups.enabled else None,
                corruption=d.corruption(q, cfg.read_error_log),
            )
        except Exception as exc:
            raise d.error(exc) from None
        _activity(r, snap)
        waits: list[LockWait] = []
        if not d.locks_per_database:
            if snap.server.sees_all_sessions:
                waits += _locks(r, snap, None)
            elif snap.activity is not None and snap.activity.waits_without_detail is None:
                snap.unverified["locks"] = f"denied: lock waits are not visible to this login ({d.lock_privilege})"
        budget = [limit]
        for db in cfg.databases:
            info = snap.databases.get(db)
            if info is None:
                snap.databases_gone[db] = _optional(r, snap, main_db, f"db {db}", d.database_gone, db)
                continue
            if info.state != "ONLINE":
                continue
            _database(r, snap, db, schema, planner, (expected or {}).get(db, []), budget, waits)
        if waits:
            _sessions(r, snap, waits, main_db)
        snap.statements = r.counter[0]
        snap.elapsed_s = time.monotonic() - started
        return snap
    finally:
        r.close()


def _optional(r: _Round, snap: Snapshot, database: str | None, key: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one optional step; on failure record it as not verified (key → why) and return None."""
    if not r.room():
        snap.unverified[key] = "timeout: the round's deadline came before it could run"
        return None
    try:
        q = r.session(database)
    except Exception as exc:
        err = r.d.error(exc)
        if err.kind == "full" and database is not None:
            snap.refused[f"database {database}"] = str(err)
        snap.unverified[key] = f"{err.kind}: {err}"
        return None
    try:
        return fn(q, *args)
    except Exception as exc:
        err = r.d.error(exc)
        snap.unverified[key] = f"{err.kind}: {err}"
        if r.d.broken(q) or err.kind == "unreachable" or (err.kind == "timeout" and r.d.reconnect_after_timeout):
            r.reconnect(database)
        return None


def _activity(r: _Round, snap: Snapshot) -> None:
    cfg, main_db = r.cfg, r.cfg.maintenance_database or r.d.maintenance_db
    logins = list(cfg.logins)
    long_s = min(cfg.long_transaction, cfg.idle_in_transaction)
    act = _optional(r, snap, main_db, "activity", r.d.activity, cfg.databases, logins, long_s, snap.server)
    snap.activity = act


def _locks(r: _Round, snap: Snapshot, database: str | None) -> list[LockWait]:
    session = database if database is not None else (r.cfg.maintenance_database or r.d.maintenance_db)
    waits = _optional(r, snap, session, "locks" if database is None else f"locks {database}", r.d.lock_waits, database)
    if waits is None:
        return []
    for w in waits:
        if w.database is None:
            w.database = database if database is not None else (w.table.split(".", 1)[0] if w.table else None)
    if snap.activity is not None:
        snap.activity.waits += waits
    return waits


def _sessions(r: _Round, snap: Snapshot, waits: list[LockWait], main_db: str | None) -> None:
    """Who the heads of the chains are: login, host, program, transaction age, last statement."""
    if snap.activity is None:
        return
    if r.d.locks_per_database:
        return  # read per database together with the waits
    heads = [c.head for c in chains(waits) if c.head != UNKNOWN][:5]
    ids = sorted({session_id(h) for h in heads} | {w.waiter for w in waits})[:200]
    found = _optional(r, snap, main_db, "lock sessions", r.d.sessions, ids, None)
    if found:
        _merge_sessions(snap.activity.sessions, found, heads)


def _merge_sessions(into: dict[str, Session], found: dict[str, Session], heads: list[str]) -> None:
    for h in heads:
        s = found.get(session_id(h))
        if s is not None and h != session_id(h):
            s.probable = True
    into.update(found)


def _database(
    r: _Round,
    snap: Snapshot,
    db: str,
    schema: bool,
    planner: Planner | None,
    expected: list[str],
    budget: list[int],
    waits: list[LockWait],
) -> None:
    d, cfg = r.d, r.cfg
    session_key = db if d.per_database else (cfg.maintenance_database or d.maintenance_db)
    try:
        q = r.session(session_key)
        snap.stats[db] = d.table_stats(q, db)
        if schema:
            columns = d.columns(q, db)
            snap.columns[db] = {t: c for t, c in columns.items() if t in snap.stats[db]}  # base tables only
    except Exception as exc:
        err = d.error(exc)
        if err.kind == "full":
            snap.refused[f"database {db}"] = str(err)
        # No access to this database: say so, and conclude nothing about its tables.
        snap.errors[db] = str(err)
        snap.unverified[f"db {db}"] = f"{err.kind}: {err}"
        snap.columns.pop(db, None)
        if err.kind in ("timeout", "unreachable"):
            r.reconnect(session_key)
        return
    if schema:
        missing = [t for t in expected if t not in snap.columns[db]]
        for table in missing:
            snap.gone.setdefault(db, {})[table] = _optional(
                r, snap, session_key, f"table {db}/{table}", d.table_gone, db, table
            )
    if d.locks_per_database:
        found = _locks(r, snap, db)
        waits += found
        if found and snap.activity is not None:
            heads = [c.head for c in chains(found) if c.head != UNKNOWN][:5]
            ids = sorted({session_id(h) for h in heads})
            sessions = _optional(r, snap, session_key, f"lock sessions {db}", d.sessions, ids, db)
            if sessions:
                _merge_sessions(snap.activity.sessions, sessions, heads)
    _counts(r, snap, db, session_key, planner, budget)
    _anomalies(r, snap, db, session_key)


def _counts(
    r: _Round, snap: Snapshot, db: str, session_key: str | None, planner: Planner | None, budget: list[int]
) -> None:
    stats = snap.stats[db]
    best: dict[str, int | None] = {t: s.rows for t, s in stats.items()}
    plan = planner(db, stats) if planner is not None else Plan()
    snap.suspects[db] = dict(plan.reasons)
    exact = snap.exact.setdefault(db, {})
    for table, n in plan.cached.items():
        exact[table] = best[table] = n
    for table in plan.count:
        best[table] = None  # the statistics are in doubt: unknown unless counted
        if budget[0] <= 0:
            snap.rows_unverified.setdefault(db, {})[table] = "exact counts of this round used up (exact_counts)"
            continue
        budget[0] -= 1
        n = _optional(r, snap, session_key, f"count {db}/{table}", r.d.exact_count, db, table)
        reason = snap.unverified.pop(f"count {db}/{table}", None)
        if n is None:
            snap.rows_unverified.setdefault(db, {})[table] = reason or "not counted"
            continue
        exact[table] = best[table] = n
    snap.rows[db] = best


def _anomalies(r: _Round, snap: Snapshot, db: str, session_key: str | None) -> None:
    cfg, d = r.cfg, r.d
    rules = [a for a in cfg.anomalies if cfg.anomaly_database(a) == db]
    if not rules:
        return
    if _optional(r, snap, session_key, f"use {db}", lambda q: d.use(q, db) or True) is None:
        reason = snap.unverified.pop(f"use {db}")
        for rule in rules:
            snap.unverified[f"anomaly {rule.name}"] = reason
        return
    for rule in rules:
        key = f"anomaly {rule.name}"
        count = _optional(r, snap, session_key, key, _count, ANOMALY_TAG + rule.query)
        if count is not None:
            snap.anomalies[rule.name] = count
            continue
        snap.errors[key] = snap.unverified[key]
        if session_key not in r.sessions and not d.per_database and r.room():
            # A fresh session for the next rules starts in the maintenance database: back into this one.
            with contextlib.suppress(Exception):
                d.use(r.session(session_key), db)


def _count(q: Query, sql: str) -> int:
    rows = q.rows(sql)
    if not rows:
        return 0
    value = next(iter(rows[0].values()))
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise DbError("query", f"anomaly query must return a count, got {value!r}") from None
