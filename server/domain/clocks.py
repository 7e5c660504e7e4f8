"""The plan's clocks: response deadlines, continuity advisories, the written-reply commitment.

Each clock is a row (case, name, due time). A runner claims due rows and fires each in the same
transaction that marks it fired, so a clock fires exactly once and survives restarts. Claims use
SELECT … FOR UPDATE SKIP LOCKED (PostgreSQL: several replicas share the work) and a conditional
UPDATE … WHERE status = 'pending' (so even without row locks, as on SQLite, a clock fires once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from hisguard.report import utcnow
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import CaseClock

log = logging.getLogger("hisguard.server.clocks")
OWNER = f"{socket.gethostname()}:{os.getpid()}"


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class ManualClock:
    """A clock tests move by hand: `advance(minutes=10)` and the plan's deadlines come due."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **kw: float) -> datetime:
        with self._lock:
            self._now += delta if delta is not None else timedelta(**kw)
            return self._now

    def set(self, at: datetime) -> None:
        with self._lock:
            self._now = at


_clock: Clock = SystemClock()


def use(clock: Clock) -> None:
    """Make `clock` the time source of the plan engine (the server's, or a test's ManualClock)."""
    global _clock
    _clock = clock


def now() -> datetime:
    return _clock.now()


# Built once: the ingest path runs these for every incident that changes a case.
_CLOCK = select(CaseClock).where(CaseClock.case_id == bindparam("case_id"), CaseClock.name == bindparam("name"))
_PENDING_PREFIX = select(CaseClock).where(
    CaseClock.case_id == bindparam("case_id"),
    CaseClock.status == "pending",
    CaseClock.name.startswith(bindparam("prefix")),
)


# Session.info keys: cases this transaction created, and the clocks it created for them — a new
# case has no clocks but these, so scheduling its first ones needs no lookup.
NEW_CASES = "hisguard.new_cases"
_NEW_CLOCKS = "hisguard.new_case_clocks"


def schedule(s: Session, case_id: int, name: str, due: datetime) -> CaseClock:
    """Create the clock once; a later call may only bring a pending clock forward (never push it back)."""
    new_case = case_id in s.info.get(NEW_CASES, ())
    created: dict[tuple[int, str], CaseClock] = s.info.setdefault(_NEW_CLOCKS, {})
    row = created.get((case_id, name)) if new_case else s.scalar(_CLOCK, {"case_id": case_id, "name": name})
    if row is None:
        row = CaseClock(case_id=case_id, name=name, due_at=due, status="pending")
        s.add(row)
        s.flush()
        if new_case:
            created[(case_id, name)] = row
    elif row.status == "pending" and due < row.due_at:
        row.due_at = due
    return row


def cancel(s: Session, case_id: int, prefix: str = "") -> int:
    """Cancel the pending clocks of a case whose name starts with `prefix`."""
    rows = s.scalars(_PENDING_PREFIX, {"case_id": case_id, "prefix": prefix})
    n = 0
    for row in rows:
        row.status = "cancelled"
        n += 1
    return n


def pending(s: Session, case_id: int) -> list[CaseClock]:
    return list(
        s.scalars(
            select(CaseClock)
            .where(CaseClock.case_id == case_id, CaseClock.status == "pending")
            .order_by(CaseClock.due_at)
        )
    )


Handler = Callable[[Session, CaseClock, datetime], None]


def fire_due(s: Session, at: datetime, handler: Handler, limit: int = 100) -> list[int]:
    """Fire up to `limit` due clocks in this transaction; return their ids."""
    due = list(
        s.scalars(
            select(CaseClock)
            .where(CaseClock.status == "pending", CaseClock.due_at <= at)
            .order_by(CaseClock.due_at, CaseClock.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    fired = []
    for row in due:
        claimed = s.execute(
            update(CaseClock)
            .where(CaseClock.id == row.id, CaseClock.status == "pending")
            .values(status="fired", fired_at=at, fired_by=OWNER)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            continue  # another process fired it first
        s.refresh(row)
        handler(s, row, at)
        fired.append(row.id)
    return fired


class ClockRunner:
    """Fires due clocks every `interval` seconds (and at once when woken)."""

    def __init__(self, db: Database, handler: Handler, interval: float = 1.0) -> None:
        self.db = db
        self.handler = handler
        self.interval = interval
        self._wake = asyncio.Event()

    def tick(self) -> list[int]:
        """Fire everything due now; loops until nothing more is due (one transaction per batch)."""
        fired: list[int] = []
        while True:
            with self.db.session() as s:
                batch = fire_due(s, now(), self.handler)
            fired += batch
            if len(batch) < 100:
                return fired

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                fired = await asyncio.to_thread(self.tick)
                if fired:
                    log.info("clocks fired: %s", fired)
            except Exception:
                log.exception("clock run failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
