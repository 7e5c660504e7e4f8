"""The agent's durable state: the outbox of reports not yet stored by the server, and open incidents.

One SQLite file (WAL, synchronous=FULL): an incident event and the change to the set of open
incidents commit together, so a crash or power loss loses neither.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("hisguard.agent.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS active (
    key TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    conditions TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Pending:
    id: str
    kind: str
    body: dict[str, Any]


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM outbox").fetchone()
            return db
        except sqlite3.DatabaseError as exc:
            # A corrupt spool must not stop monitoring: keep it aside for inspection, start anew.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("agent state %s is unreadable (%s); moved to %s, starting a new one", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                p = Path(f"{path}{suffix}")
                if p.exists():
                    p.rename(Path(f"{aside}{suffix}"))
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            return db

    def close(self) -> None:
        self._db.close()

    # -- outbox ------------------------------------------------------------------------------
    def enqueue(self, body: dict[str, Any]) -> None:
        """Spool one report item; its own `id` identifies it here and at the server."""
        with self._tx():
            if body["type"] == "heartbeat":  # only the latest health snapshot is worth sending late
                self._db.execute("DELETE FROM outbox WHERE kind = 'heartbeat'")
            self._put(body)

    def _put(self, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (id, kind, body, created) VALUES (?, ?, ?, ?)",
            (str(body["id"]), body["type"], json.dumps(body, ensure_ascii=False), time.time()),
        )

    def peek(self, limit: int) -> list[Pending]:
        rows = self._db.execute("SELECT id, kind, body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [Pending(r[0], r[1], json.loads(r[2])) for r in rows]

    def delivered(self, ids: list[str]) -> int:
        with self._tx():
            return self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount

    def reject(self, item: Pending, reason: str) -> None:
        """The server refused this item for good: keep it on disk, out of the way of the rest."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO rejected (id, body, reason, at) VALUES (?, ?, ?, ?)",
                (item.id, json.dumps(item.body, ensure_ascii=False), reason, time.time()),
            )
            self._db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))

    def backlog(self) -> int:
        return self._db.execute("SELECT count(*) FROM outbox WHERE kind != 'heartbeat'").fetchone()[0]

    # -- open incidents ----------------------------------------------------------------------
    def active(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT key, signature, conditions, event FROM active").fetchall()
        return {
            r[0]: {"signature": r[1], "conditions": [tuple(c) for c in json.loads(r[2])], "event": json.loads(r[3])}
            for r in rows
        }

    def open_incident(self, key: str, signature: str, conditions: list[Any], event: dict[str, Any]) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO active (key, signature, conditions, event) VALUES (?, ?, ?, ?)",
                (key, signature, json.dumps(conditions), json.dumps(event, ensure_ascii=False)),
            )
            self._put(event)

    def resolve_incident(self, key: str, event: dict[str, Any]) -> None:
        with self._tx():
            self._db.execute("DELETE FROM active WHERE key = ?", (key,))
            self._put(event)

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
