"""What every dialect returns, in one shape, so the checks never see a vendor's catalogue."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TAG = re.compile(r"/\* hisguard:([a-z0-9_]+) \*/")

# States that start the plan (trigger 3) whatever the configuration says; OFFLINE only when unexpected.
BAD_STATES = frozenset({"SUSPECT", "RECOVERY_PENDING", "EMERGENCY", "INVALID"})


class DbError(Exception):
    """A database call failed; `kind` says how: unreachable, timeout, login, full, denied, missing, query.

    `full` is a server refusing a login because its connections (or the login's, or the database's)
    are used up: every HIS client is refused as well, so it is an incident, not the probe's problem.
    `denied` is a missing privilege, `missing` an object that does not exist (both: "cannot verify").
    `scope` says what is full (server, database NAME, login NAME, host).
    """

    def __init__(self, kind: str, message: str, scope: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.scope = scope


@dataclass
class DbInfo:
    """One database as the server lists it."""

    name: str
    state: str = "ONLINE"  # ONLINE, RESTORING, RECOVERING, RECOVERY_PENDING, SUSPECT, EMERGENCY, OFFLINE…
    recovery_model: str | None = None  # SQL Server: FULL, BULK_LOGGED, SIMPLE
    collation: str | None = None
    log_used_percent: float | None = None
    log_reuse_wait: str | None = None
    checkdb_age_min: float | None = None  # None: the server does not say
    checkdb_never: bool = False


@dataclass
class BackupAges:
    """Minutes since the last full / differential / log backup (None: never)."""

    recovery_model: str | None
    full_min: float | None
    diff_min: float | None
    log_min: float | None


@dataclass
class Corruption:
    """Damaged pages and I/O errors seen for one database."""

    suspect_pages: list[dict[str, Any]] = field(default_factory=list)
    checksum_failures: int = 0
    errors: list[str] = field(default_factory=list)  # error-log lines (825 read retries)


@dataclass
class ServerFacts:
    version: str
    uptime_s: float | None
    # What this login cannot see, in its own words (e.g. other logins' sessions without pg_monitor).
    blind_spots: list[str] = field(default_factory=list)
    sees_all_sessions: bool = True  # lock holders' login/host/program/statement are visible
    sees_all_definitions: bool = True  # a table missing from the catalogue is gone, not hidden


@dataclass
class TableStats:
    """One table as the catalogue's statistics describe it: the first signal, never the verdict on a loss."""

    rows: int | None  # the statistics' row estimate (None: never measured, e.g. reltuples -1)
    identity: str | None = None  # changes when the table is dropped and re-created (oid, object_id, CREATE_TIME)
    storage: str | None = None  # changes when its data is rewritten: TRUNCATE, VACUUM FULL (PostgreSQL relfilenode)
    live: int | None = None  # PostgreSQL n_live_tup: moves with every committed insert/delete
    deletes: int | None = None  # rows deleted since the statistics were reset (PostgreSQL n_tup_del)
    changes: int | None = None  # a counter every write moves (cache key of an exact count)
    modified_since_analyze: int | None = None
    emptied: bool = False  # no pages / statistics reset: truncated, re-created, or never analyzed
    autovacuum_off: bool = False


@dataclass
class LockWait:
    """A session waiting for a lock, and the sessions it waits for."""

    waiter: str
    blockers: list[str]
    wait_s: float | None  # None: the server does not say how long
    table: str | None = None  # schema.table waited on, when the server names it
    kind: str = "row"  # row, table (metadata / relation lock), other
    database: str | None = None  # where the table is


@dataclass
class Session:
    """A session as far as this login may see it (None: hidden or not reported by this server)."""

    id: str
    login: str | None = None
    host: str | None = None
    program: str | None = None
    database: str | None = None
    state: str | None = None  # active, idle in transaction, sleeping…
    xact_s: float | None = None  # age of its open transaction
    idle_s: float | None = None  # time since its last statement ended (idle in transaction)
    statement: str | None = None  # its current or last statement, truncated
    tables: list[str] = field(default_factory=list)  # tables it holds write or table locks on
    locks_held: int | None = None  # table locks its open transaction holds (any mode: even a read blocks DDL)
    writes: bool | None = None  # its open transaction has written (holds row locks)
    waiting: bool = False
    probable: bool = False  # named by inference (no lock owner view on this server)

    def who(self) -> str:
        """login@host, program — for titles; what the server hides is marked, not guessed."""
        login = self.login or "?"
        text = f"{login}@{self.host}" if self.host else login
        return f"{text}, {self.program}" if self.program else text


@dataclass
class ConnectionUse:
    """Connections in use against one limit: the server's, a database's or a login's."""

    scope: str  # server, database, login
    name: str  # "" for the server
    in_use: int | None  # None: this login cannot count them
    limit: int | None  # None: no limit (or unknown)


@dataclass
class Activity:
    """Sessions, locks and connections: what a frozen or saturated server looks like."""

    waits: list[LockWait] = field(default_factory=list)
    sessions: dict[str, Session] = field(default_factory=dict)
    long_transactions: list[Session] = field(default_factory=list)
    connections: list[ConnectionUse] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # counters of refused logins (cumulative)
    waits_without_detail: int | None = None  # a lock-wait counter when the waits themselves are hidden


class Query:
    """Runs tagged statements on one connection, counting them and honouring the deadline."""

    def __init__(self, conn: Any, deadline: float, counter: list[int]) -> None:
        self.conn = conn
        self.deadline = deadline
        self.counter = counter

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        if time.monotonic() > self.deadline:
            raise DbError("timeout", "deadline reached before all statements ran")
        cur = self.conn.cursor()
        try:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, tuple(params))
            self.counter[0] += 1
            if cur.description is None:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            cur.close()


def id_list(ids: list[str]) -> str:
    """Session ids as a literal list for IN (…): digits only, whatever the caller passed."""
    return ", ".join(str(int(i)) for i in ids if i.isdigit())


def quote_brackets(name: str) -> str:
    """T-SQL QUOTENAME: [name] with ] doubled."""
    return "[" + name.replace("]", "]]") + "]"


def split_table(name: str, default_schema: str) -> str:
    """'schema.table' as written in the config, or 'table' in the default schema."""
    return name if "." in name else f"{default_schema}.{name}"
