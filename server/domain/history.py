"""Probe history kept compact: samples older than a day become 5-minute averages; past the retention, gone.

A downsampled row carries "_n" (how many samples it stands for), so a later pass merges it by weight
and never averages an average as if it were one sample.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from hisguard.server.storage.db import Database
from hisguard.server.storage.models import HealthSample

log = logging.getLogger("hisguard.server.history")
RAW_FOR = timedelta(days=1)
BUCKET = timedelta(minutes=5)
COUNT_KEY = "_n"
_CHUNK = 500
# Per database: samples before this were already downsampled by this process (a restart rescans once).
_done_before: dict[str, tuple[datetime, int]] = {}


def _bucket_start(at: datetime, bucket: timedelta) -> datetime:
    step = int(bucket.total_seconds())
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, tz=timezone.utc)


def merge(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Weighted mean of each numeric value over the rows that have it; "_n" is the total weight."""
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)
    total = 0.0
    for data in rows:
        w = float(data.get(COUNT_KEY, 1) or 1)
        total += w
        for name, value in data.items():
            if name == COUNT_KEY or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            sums[name] += value * w
            weights[name] += w
    out = {name: round(sums[name] / weights[name], 3) for name in sums}
    out[COUNT_KEY] = total
    return out


def downsample(
    s: Session,
    now: datetime,
    raw_for: timedelta = RAW_FOR,
    bucket: timedelta = BUCKET,
    since: tuple[datetime, int] | None = None,
) -> tuple[int, int, tuple[datetime, int]]:
    """Average samples older than `raw_for` into one row per agent and bucket.

    `since` (boundary, last id) skips what an earlier pass finished: samples before the boundary with
    ids up to the last id. A sample stored late (an agent's spool after an outage) has a newer id and is
    still averaged into its bucket. Returns (rows read, rows written, the new `since`).
    """
    cutoff = _bucket_start(now - raw_for, bucket)  # whole buckets only
    q = select(HealthSample.agent_id, HealthSample.at).where(HealthSample.at < cutoff)
    if since is not None:
        q = q.where(or_(HealthSample.at >= since[0], HealthSample.id > since[1]))
    touched: dict[int, set[datetime]] = defaultdict(set)
    for agent_id, at in s.execute(q):
        touched[agent_id].add(_bucket_start(at, bucket))
    read = written = 0
    doomed: list[int] = []
    for agent_id, starts in touched.items():
        rows = s.scalars(
            select(HealthSample)
            .where(
                HealthSample.agent_id == agent_id,
                HealthSample.at >= min(starts),
                HealthSample.at < max(starts) + bucket,
            )
            .order_by(HealthSample.at)
        )
        groups: dict[datetime, list[HealthSample]] = defaultdict(list)
        for row in rows:
            start = _bucket_start(row.at, bucket)
            if start in starts:
                groups[start].append(row)
        for start, group in groups.items():
            if len(group) == 1 and COUNT_KEY in group[0].data:
                continue  # already one averaged row
            read += len(group)
            doomed.extend(r.id for r in group)
            s.add(HealthSample(agent_id=agent_id, at=start, data=merge([r.data for r in group])))
            written += 1
    for i in range(0, len(doomed), _CHUNK):
        s.execute(delete(HealthSample).where(HealthSample.id.in_(doomed[i : i + _CHUNK])))
    s.flush()
    last_id = s.scalar(select(func.max(HealthSample.id))) or 0
    return read, written, (cutoff, int(last_id))


def prune(s: Session, now: datetime, retention: timedelta) -> int:
    """Delete samples older than the retention; returns how many."""
    result = s.execute(delete(HealthSample).where(HealthSample.at < now - retention))
    return int(result.rowcount or 0)


def compact(db: Database, now: datetime, retention: timedelta) -> dict[str, int]:
    """One pass: prune, then downsample what became older than a day since the last pass."""
    with db.session() as s:
        pruned = prune(s, now, retention)
        read, written, done = downsample(s, now, since=_done_before.get(db.url))
    _done_before[db.url] = done
    return {"pruned": pruned, "read": read, "written": written}


def count(s: Session, agent_id: int | None = None) -> int:
    q = select(func.count()).select_from(HealthSample)
    if agent_id is not None:
        q = q.where(HealthSample.agent_id == agent_id)
    return int(s.scalar(q) or 0)


async def run(db: Database, retention_days: float, interval_s: float, receipt_days: float = 30.0) -> None:
    """The app's periodic compaction, and forgetting old report receipts (errors are logged, never fatal)."""
    from hisguard.report import utcnow
    from hisguard.server.domain.ingest import prune_receipts

    while True:
        try:
            stats = await asyncio.to_thread(compact, db, utcnow(), timedelta(days=retention_days))
            if stats["pruned"] or stats["read"]:
                log.info("health history compacted: %s", stats)
            forgotten = await asyncio.to_thread(prune_receipts, db, utcnow() - timedelta(days=receipt_days))
            if forgotten:
                log.info("forgot %d report receipts older than %g days", forgotten, receipt_days)
        except Exception:
            log.exception("health history compaction failed")
        await asyncio.sleep(interval_s)
