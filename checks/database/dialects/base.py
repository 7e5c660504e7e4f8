"""What every dialect returns, in one shape, so the checks never see a vendor's catalogue."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TAG = re.compile(r"/\* hisguard:([a-z_]+) \*/")

# States that start the plan (trigger 3) whatever the configuration says; OFFLINE only when unexpected.
BAD_STATES = frozenset({"SUSPECT", "RECOVERY_PENDING", "EMERGENCY", "INVALID"})


class DbError(Exception):
    """A database call failed; `kind` says how: unreachable, timeout, login, query."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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


def quote_brackets(name: str) -> str:
    """T-SQL QUOTENAME: [name] with ] doubled."""
    return "[" + name.replace("]", "]]") + "]"


def split_table(name: str, default_schema: str) -> str:
    """'schema.table' as written in the config, or 'table' in the default schema."""
    return name if "." in name else f"{default_schema}.{name}"
