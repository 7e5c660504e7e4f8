"""Probe history kept compact: samples older than a day become 5-minute averages; past the retention, gone.

A downsampled row carries "_n" (how many samples it stands for), so a later pass merges it by weight
and never averages an average as if it were one sample. Beside the samples, 15-minute and hourly
rollups (the same weighted means) let a week's or a month's chart read a few hundred rows instead of
every heartbeat; `load` draws from them and from the samples they do not cover yet.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Agent, HealthRollup, HealthSample

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
    """One pass: prune, downsample what became older than a day since the last pass, then the rollups."""
    with db.session() as s:
        pruned = prune(s, now, retention)
        for step in STEPS:
            old = HealthRollup.at < now - min(retention, KEEP.get(step, retention))
            doomed = delete(HealthRollup).where(HealthRollup.step_s == int(step.total_seconds()), old)
            pruned += int(s.execute(doomed).rowcount or 0)
        read, written, done = downsample(s, now, since=_done_before.get(db.url))
    _done_before[db.url] = done
    rolled_read, rolled, behind = rollup(db, now)
    stats = {"pruned": pruned, "read": read, "written": written}
    return {**stats, "rollup_read": rolled_read, "rollups": rolled, "behind": int(behind)}


# -- rollups ------------------------------------------------------------------------------------------
STEPS = (timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))
# The 5-minute rollup serves a day's chart; older days have 5-minute samples already (see downsample).
KEEP = {timedelta(minutes=5): timedelta(days=2)}
ROLLUP_LAG = timedelta(minutes=2)  # a bucket is complete this long after its end (heartbeats in flight)
ROLLUP_BUDGET = 20_000  # sample rows a pass reads for rollups; a backlog (after an upgrade) goes on next pass
_rolled_upto: dict[str, int] = {}  # per database: sample ids up to this are in this process's rollups


def rollup(db: Database, now: datetime, budget: int = ROLLUP_BUDGET) -> tuple[int, int, bool]:
    """Roll up buckets that completed, or that samples stored since the last pass changed (an agent's spool,
    a downsampling), each agent in its own short transaction. Returns (samples read, rollups written, behind)."""
    watermark = _rolled_upto.get(db.url)
    with db.session() as s:
        top_id = int(s.scalar(select(func.max(HealthSample.id))) or 0)
        agents = list(s.scalars(select(Agent.id).order_by(Agent.id)))
        late: dict[int, list[datetime]] = defaultdict(list)
        if watermark is not None:
            for agent_id, at in s.execute(
                select(HealthSample.agent_id, HealthSample.at).where(
                    HealthSample.id > watermark, HealthSample.id <= top_id
                )
            ):
                late[agent_id].append(at)
    read = written = 0
    for agent_id in agents:
        if read >= budget:
            return read, written, True  # the watermark stays: what is left is looked at again next pass
        with db.session() as s:
            r, w = _roll_agent(s, agent_id, now, late.get(agent_id, []))
        read, written = read + r, written + w
    _rolled_upto[db.url] = top_id
    return read, written, False


def _roll_agent(s: Session, agent_id: int, now: datetime, late: list[datetime]) -> tuple[int, int]:
    newest = dict(
        s.execute(
            select(HealthRollup.step_s, func.max(HealthRollup.at))
            .where(HealthRollup.agent_id == agent_id)
            .group_by(HealthRollup.step_s)
        ).all()
    )
    oldest = s.scalar(select(func.min(HealthSample.at)).where(HealthSample.agent_id == agent_id))
    if oldest is None:
        return 0, 0
    wanted: dict[timedelta, set[datetime]] = {}
    spans: list[tuple[datetime, datetime]] = []
    for step in STEPS:
        last = newest.get(int(step.total_seconds()))
        first = last + step if last is not None else _bucket_start(oldest, step)
        if first.tzinfo is None:  # SQLite's max() comes back without a zone
            first = first.replace(tzinfo=timezone.utc)
        horizon = _bucket_start(now - KEEP[step], step) if step in KEEP else None  # older ones are pruned
        first = max(first, horizon) if horizon is not None else first
        complete = _bucket_start(now - ROLLUP_LAG, step)  # buckets starting before this have ended
        fresh = {first + step * i for i in range(max(0, (complete - first) // step))}
        redo = {b for b in (_bucket_start(at, step) for at in late) if b < first and (horizon is None or b >= horizon)}
        wanted[step] = fresh | redo
        if fresh:
            spans.append((first, complete))
        spans += [(b, b + step) for b in redo]
    if not spans:
        return 0, 0
    groups: dict[tuple[timedelta, datetime], list[dict[str, Any]]] = defaultdict(list)
    read = 0
    for lo, hi in _merged(spans):
        q = select(HealthSample.at, HealthSample.data).where(
            HealthSample.agent_id == agent_id, HealthSample.at >= lo, HealthSample.at < hi
        )
        for at, data in s.execute(q.execution_options(yield_per=2000)):
            read += 1
            for step, buckets in wanted.items():
                if (b := _bucket_start(at, step)) in buckets:
                    groups[step, b].append(data or {})
    written = 0
    for step, buckets in wanted.items():
        step_s = int(step.total_seconds())
        redone = [b for b in buckets if (step, b) in groups]
        for i in range(0, len(redone), _CHUNK):
            s.execute(
                delete(HealthRollup).where(
                    HealthRollup.agent_id == agent_id,
                    HealthRollup.step_s == step_s,
                    HealthRollup.at.in_(redone[i : i + _CHUNK]),
                )
            )
        rows = [{"agent_id": agent_id, "step_s": step_s, "at": b, "data": merge(groups[step, b])} for b in redone]
        if rows:
            s.execute(HealthRollup.__table__.insert(), rows)
            written += len(rows)
    return read, written


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


MAX_POINTS = 600  # per series and chart: about one a pixel of the console's charts
MIN_ROLLUP_POINTS = 240  # a rollup is drawn only where it still gives a chart this many points


def load(
    s: Session,
    agent_id: int,
    since: datetime,
    until: datetime,
    prefixes: tuple[str, ...],
    max_points: int = MAX_POINTS,
) -> dict[str, list[tuple[datetime, float]]]:
    """Series whose names start with one of `prefixes` → [(time, value)] over [since, until], oldest first.

    A week or a month reads the 15-minute or hourly rollups (and the samples of the last hour or so
    they do not cover yet); shorter ranges read the samples. Up to `max_points` rows come back as
    stored; more are averaged into `max_points` equal buckets (weighted by the samples each row stands
    for), each point at its bucket's middle.
    """
    rows = _rows(s, agent_id, since, until)
    out: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    wanted = _Wanted(prefixes)
    if len(rows) <= max_points:
        for at, data in rows:
            for name, value in _values(data, wanted):
                out[name].append((at, value))
        return dict(out)
    bucket = max((until - since) / max_points, timedelta(seconds=1))
    open_: dict[str, list[float]] = {}  # name → [bucket index, Σ value·weight, Σ weight]; rows come in time order
    for at, data in rows:
        weight = float((data or {}).get(COUNT_KEY, 1) or 1)
        i = (at - since) // bucket
        for name, value in _values(data, wanted):
            acc = open_.get(name)
            if acc is None or acc[0] != i:
                if acc is not None:
                    out[name].append((since + bucket * (acc[0] + 0.5), acc[1] / acc[2]))
                open_[name] = [i, value * weight, weight]
            else:
                acc[1] += value * weight
                acc[2] += weight
    for name, (i, vw, w) in open_.items():
        out[name].append((since + bucket * (i + 0.5), vw / w))
    return dict(out)


def _rows(s: Session, agent_id: int, since: datetime, until: datetime) -> list[tuple[datetime, dict[str, Any]]]:
    """(time, data) over [since, until], oldest first: the coarsest rollup that still draws a detailed chart
    (each row at its bucket's middle), and the samples before and after what the rollup covers."""
    step = next((st for st in reversed(STEPS) if (until - since) / st >= MIN_ROLLUP_POINTS), None)
    rolled: list[tuple[datetime, dict[str, Any]]] = []
    if step is not None:
        q = select(HealthRollup.at, HealthRollup.data).where(
            HealthRollup.agent_id == agent_id,
            HealthRollup.step_s == int(step.total_seconds()),
            HealthRollup.at >= since,
            HealthRollup.at <= until - step,
        )
        rolled = [(at, data) for at, data in s.execute(q.order_by(HealthRollup.at))]
    if step is None or not rolled:
        return _samples(s, agent_id, since, until, True)
    first, end = rolled[0][0], rolled[-1][0] + step
    middle = [(at + step / 2, data) for at, data in rolled]
    return [*_samples(s, agent_id, since, first, False), *middle, *_samples(s, agent_id, end, until, True)]


def _samples(
    s: Session, agent_id: int, since: datetime, until: datetime, closed: bool
) -> list[tuple[datetime, dict[str, Any]]]:
    """Samples in [since, until] (closed) or [since, until), oldest first."""
    end = HealthSample.at <= until if closed else HealthSample.at < until
    q = select(HealthSample.at, HealthSample.data).where(
        HealthSample.agent_id == agent_id, HealthSample.at >= since, end
    )
    return [(at, data) for at, data in s.execute(q.order_by(HealthSample.at))]


class _Wanted(dict[str, bool]):
    """Which stored names a chart draws, decided once per name (a month is ~10^6 values to sort through)."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def __missing__(self, name: str) -> bool:
        self[name] = keep = name != COUNT_KEY and name.startswith(self.prefixes)
        return keep


def _values(data: dict[str, Any] | None, wanted: _Wanted) -> list[tuple[str, float]]:
    """The wanted numbers of one stored row (not its weight; not NaN, infinities or 1e308: no chart's scale)."""
    out = []
    for name, value in (data or {}).items():
        if wanted[name] and type(value) in (float, int) and math.isfinite(value) and abs(value) < 1e300:
            out.append((name, float(value)))
    return out


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
        behind = False
        try:
            stats = await asyncio.to_thread(compact, db, utcnow(), timedelta(days=retention_days))
            behind = bool(stats["behind"])  # rollups of a long history still being written: go on soon
            if stats["pruned"] or stats["read"] or stats["rollups"]:
                log.info("health history compacted: %s", stats)
            forgotten = await asyncio.to_thread(prune_receipts, db, utcnow() - timedelta(days=receipt_days))
            if forgotten:
                log.info("forgot %d report receipts older than %g days", forgotten, receipt_days)
        except Exception:
            log.exception("health history compaction failed")
        await asyncio.sleep(min(interval_s, 1.0) if behind else interval_s)
