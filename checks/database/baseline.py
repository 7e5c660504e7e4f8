"""The schema baseline (tables and columns per database, recorded on command) and recent row counts.

The baseline is a JSON file written by `hisguard-agent baseline -c FILE`; every probe round
compares with it. Re-baselining after a planned upgrade is the same command, and each run is
appended to a log beside the file (who/when/what changed). Row-count history lives in the
agent's state directory: the highest count per table in each slice of the window.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hisguard.checks.database.config import Config

FORMAT = 1
_SLICES = 12  # history buckets per window


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


def diff(old: Baseline | None, new: Baseline) -> list[str]:
    """Human-readable differences, for the re-baselining log."""
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
        out += [f"- table {db}.{t}" for t in sorted(set(a) - set(b))]
        out += [f"+ table {db}.{t}" for t in sorted(set(b) - set(a))]
        out += [f"~ columns {db}.{t}" for t in sorted(set(a) & set(b)) if a[t] != b[t]]
    return out or ["no change"]


def log_rebaseline(path: Path, cfg: Config, changes: list[str], reason: str | None) -> Path:
    log = path.with_suffix(".log")
    try:
        who = getpass.getuser()
    except Exception:  # no login name in some service contexts
        who = str(os.getuid()) if hasattr(os, "getuid") else "?"
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with log.open("a", encoding="utf-8") as f:
        f.write(f"{stamp} baseline by {who} for {cfg.server_id}" + (f" — {reason}" if reason else "") + "\n")
        for line in changes:
            f.write(f"    {line}\n")
    return log


class RowHistory:
    """Highest row count per table in each slice of the last `hours`, kept on disk across restarts."""

    def __init__(self, path: Path, hours: float) -> None:
        self.path = path
        self.window = hours * 3600.0
        self.slice = self.window / _SLICES
        try:
            self.data: dict[str, dict[str, list[list[float]]]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    def reference(self, db: str, table: str, now: float) -> int | None:
        """Highest count seen within the window (None: no history)."""
        marks = [n for start, n in self.data.get(db, {}).get(table, []) if start > now - self.window - self.slice]
        return int(max(marks)) if marks else None

    def add(self, db: str, counts: dict[str, int | None], now: float) -> None:
        start = now - now % self.slice
        tables = self.data.setdefault(db, {})
        for table, n in counts.items():
            if n is None:
                continue
            marks = [m for m in tables.get(table, []) if m[0] > now - self.window - self.slice]
            if marks and marks[-1][0] == start:
                marks[-1][1] = max(marks[-1][1], n)
            else:
                marks.append([start, n])
            tables[table] = marks
        for table in [t for t in tables if t not in counts]:
            del tables[table]  # a dropped table is the baseline's business, not history's

    def save(self) -> None:
        _write_json(self.path, self.data)


def now() -> float:
    return time.time()
