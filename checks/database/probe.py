"""The HIS database probe: reachability, restarts, database states, damaged pages, schema against the
baseline, row-count loss and anomaly rules per subsystem, lock chains and long transactions,
connections against their limits, backups, log fill and CHECKDB age.

The blocking driver runs in one worker thread per server (ctx.blocking) under the probe's own
wall-clock deadline, below the job timeout: a server that accepts and never answers costs one
stuck thread at most, and later rounds report it instead of starting another.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hisguard.checks.base import Impact, Observation, ProbeBusy, ProbeContext, ProbeError
from hisguard.checks.database.baseline import Baseline, baseline_path, history_path
from hisguard.checks.database.collect import Planner, Snapshot, collect
from hisguard.checks.database.config import Config
from hisguard.checks.database.dialects.base import DbError, TableStats
from hisguard.checks.database.evaluate import Memory, evaluate, refused_login
from hisguard.checks.database.rows import Plan, RowState, Watched


def scrub(text: str, secret: str | None) -> str:
    """The password never leaves the probe, even inside a driver's message."""
    if secret and len(secret) >= 3:
        text = text.replace(secret, "***")
    return text


def accepted_path(cfg: Config, state_dir: Path) -> Path:
    return history_path(cfg, state_dir).with_name(history_path(cfg, state_dir).name.replace("db-rows-", "db-accepted-"))


def row_state(cfg: Config, state_dir: Path) -> RowState:
    return RowState(history_path(cfg, state_dir), cfg.history_hours, accepted_path(cfg, state_dir))


def watched(cfg: Config) -> dict[str, dict[str, Watched]]:
    """database → table → how it is judged (a table in two subsystems takes the stricter settings)."""
    out: dict[str, dict[str, Watched]] = {}
    for (db, table), subs in cfg.subsystem_tables().items():
        drops = [s.drop_rows for s in subs if s.drop_rows is not None]
        out.setdefault(db, {})[table] = Watched(
            drop_fraction=min(s.drop_fraction for s in subs),
            drop_rows=min(drops) if drops else None,
            min_rows=min(s.min_rows for s in subs),
        )
    return out


def planner(cfg: Config, state: RowState, now: float) -> Planner:
    tables = watched(cfg)

    def plan(db: str, stats: dict[str, TableStats]) -> Plan:
        return state.plan(db, stats, tables.get(db, {}), now)

    return plan


def _unreachable(cfg: Config, impact: Impact, kind: str, message: str) -> Observation:
    return Observation(
        "db.connect", cfg.server_id, False, impact, name=cfg.server_label, detail={"error": kind, "message": message}
    )


async def read(
    cfg: Config,
    ctx: ProbeContext,
    schema: bool = True,
    state: RowState | None = None,
    baseline: Baseline | None = None,
    now: float | None = None,
) -> Snapshot:
    """One reading of the server under the deadline (DbError / ProbeError / asyncio.TimeoutError)."""
    password = cfg.resolve_password()
    deadline = cfg.round_deadline
    # The reading stops itself a little before the deadline, so that what it has read still counts.
    until = time.monotonic() + deadline - min(0.25, deadline * 0.2)
    plan = planner(cfg, state, now or time.time()) if state is not None else None
    expected = {db: list(tables) for db, tables in baseline.databases.items()} if baseline else None
    try:
        return await asyncio.wait_for(
            ctx.blocking(f"database:{cfg.server_id}", collect, cfg, password, until, schema, plan, expected),
            deadline,
        )
    except DbError as exc:
        raise DbError(exc.kind, scrub(str(exc), password), exc.scope) from None


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    impact = cfg.impact or ctx.impact
    try:
        baseline = Baseline.load(baseline_path(cfg, ctx.state_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise ProbeError(f"schema baseline unreadable: {exc}") from None
    state = row_state(cfg, ctx.state_dir)
    state.fallback = baseline.rows if baseline is not None else {}
    now = time.time()
    try:
        snap = await read(cfg, ctx, state=state, baseline=baseline, now=now)
    except asyncio.TimeoutError:
        ctx.mark_partial()  # tables, states and counts are unknown, not healthy
        return [_unreachable(cfg, impact, "timeout", f"no answer within {cfg.round_deadline:g}s")]
    except ProbeBusy:
        ctx.mark_partial()
        return [_unreachable(cfg, impact, "timeout", "still waiting for the previous round's call (server hung)")]
    except DbError as exc:
        message = f"{cfg.server_label}: {exc}"
        ctx.mark_partial()
        if exc.kind == "full":
            # Refused because it is full: every HIS client is refused too. An incident, not the probe's error.
            return refused_login(cfg, impact, exc.scope, message)
        if exc.kind in ("query", "denied", "missing") or (exc.kind == "login" and cfg.login_failure == "probe_error"):
            raise ProbeError(message) from None
        return [_unreachable(cfg, impact, exc.kind, message)]
    memory = ctx.memory.setdefault(f"database:{cfg.server_id}", Memory())
    obs = evaluate(cfg, snap, baseline, state, now, impact, memory)
    for db, stats in snap.stats.items():
        unverified = snap.rows_unverified.get(db, {})
        for table, s in stats.items():
            state.seen(db, table, s, snap.exact.get(db, {}).get(table), now, table not in unverified)
        state.add(db, snap.rows.get(db, {}), now)
        state.forget_missing(db, set(stats), now)
    state.save()
    if any(o.ok is None and "unverified_since" in o.detail for o in obs) or snap.unverified:
        ctx.mark_partial()  # what was not seen keeps its state: an open incident stays open
    return obs
