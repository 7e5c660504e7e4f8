"""Delivery of queued notifications: claimed in batches, sent concurrently, outcome recorded per row.

Each row is one contact on one channel, sent in its own task with its own timeout, so one failing
channel never blocks another. Failures are retried with exponential backoff up to max_attempts;
every attempt is logged on the row. Claims use FOR UPDATE SKIP LOCKED plus a conditional update,
so replicas on one PostgreSQL never send the same row twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from hisguard.server.domain import clocks
from hisguard.server.notify import outbox
from hisguard.server.notify.channels import ChannelError, send
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Notification

log = logging.getLogger("hisguard.server.notify")
BATCH = 50


def claim(s: Session, at: datetime, lease: timedelta, limit: int = BATCH) -> list[Notification]:
    """Take due rows (pending, or sending with an expired lease after a crash) for this process."""
    due = or_(
        and_(Notification.status == "pending", Notification.next_attempt_at <= at),
        and_(Notification.status == "sending", Notification.lease_until < at),
    )
    rows = list(
        s.scalars(
            select(Notification).where(due).order_by(Notification.id).limit(limit).with_for_update(skip_locked=True)
        )
    )
    mine = []
    for row in rows:
        got = s.execute(
            update(Notification)
            .where(Notification.id == row.id, Notification.status == row.status, due)
            .values(status="sending", lease_until=at + lease, attempts=Notification.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if got.rowcount == 1:
            s.refresh(row)
            mine.append(row)
    return mine


def record(s: Session, settings: ServerSettings, outcomes: list[tuple[int, str | None]], at: datetime) -> None:
    conf = settings.notify
    for nid, error in outcomes:
        row = s.get(Notification, nid)
        if row is None:
            continue
        row.log = [*row.log, {"at": at.isoformat(), "attempt": row.attempts, "ok": error is None, "error": error}]
        row.lease_until = None
        if error is None:
            row.status, row.sent_at, row.last_error = "sent", at, None
        elif row.attempts >= conf.max_attempts:
            row.status, row.last_error = "failed", error
        else:
            delay = min(conf.backoff * 2 ** (row.attempts - 1), conf.backoff_max)
            row.status, row.last_error, row.next_attempt_at = "pending", error, at + timedelta(seconds=delay)


class Dispatcher:
    def __init__(self, db: Database, settings: ServerSettings) -> None:
        self.db = db
        self.settings = settings
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        """Thread-safe: called after a transaction that queued messages commits."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def _one(self, n: Notification) -> tuple[int, str | None]:
        contact = self.settings.site(n.site).contacts.get(n.contact)
        if contact is None:
            return n.id, f"contact {n.contact!r} is no longer configured for site {n.site!r}"
        assert self._client is not None
        try:
            await send(n, contact, self.settings.notify, self._client)
        except ChannelError as exc:
            log.warning("notification %s (%s to %s) failed: %s", n.id, n.channel, n.contact, exc)
            return n.id, str(exc)
        except Exception as exc:  # a bug in one channel must not stop the others
            log.exception("notification %s: unexpected error", n.id)
            return n.id, f"{type(exc).__name__}: {exc}"
        return n.id, None

    def _claim(self) -> list[Notification]:
        lease = timedelta(seconds=self.settings.notify.timeout * 3)
        with self.db.session() as s:
            return claim(s, clocks.now(), lease)

    def _record(self, outcomes: list[tuple[int, str | None]]) -> None:
        with self.db.session() as s:
            record(s, self.settings, outcomes, clocks.now())

    async def drain(self) -> int:
        """Send everything due now; return how many deliveries were attempted."""
        total = 0
        own_client = self._client is None
        if own_client:
            self._client = httpx.AsyncClient(timeout=self.settings.notify.timeout)
        try:
            while True:
                batch = await asyncio.to_thread(self._claim)
                if not batch:
                    return total
                outcomes = await asyncio.gather(*(self._one(n) for n in batch))
                await asyncio.to_thread(self._record, list(outcomes))
                total += len(batch)
        finally:
            if own_client and self._client is not None:
                await self._client.aclose()
                self._client = None

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        outbox.WAKERS.append(self.wake)
        self._client = httpx.AsyncClient(timeout=self.settings.notify.timeout)
        try:
            while True:
                self._wake.clear()
                try:
                    await self.drain()
                except Exception:
                    log.exception("notification delivery round failed")
                try:
                    await asyncio.wait_for(self._wake.wait(), self.settings.notify.interval)
                except asyncio.TimeoutError:
                    pass
        finally:
            outbox.WAKERS.remove(self.wake)
            client, self._client = self._client, None
            if client is not None:  # a drain() run on its own may have closed and cleared it already
                await client.aclose()
