"""`hisguard-agent baseline -c FILE`: record (or re-record) each database job's schema baseline, logged."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hisguard.checks.base import ProbeError
from hisguard.checks.database.baseline import Baseline, baseline_path, diff, log_rebaseline
from hisguard.checks.database.collect import Snapshot, collect
from hisguard.checks.database.config import Config
from hisguard.checks.database.dialects.base import DbError
from hisguard.checks.database.probe import scrub

log = logging.getLogger("hisguard.checks.database")


class BaselineError(Exception):
    """The baseline cannot be recorded; nothing was written."""


def _read(cfg: Config) -> Snapshot:
    """collect() in a daemon thread, so a server that never answers cannot hang the command."""
    password = cfg.resolve_password()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["snap"] = collect(cfg, password, time.monotonic() + cfg.round_deadline)
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


def record(cfg: Config, state_dir: Path, reason: str | None = None) -> tuple[Path, list[str]]:
    """Read the server, check the configuration against it, write the baseline and log the change."""
    snap = _read(cfg)
    problems = []
    for db in cfg.databases:
        info = snap.databases.get(db)
        if info is not None and info.state == "OFFLINE" and db in cfg.offline_ok:
            continue  # allowed to be offline; its tables are recorded when it is next baselined online
        if info is None or info.state != "ONLINE":
            problems.append(f"database {db!r} is {'not visible' if info is None else info.state}")
        elif db in snap.errors:
            problems.append(f"database {db!r} cannot be read: {snap.errors[db]}")
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
    changes = diff(old, new)
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
