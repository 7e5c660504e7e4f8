"""The HIS database probe: reachability, restarts, database states, damaged pages, schema against the
baseline, row-count loss and anomaly rules per subsystem, backups, log fill and CHECKDB age.

The blocking driver runs in one worker thread per server (ctx.blocking) under the probe's own
wall-clock deadline, below the job timeout: a server that accepts and never answers costs one
stuck thread at most, and later rounds report it instead of starting another.
"""

from __future__ import annotations

import asyncio
import time

from hisguard.checks.base import Impact, Observation, ProbeBusy, ProbeContext, ProbeError
from hisguard.checks.database.baseline import Baseline, RowHistory, baseline_path, history_path
from hisguard.checks.database.collect import Snapshot, collect
from hisguard.checks.database.config import Config
from hisguard.checks.database.dialects.base import DbError
from hisguard.checks.database.evaluate import evaluate


def scrub(text: str, secret: str | None) -> str:
    """The password never leaves the probe, even inside a driver's message."""
    if secret and len(secret) >= 3:
        text = text.replace(secret, "***")
    return text


def _unreachable(cfg: Config, impact: Impact, kind: str, message: str) -> Observation:
    return Observation(
        "db.connect", cfg.server_id, False, impact, name=cfg.server_label, detail={"error": kind, "message": message}
    )


async def read(cfg: Config, ctx: ProbeContext, schema: bool = True) -> Snapshot:
    """One reading of the server under the deadline (DbError / ProbeError / asyncio.TimeoutError)."""
    password = cfg.resolve_password()
    deadline = cfg.round_deadline
    until = time.monotonic() + deadline
    try:
        return await asyncio.wait_for(
            ctx.blocking(f"database:{cfg.server_id}", collect, cfg, password, until, schema), deadline
        )
    except DbError as exc:
        raise DbError(exc.kind, scrub(str(exc), password)) from None


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    impact = cfg.impact or ctx.impact
    try:
        snap = await read(cfg, ctx)
    except asyncio.TimeoutError:
        ctx.mark_partial()  # tables, states and counts are unknown, not healthy
        return [_unreachable(cfg, impact, "timeout", f"no answer within {cfg.round_deadline:g}s")]
    except ProbeBusy:
        ctx.mark_partial()
        return [_unreachable(cfg, impact, "timeout", "still waiting for the previous round's call (server hung)")]
    except DbError as exc:
        message = f"{cfg.server_label}: {exc}"
        if exc.kind == "query" or (exc.kind == "login" and cfg.login_failure == "probe_error"):
            raise ProbeError(message) from None
        ctx.mark_partial()
        return [_unreachable(cfg, impact, exc.kind, message)]
    try:
        baseline = Baseline.load(baseline_path(cfg, ctx.state_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise ProbeError(f"schema baseline unreadable: {exc}") from None
    history = RowHistory(history_path(cfg, ctx.state_dir), cfg.history_hours)
    now = time.time()
    uptime_key = f"uptime:{cfg.server_id}"
    obs = evaluate(cfg, snap, baseline, history, now, impact, ctx.memory.get(uptime_key))
    ctx.memory[uptime_key] = snap.server.uptime_s
    for db, counts in snap.rows.items():
        history.add(db, counts, now)
    history.save()
    return obs
