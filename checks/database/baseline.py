"""The schema baseline (tables and columns per database, recorded on command) and recent row counts.

The baseline is a JSON file written by `hisguard-agent baseline -c FILE`; every probe round
compares with it. Re-baselining after a planned upgrade is the same command, and each run is
appended to a log beside the file (who/when/what changed). Row-count references live in the
agent's state directory (rows.py).
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hisguard.checks.database.config import Config

FORMAT = 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def baseline_path(cfg: Config, state_dir: Path) -> Path:
    if cfg.baseline is not None:
        return cfg.baseline if cfg.baseline.is_absolute() else state_dir / cfg.baseline
    return state_dir / f"db-baseline-{cfg.dialect_obj.name}-{_safe(cfg.server_id)}.json"


def history_path(cfg: Config, state_dir: Path) -> Path:
    return state_dir / f"db-rows-{cfg.dialect_obj.name}-{_safe(cfg.server_id)}.json"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Baseline:
    recorded_at: str
    databases: dict[str, dict[str, dict[str, str]]]  # db → table → column → type
    rows: dict[str, dict[str, int | None]]  # db → table → rows when recorded

    @classmethod
    def load(cls, path: Path) -> Baseline | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown baseline format {data.get('format')!r}")
        return cls(data["recorded_at"], data["databases"], data.get("rows", {}))

    def save(self, path: Path, cfg: Config) -> None:
        _write_json(
            path,
            {
                "format": FORMAT,
                "dialect": cfg.dialect_obj.name,
                "server": cfg.server_id,
                "recorded_at": self.recorded_at,
                "databases": self.databases,
                "rows": self.rows,
            },
        )


def diff(old: Baseline | None, new: Baseline, display: Callable[[str, str], str] | None = None) -> list[str]:
    """Human-readable differences, for the re-baselining log (tables named as the dialect names them)."""
    name = display or (lambda db, t: f"{db}.{t}")
    if old is None:
        return ["first baseline"]
    out = []
    for db in sorted(set(old.databases) | set(new.databases)):
        a, b = old.databases.get(db), new.databases.get(db)
        if a is None:
            out.append(f"+ database {db}")
            continue
        if b is None:
            out.append(f"- database {db}")
            continue
        out += [f"- table {name(db, t)}" for t in sorted(set(a) - set(b))]
        out += [f"+ table {name(db, t)}" for t in sorted(set(b) - set(a))]
        out += [f"~ columns {name(db, t)}" for t in sorted(set(a) & set(b)) if a[t] != b[t]]
    return out or ["no change"]


def who_runs_this() -> str:
    """The login name of whoever runs the command (for the record)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some service contexts
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def log_rebaseline(path: Path, cfg: Config, changes: list[str], reason: str | None, what: str = "baseline") -> Path:
    log = path.with_suffix(".log")
    who = who_runs_this()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with log.open("a", encoding="utf-8") as f:
        f.write(f"{stamp} {what} by {who} for {cfg.server_id}" + (f" — {reason}" if reason else "") + "\n")
        for line in changes:
            f.write(f"    {line}\n")
    return log
