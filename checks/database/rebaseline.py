"""`hisguard-agent baseline -c FILE`: record (or re-record) each database job's schema baseline, logged."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hisguard.checks.base import ProbeError
from hisguard.checks.database.baseline import Baseline, baseline_path, diff, log_rebaseline, who_runs_this
from hisguard.checks.database.collect import Planner, Snapshot, collect
from hisguard.checks.database.config import Config
from hisguard.checks.database.dialects.base import DbError, TableStats
from hisguard.checks.database.probe import accepted_path, scrub, watched
from hisguard.checks.database.rows import Plan, accept

log = logging.getLogger("hisguard.checks.database")


class BaselineError(Exception):
    """The baseline cannot be recorded; nothing was written."""


def _read(cfg: Config, planner: Planner | None = None, limit: int | None = None) -> Snapshot:
    """collect() in a daemon thread, so a server that never answers cannot hang the command."""
    password = cfg.resolve_password()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["snap"] = collect(cfg, password, time.monotonic() + cfg.round_deadline, True, planner, None, limit)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, name="hisguard-baseline", daemon=True)
    worker.start()
    worker.join(cfg.round_deadline + 1.0)
    if worker.is_alive():
        raise BaselineError(f"{cfg.server_label}: no answer within {cfg.round_deadline:g}s")
    if "error" in box:
        err = box["error"]
        text = scrub(str(err), password)
        raise BaselineError(f"{cfg.server_label}: {getattr(err, 'kind', 'error')}: {text}") from None
    return box["snap"]


def _unmeasured(cfg: Config) -> Planner:
    """For the baseline: count exactly the subsystem tables whose statistics say nothing (never analyzed)."""
    tables = watched(cfg)

    def plan(db: str, stats: dict[str, TableStats]) -> Plan:
        p = Plan()
        for table in tables.get(db, {}):
            s = stats.get(table)
            if s is not None and (s.rows is None or s.emptied):
                p.count[table] = p.reasons[table] = "no statistics"
        return p

    return plan


def _all_of(cfg: Config, subsystem: str) -> Planner:
    """For --accept-rows: count every table of the subsystem exactly."""
    sub = next(s for s in cfg.subsystems if s.name == subsystem)
    db = cfg.subsystem_database(sub)
    mine = set(watched(cfg).get(db, {})) & {t for (d, t), subs in cfg.subsystem_tables().items() if sub in subs}

    def plan(name: str, stats: dict[str, TableStats]) -> Plan:
        p = Plan()
        if name == db:
            for table in sorted(mine & set(stats)):
                p.count[table] = p.reasons[table] = "accepting the current level"
        return p

    return plan


def record(cfg: Config, state_dir: Path, reason: str | None = None) -> tuple[Path, list[str]]:
    """Read the server, check the configuration against it, write the baseline and log the change."""
    snap = _read(cfg, _unmeasured(cfg), limit=1000)
    problems = []
    for db in cfg.databases:
        info = snap.databases.get(db)
        if info is not None and info.state == "OFFLINE" and db in cfg.offline_ok:
            continue  # allowed to be offline; its tables are recorded when it is next baselined online
        if info is None or info.state != "ONLINE":
            problems.append(f"database {db!r} is {'not visible' if info is None else info.state}")
        elif db in snap.errors:
            problems.append(f"database {db!r} cannot be read: {snap.errors[db]}")
    for key, why in snap.unverified.items():
        if key.startswith("db ") and key[3:] in cfg.databases:
            problems.append(f"database {key[3:]!r} cannot be read: {why}")
    for (db, table), subs in sorted(cfg.subsystem_tables().items()):
        if db in snap.columns and table not in snap.columns[db]:
            names = ", ".join(s.name for s in subs)
            problems.append(f"subsystem {names}: table {table!r} does not exist in database {db!r}")
    if problems:
        raise BaselineError(f"{cfg.server_label}: " + "; ".join(problems))
    path = baseline_path(cfg, state_dir)
    new = Baseline(datetime.now(timezone.utc).isoformat(timespec="seconds"), snap.columns, snap.rows)
    try:
        old = Baseline.load(path)
    except (ValueError, KeyError):
        old = None
    changes = diff(old, new, cfg.dialect_obj.display)
    new.save(path, cfg)
    log_file = log_rebaseline(path, cfg, changes, reason)
    log.info("schema baseline recorded for %s: %s (%s)", cfg.server_id, path, "; ".join(changes[:20]))
    return log_file, changes


def run_command(jobs: list[tuple[str, Config]], state_dir: Path, reason: str | None) -> int:
    """Record every given job's baseline; print what changed. 0 when all were recorded, 1 otherwise."""
    if not jobs:
        print("没有数据库探针 / no [[probe.database]] job in this configuration")
        return 1
    failed = 0
    for name, cfg in jobs:
        try:
            log_file, changes = record(cfg, state_dir, reason)
        except (BaselineError, ProbeError, DbError) as exc:
            print(f"{name}: 基线未记录 / baseline NOT recorded: {exc}")
            failed += 1
            continue
        path = baseline_path(cfg, state_dir)
        print(f"{name}: 基线已记录 / baseline recorded: {path} (log: {log_file})")
        for line in changes:
            print(f"    {line}")
    return 1 if failed else 0


def accept_rows(cfg: Config, state_dir: Path, subsystem: str, reason: str) -> list[str]:
    """A person accepts the current row counts of a subsystem (a planned archive): counted exactly, recorded
    with who and why, and from the next round on the reference of its tables."""
    if subsystem not in {s.name for s in cfg.subsystems}:
        known = ", ".join(s.name for s in cfg.subsystems) or "none"
        raise BaselineError(f"{cfg.server_label}: no subsystem {subsystem!r} (known: {known})")
    sub = next(s for s in cfg.subsystems if s.name == subsystem)
    db = cfg.subsystem_database(sub)
    snap = _read(cfg, _all_of(cfg, subsystem), limit=1000)
    counted = snap.exact.get(db, {})
    failed = snap.rows_unverified.get(db, {})
    if failed or db not in snap.stats:
        why = "; ".join(f"{t}: {w}" for t, w in failed.items()) or snap.unverified.get(f"db {db}", "not read")
        raise BaselineError(f"{cfg.server_label}: cannot count {subsystem} exactly, nothing accepted: {why}")
    who = who_runs_this()
    at = time.time()
    accept(accepted_path(cfg, state_dir), db, dict(counted), who, reason, subsystem, at)
    lines = [f"{cfg.dialect_obj.display(db, t)}: {n} rows accepted" for t, n in sorted(counted.items())]
    log_rebaseline(baseline_path(cfg, state_dir), cfg, lines, reason, what=f"rows of {subsystem} accepted")
    log.info("rows of %s accepted on %s by %s: %s", subsystem, cfg.server_id, who, reason)
    return lines


def run_accept(jobs: list[tuple[str, Config]], state_dir: Path, subsystem: str, reason: str | None) -> int:
    """`baseline --accept-rows SUBSYSTEM --reason …`: 0 when accepted, 1 otherwise."""
    if not reason or not reason.strip():
        print("必须说明原因 / --reason is required: say why the lower row counts are right (e.g. a planned archive)")
        return 1
    jobs = [(n, c) for n, c in jobs if subsystem in {s.name for s in c.subsystems}]
    if not jobs:
        print(f"没有子系统 {subsystem} / no database job has a subsystem named {subsystem!r}")
        return 1
    failed = 0
    for name, cfg in jobs:
        try:
            lines = accept_rows(cfg, state_dir, subsystem, reason.strip())
        except (BaselineError, ProbeError, DbError) as exc:
            print(f"{name}: 未接受 / NOT accepted: {exc}")
            failed += 1
            continue
        print(f"{name}: 已接受子系统 {subsystem} 的当前行数 / current row counts of {subsystem} accepted ({reason}):")
        for line in lines:
            print(f"    {line}")
    return 1 if failed else 0
