"""The agent's durable state: the outbox of reports not yet stored by the server, and open incidents.

One SQLite file (WAL, synchronous=FULL): an incident event and the change to the set of open
incidents commit together, so a crash or power loss loses neither.

When the disk refuses writes (full, read-only, I/O error) or the file turns out corrupt while
running, monitoring goes on: changes are held in memory, logged loudly, and written to disk as
soon as it accepts them again (a corrupt file is set aside and a new one started).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import OrderedDict
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
MEMORY_LIMIT = 100_000  # items held in memory while the disk refuses writes
RETRY_DISK_S = 5.0  # how often a refused disk is tried again
NAG_S = 60.0  # how often the fault is repeated in the log while it lasts


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
        # Held in memory while the disk refuses writes; written out in order once it accepts them.
        self._mem_outbox: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._mem_active: dict[str, tuple[str, list[Any], dict[str, Any]] | None] = {}
        self._mem_gone: set[str] = set()  # delivered, but the disk refused the delete
        self.fault: str | None = None  # what is wrong with the disk now, for status and logs
        self._retry_at = 0.0
        self._nag_at = 0.0

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute("SELECT count(*) FROM outbox").fetchone()
        return db

    @classmethod
    def _open(cls, path: Path) -> sqlite3.Connection:
        try:
            return cls._connect(path)
        except sqlite3.OperationalError:
            raise  # locked, disk full, no permission: the file may be fine, do not move it
        except sqlite3.DatabaseError as exc:
            # A corrupt spool must not stop monitoring: keep it aside for inspection, start anew.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("agent state %s is unreadable (%s); moved to %s, starting a new one", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                p = Path(f"{path}{suffix}")
                if p.exists():
                    p.rename(Path(f"{aside}{suffix}"))
            return cls._connect(path)

    def close(self) -> None:
        if self._held():
            self._try_disk(force=True)
        if self._held():
            log.error("closing with %d reports the disk never accepted: they are lost", len(self._mem_outbox))
        self._db.close()

    # -- disk faults -------------------------------------------------------------------------
    def _held(self) -> bool:
        return bool(self._mem_outbox or self._mem_active or self._mem_gone)

    def _failed(self, exc: sqlite3.Error) -> None:
        now = time.monotonic()
        first = self.fault is None
        self.fault = f"{exc.__class__.__name__}: {exc}"
        self._retry_at = now + RETRY_DISK_S
        if first or now >= self._nag_at:
            self._nag_at = now + NAG_S
            log.critical(
                "代理状态文件无法写入 / agent state %s cannot be written (%s): %d reports held in memory until "
                "the disk accepts them again — free space or fix the disk",
                self.path,
                self.fault,
                len(self._mem_outbox),
            )
        if type(exc) is sqlite3.DatabaseError:  # "malformed", "not a database" (not: full, locked, read-only)
            self._reopen()  # corrupt while running: set it aside, continue in a fresh file

    def _reopen(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        try:
            self._db = self._open(self.path)
        except sqlite3.Error as exc:
            log.critical("agent state %s cannot be reopened: %s", self.path, exc)

    def _try_disk(self, force: bool = False) -> bool:
        """Write what memory holds to disk; True when nothing is held any more."""
        if not self._held():
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        try:
            with self._tx():
                for key, rec in self._mem_active.items():
                    if rec is None:
                        self._db.execute("DELETE FROM active WHERE key = ?", (key,))
                    else:
                        self._write_active(key, *rec)
                for _, body in self._mem_outbox.values():
                    if body["type"] == "heartbeat":
                        self._db.execute("DELETE FROM outbox WHERE kind = 'heartbeat'")
                    self._put(body)
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in self._mem_gone])
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        held = len(self._mem_outbox)
        self._mem_outbox.clear()
        self._mem_active.clear()
        self._mem_gone.clear()
        if self.fault:
            log.warning("agent state %s writable again: %d held reports now on disk", self.path, held)
        self.fault = None
        return True

    def _hold(self, body: dict[str, Any]) -> None:
        if body["type"] == "heartbeat":
            for i in [i for i, (kind, _) in self._mem_outbox.items() if kind == "heartbeat"]:
                del self._mem_outbox[i]
        if len(self._mem_outbox) >= MEMORY_LIMIT:
            log.critical("memory for held reports is full; dropping the oldest")
            self._mem_outbox.popitem(last=False)
        self._mem_outbox[str(body["id"])] = (body["type"], body)

    # -- outbox ------------------------------------------------------------------------------
    def enqueue(self, body: dict[str, Any]) -> None:
        """Spool one report item; its own `id` identifies it here and at the server."""
        if self._try_disk():
            try:
                with self._tx():
                    if body["type"] == "heartbeat":  # only the latest health snapshot is worth sending late
                        self._db.execute("DELETE FROM outbox WHERE kind = 'heartbeat'")
                    self._put(body)
                return
            except sqlite3.Error as exc:
                self._failed(exc)
        self._hold(body)

    def _put(self, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (id, kind, body, created) VALUES (?, ?, ?, ?)",
            (str(body["id"]), body["type"], json.dumps(body, ensure_ascii=False), time.time()),
        )

    def peek(self, limit: int) -> list[Pending]:
        self._try_disk()
        try:
            rows = self._db.execute(
                "SELECT id, kind, body FROM outbox ORDER BY seq LIMIT ?", (limit + len(self._mem_gone),)
            ).fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
            rows = []
        out = [Pending(r[0], r[1], json.loads(r[2])) for r in rows if r[0] not in self._mem_gone][:limit]
        for item_id, (kind, body) in self._mem_outbox.items():
            if len(out) >= limit:
                break
            out.append(Pending(item_id, kind, body))
        return out

    def delivered(self, ids: list[str]) -> int:
        """Forget items the server stored; return how many of them were pending."""
        n = 0
        for i in ids:
            if self._mem_outbox.pop(i, None) is not None:
                n += 1
        on_disk = [i for i in ids if i not in self._mem_gone]
        try:
            with self._tx():
                n += self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in on_disk]).rowcount
        except sqlite3.Error as exc:
            self._failed(exc)
            try:
                known = {
                    r[0]
                    for r in self._db.execute(
                        f"SELECT id FROM outbox WHERE id IN ({','.join('?' * len(on_disk))})", on_disk
                    )
                }
            except sqlite3.Error:
                known = set(on_disk)
            self._mem_gone |= known  # sent twice after a crash at worst; the server drops the repeat
            n += len(known)
        return n

    def reject(self, item: Pending, reason: str) -> None:
        """The server refused this item for good: keep it on disk, out of the way of the rest."""
        self._mem_outbox.pop(item.id, None)
        try:
            with self._tx():
                self._db.execute(
                    "INSERT OR REPLACE INTO rejected (id, body, reason, at) VALUES (?, ?, ?, ?)",
                    (item.id, json.dumps(item.body, ensure_ascii=False), reason, time.time()),
                )
                self._db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
        except sqlite3.Error as exc:
            self._failed(exc)
            self._mem_gone.add(item.id)
            log.error("rejected report %s could not be kept on disk: %s", item.id, json.dumps(item.body)[:2000])

    def backlog(self) -> int:
        held = sum(1 for kind, _ in self._mem_outbox.values() if kind != "heartbeat")
        try:
            rows = self._db.execute("SELECT id FROM outbox WHERE kind != 'heartbeat'").fetchall()
        except sqlite3.Error:
            return held
        return held + sum(1 for r in rows if r[0] not in self._mem_gone)

    # -- open incidents ----------------------------------------------------------------------
    def active(self) -> dict[str, dict[str, Any]]:
        try:
            rows = self._db.execute("SELECT key, signature, conditions, event FROM active").fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
            rows = []
        out = {r[0]: (r[1], json.loads(r[2]), json.loads(r[3])) for r in rows}
        for key, rec in self._mem_active.items():
            if rec is None:
                out.pop(key, None)
            else:
                out[key] = rec
        return {
            key: {"signature": sig, "conditions": [tuple(c) for c in conds], "event": event}
            for key, (sig, conds, event) in out.items()
        }

    def _write_active(self, key: str, signature: str, conditions: list[Any], event: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO active (key, signature, conditions, event) VALUES (?, ?, ?, ?)",
            (key, signature, json.dumps(conditions), json.dumps(event, ensure_ascii=False)),
        )

    def open_incident(self, key: str, signature: str, conditions: list[Any], event: dict[str, Any]) -> None:
        if self._try_disk():
            try:
                with self._tx():
                    self._write_active(key, signature, conditions, event)
                    self._put(event)
                return
            except sqlite3.Error as exc:
                self._failed(exc)
        self._mem_active[key] = (signature, json.loads(json.dumps(conditions)), event)
        self._hold(event)

    def resolve_incident(self, key: str, event: dict[str, Any]) -> None:
        if self._try_disk():
            try:
                with self._tx():
                    self._db.execute("DELETE FROM active WHERE key = ?", (key,))
                    self._put(event)
                return
            except sqlite3.Error as exc:
                self._failed(exc)
        self._mem_active[key] = None
        self._hold(event)

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
