"""Row counts of the subsystems' tables: statistics raise a suspicion, a bounded exact COUNT(*) decides.

Kept in the agent's state directory, per server (`db-rows-DIALECT-HOST_PORT.json`):

- marks: the highest count per table in each slice of `history_hours` — the reference a loss is
  measured against;
- tables: what was last seen of each table (identity, deleted-rows counter, the last exact count and
  the statistics it was taken under) — a re-created table, a burst of deletes, or statistics that
  disagreed with the last exact count make the table suspect;
- losses: confirmed losses and the level before them. An open loss keeps its reference however old
  it gets: it ends only when the rows come back or a person accepts the new level.

Accepting is `hisguard-agent baseline --accept-rows SUBSYSTEM --reason …`, which writes
`db-accepted-DIALECT-HOST_PORT.json` (who, when, why, the rows then) and a line in the baseline log;
the next round drops the older references of those tables. The command never writes the probe's file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hisguard.checks.database.dialects.base import TableStats

FORMAT = 2
_SLICES = 12  # reference buckets per window


def _write_json(path: Path, data: Any, compact: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # The probe's own state is rewritten every round: compact (json's C encoder). What people read is indented.
    text = (
        json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if compact
        else json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True)
    )
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@dataclass
class Watched:
    """How one table of a subsystem is judged."""

    drop_fraction: float
    drop_rows: int | None
    min_rows: int


@dataclass
class Plan:
    """What one database's tables need this round: exact counts (why), and counts still valid."""

    count: dict[str, str] = field(default_factory=dict)  # table → why it is suspect
    cached: dict[str, int] = field(default_factory=dict)  # suspect, but the last exact count still holds
    reasons: dict[str, str] = field(default_factory=dict)  # every suspect table → why


def stats_key(s: TableStats) -> str:
    """What must stay the same for an exact count to still hold."""
    return f"{s.identity}|{s.storage}|{s.rows}|{s.live}|{s.deletes}|{s.changes}"


class RowState:
    """References, per-table memory and open losses of one server (see the module docstring)."""

    def __init__(self, path: Path, hours: float, accepted_path: Path | None = None) -> None:
        self.path = path
        self.window = hours * 3600.0
        self.slice = self.window / _SLICES
        data = _read_json(path)
        if isinstance(data, dict) and data.get("format") == FORMAT:
            self.marks: dict[str, dict[str, list[list[float]]]] = data.get("marks", {})
            self.tables: dict[str, dict[str, dict[str, Any]]] = data.get("tables", {})
            self.losses: dict[str, dict[str, dict[str, Any]]] = data.get("losses", {})
        else:  # format 1: marks only
            self.marks = data if isinstance(data, dict) else {}
            self.tables, self.losses = {}, {}
        self.accepted: dict[str, dict[str, dict[str, Any]]] = {}
        # The baseline's counts: the reference of a table with no history yet.
        self.fallback: dict[str, dict[str, int | None]] = {}
        if accepted_path is not None:
            accepted = _read_json(accepted_path)
            self.accepted = accepted if isinstance(accepted, dict) else {}
            self._apply_accepted()

    # -- acceptance by a person ---------------------------------------------------------------------------
    def _apply_accepted(self) -> None:
        for db, tables in self.accepted.items():
            for table, entry in tables.items():
                if not isinstance(entry, dict) or "at" not in entry:
                    continue
                seen = self.tables.setdefault(db, {}).setdefault(table, {})
                if float(entry["at"]) <= float(seen.get("accepted_at", 0)):
                    continue
                seen["accepted_at"] = float(entry["at"])
                self.losses.get(db, {}).pop(table, None)
                rows = entry.get("rows")
                at = float(entry["at"])
                self.marks.setdefault(db, {})[table] = [[at - at % self.slice, rows]] if rows is not None else []

    def accepted_entry(self, db: str, table: str) -> dict[str, Any] | None:
        return self.accepted.get(db, {}).get(table)

    # -- references -------------------------------------------------------------------------------------
    def reference(self, db: str, table: str, now: float) -> int | None:
        """Highest count within the window, or the level before an open loss, whichever is higher."""
        marks = [n for start, n in self.marks.get(db, {}).get(table, []) if start > now - self.window - self.slice]
        best = int(max(marks)) if marks else None
        if best is None and "accepted_at" not in self.tables.get(db, {}).get(table, {}):
            best = self.fallback.get(db, {}).get(table)
        loss = self.losses.get(db, {}).get(table)
        if loss is not None:
            best = max(best or 0, int(loss["reference"]))
        return best

    def loss(self, db: str, table: str) -> dict[str, Any] | None:
        return self.losses.get(db, {}).get(table)

    def open_loss(self, db: str, table: str, reference: int, now: float, recreated: bool) -> None:
        entry = self.losses.setdefault(db, {}).get(table)
        if entry is None:
            self.losses[db][table] = {"reference": reference, "since": now, "recreated": recreated}
        elif recreated:
            entry["recreated"] = True

    def close_loss(self, db: str, table: str) -> None:
        self.losses.get(db, {}).pop(table, None)

    # -- suspicion --------------------------------------------------------------------------------------
    def plan(self, db: str, stats: dict[str, TableStats], watched: dict[str, Watched], now: float) -> Plan:
        """Which watched tables the statistics cannot vouch for this round, and why."""
        plan = Plan()
        for table, w in watched.items():
            s = stats.get(table)
            if s is None:
                continue  # dropped: the schema check says so
            why = self._suspect(db, table, s, w, now)
            if why is None:
                continue
            plan.reasons[table] = why
            seen = self.tables.get(db, {}).get(table, {})
            if seen.get("exact_key") == stats_key(s) and seen.get("exact") is not None:
                plan.cached[table] = int(seen["exact"])
            else:
                plan.count[table] = why
        return plan

    def _suspect(self, db: str, table: str, s: TableStats, w: Watched, now: float) -> str | None:
        seen = self.tables.get(db, {}).get(table, {})
        ref = self.reference(db, table, now)
        if self.loss(db, table) is not None:
            return "open loss"
        if seen.get("gone") or (
            seen.get("identity") is not None and s.identity is not None and seen["identity"] != s.identity
        ):
            return "re-created"
        if ref is None or ref < max(1, w.min_rows):
            return None  # nothing to lose yet, or too small to judge
        if seen.get("storage") is not None and s.storage is not None and seen["storage"] != s.storage:
            return "rewritten (TRUNCATE, VACUUM FULL)"
        if s.emptied:
            return "emptied (truncated or statistics reset)"
        threshold = ref * w.drop_fraction
        if w.drop_rows is not None:
            threshold = min(threshold, w.drop_rows)
        for name, estimate in (("statistics", s.rows), ("live rows", s.live)):
            if estimate is not None and ref - estimate >= threshold:
                return f"{name} {estimate} < {ref}"
        base = seen.get("deletes")
        if s.deletes is not None and base is not None and s.deletes >= base and s.deletes - base >= threshold:
            return f"{s.deletes - base} rows deleted since the last exact count"
        exact, at_rows = seen.get("exact"), seen.get("exact_rows")
        if exact is not None and at_rows == s.rows and abs((s.rows or 0) - exact) >= max(1, exact) * w.drop_fraction:
            return "statistics stale (they disagreed with the last exact count and have not been refreshed since)"
        return None

    # -- what this round saw --------------------------------------------------------------------------------
    def seen(self, db: str, table: str, s: TableStats, exact: int | None, now: float, verified: bool = True) -> None:
        """Remember this round's statistics of a table. One that was suspect and could not be counted keeps
        what made it suspect (a new identity, having been gone) until it is counted."""
        entry = self.tables.setdefault(db, {}).setdefault(table, {})
        if not verified:
            return
        entry["identity"] = s.identity
        if s.storage is not None:
            entry["storage"] = s.storage
        entry.pop("gone", None)
        if exact is not None:
            entry.update(exact=exact, exact_key=stats_key(s), exact_rows=s.rows, exact_at=now)
            if s.deletes is not None:
                entry["deletes"] = s.deletes
        elif s.deletes is not None and (entry.get("deletes") is None or s.deletes < entry["deletes"]):
            entry["deletes"] = s.deletes  # first sight, or the statistics were reset

    def add(self, db: str, counts: dict[str, int | None], now: float) -> None:
        start = now - now % self.slice
        tables = self.marks.setdefault(db, {})
        for table, n in counts.items():
            if n is None:
                continue
            marks = [m for m in tables.get(table, []) if m[0] > now - self.window - self.slice]
            if marks and marks[-1][0] == start:
                marks[-1][1] = max(marks[-1][1], n)
            else:
                marks.append([start, n])
            tables[table] = marks

    def forget_missing(self, db: str, present: set[str], now: float) -> None:
        """A table gone from the catalogue is remembered as gone (if it comes back, it was re-created) and its
        references age out of the window like any other."""
        for table, entry in self.tables.get(db, {}).items():
            if table not in present:
                entry["gone"] = True
        marks = self.marks.get(db, {})
        for table in [t for t in marks if t not in present]:
            marks[table] = [m for m in marks[table] if m[0] > now - self.window - self.slice]
            if not marks[table] and self.loss(db, table) is None:
                del marks[table]

    def save(self) -> None:
        state = {"format": FORMAT, "marks": self.marks, "tables": self.tables, "losses": self.losses}
        _write_json(self.path, state, compact=True)


def accept(path: Path, db: str, rows: dict[str, int | None], who: str, reason: str, subsystem: str, at: float) -> None:
    """Record that a person accepted the current row counts of some tables (a planned archive)."""
    data = _read_json(path)
    data = data if isinstance(data, dict) else {}
    for table, n in rows.items():
        data.setdefault(db, {})[table] = {"at": at, "rows": n, "by": who, "reason": reason, "subsystem": subsystem}
    _write_json(path, data)
