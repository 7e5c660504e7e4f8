"""From one round's snapshot (plus baseline and row history) to observations. Pure: no I/O.

Subjects start with the server (host:port) so that two database jobs on one agent never share
an incident key; impacts come from the subsystems, so scope is the subsystem's departments.
"""

from __future__ import annotations

from typing import Any

from hisguard.checks.base import Impact, Observation
from hisguard.checks.database.baseline import Baseline, RowHistory
from hisguard.checks.database.collect import Snapshot
from hisguard.checks.database.config import PRIORITY_RANK, Config, Subsystem
from hisguard.checks.database.dialects.base import BAD_STATES

_BACKUP_NAME = {"full": "完整/full", "diff": "差异/differential", "log": "日志/log"}


def merged_impact(subsystems: list[Subsystem]) -> Impact:
    departments: list[str] = []
    for s in subsystems:
        departments += s.impact().departments
    return Impact(
        departments=tuple(dict.fromkeys(departments)), hospital_critical=any(s.hospital_critical for s in subsystems)
    )


def evaluate(
    cfg: Config,
    snap: Snapshot,
    baseline: Baseline | None,
    history: RowHistory | None,
    now: float,
    server: Impact,
    previous_uptime: float | None = None,
) -> list[Observation]:
    sid = cfg.server_id
    obs = [
        Observation(
            "db.connect",
            sid,
            True,
            server,
            value=round(snap.elapsed_s * 1000, 1),
            name=cfg.server_label,
            detail={"statements": snap.statements, "version": snap.server.version.split("\n")[0][:120]},
        )
    ]
    if snap.server.uptime_s is not None:
        # Young, or younger than last round (a restart between two rounds further apart than the window).
        reset = previous_uptime is not None and snap.server.uptime_s < previous_uptime
        obs.append(
            Observation(
                "db.restart",
                sid,
                snap.server.uptime_s >= cfg.restart_window and not reset,
                server,
                value=snap.server.uptime_s,
                name=cfg.server_label,
                detail={"uptime_s": round(snap.server.uptime_s), "window_s": cfg.restart_window, "reset": reset},
            )
        )
    obs += _states(cfg, snap, baseline, server)
    obs += _corruption(cfg, snap, server)
    if baseline is not None:
        obs += _schema(cfg, snap, baseline)
    else:
        obs.append(Observation("db.baseline", sid, None, server, detail={"hint": "hisguard-agent baseline -c FILE"}))
    obs += _rows(cfg, snap, baseline, history, now)
    obs += _anomalies(cfg, snap)
    obs += _backups(cfg, snap, server)
    obs += _log_and_checkdb(cfg, snap, server)
    if snap.errors:
        obs.append(Observation("db.read", sid, None, server, detail={"errors": dict(snap.errors)}))
    return obs


def _states(cfg: Config, snap: Snapshot, baseline: Baseline | None, server: Impact) -> list[Observation]:
    # A low-privilege login may not see an offline database: absence is reported, never trusted.
    expected = list(dict.fromkeys([*cfg.databases, *(baseline.databases if baseline else {})]))
    out = []
    for db in expected:
        info = snap.databases.get(db)
        state = info.state if info else "MISSING"
        ok = info is not None and state not in BAD_STATES and not (state == "OFFLINE" and db not in cfg.offline_ok)
        out.append(
            Observation(
                "db.state", f"{cfg.server_id}/{db}", ok, server, name=f"{db} [{state}]", detail={"state": state}
            )
        )
    return out


def _corruption(cfg: Config, snap: Snapshot, server: Impact) -> list[Observation]:
    out = []
    for db in list(dict.fromkeys([*cfg.databases, *snap.corruption])):
        c = snap.corruption.get(db)
        bad = c is not None and bool(c.suspect_pages or c.checksum_failures or c.errors)
        detail: dict[str, Any] = {}
        if c is not None and bad:
            detail = {
                "suspect_pages": c.suspect_pages[:50],
                "checksum_failures": c.checksum_failures,
                "errors": c.errors[:20],
                "hint": "disk / I/O path: check the storage too (trigger 1)",
            }
        value = float(len(c.suspect_pages) + c.checksum_failures + len(c.errors)) if c else 0.0
        out.append(Observation("db.corruption", f"{cfg.server_id}/{db}", not bad, server, value, db, detail))
    return out


def _schema(cfg: Config, snap: Snapshot, baseline: Baseline) -> list[Observation]:
    owners = cfg.subsystem_tables()
    out = []
    for db, tables in baseline.databases.items():
        now_tables = snap.columns.get(db)
        if now_tables is None:
            continue  # database not online or not readable: its state says so, the tables are unknown
        for table, columns in tables.items():
            subs = owners.get((db, table), [])
            impact = merged_impact(subs)
            detail: dict[str, Any] = {"database": db, "table": table, "subsystems": [s.name for s in subs]}
            subject = f"{cfg.server_id}/{db}/{table}"
            current = now_tables.get(table)
            out.append(
                Observation("db.table", subject, current is not None, impact, name=f"{db}.{table}", detail=detail)
            )
            if current is None:
                continue
            changes = {
                "removed": sorted(set(columns) - set(current)),
                "added": sorted(set(current) - set(columns)),
                "changed": {
                    c: [columns[c], current[c]] for c in sorted(set(columns) & set(current)) if columns[c] != current[c]
                },
            }
            changed = bool(changes["removed"] or changes["added"] or changes["changed"])
            out.append(
                Observation(
                    "db.column",
                    subject,
                    not changed,
                    impact,
                    name=f"{db}.{table}",
                    detail={**detail, **changes} if changed else detail,
                )
            )
    return out


def _rows(
    cfg: Config, snap: Snapshot, baseline: Baseline | None, history: RowHistory | None, now: float
) -> list[Observation]:
    out = []
    for s in cfg.subsystems:
        db = cfg.subsystem_database(s)
        counts = snap.rows.get(db)
        if counts is None:
            continue
        lost, judged, worst = [], 0, 0.0
        default_schema = cfg.dialect_obj.default_schema(db)
        for name in s.tables:
            table = name if "." in name else f"{default_schema}.{name}"
            current = counts.get(table)
            if current is None:
                continue  # dropped (db.table says so) or never measured
            ref = history.reference(db, table, now) if history else None
            if ref is None and baseline is not None:
                ref = baseline.rows.get(db, {}).get(table)
            if ref is None or ref < max(1, s.min_rows):
                continue
            judged += 1
            loss = ref - current
            fraction = loss / ref
            worst = max(worst, fraction)
            if fraction >= s.drop_fraction or (s.drop_rows is not None and loss >= s.drop_rows):
                lost.append({"table": table, "reference": ref, "now": current, "lost_fraction": round(fraction, 3)})
        out.append(
            Observation(
                "db.rows",
                f"{cfg.server_id}/{s.name}",
                not lost,
                s.impact(),
                value=round(worst, 3),
                name=s.name,
                detail={"subsystem": s.name, "database": db, "tables_judged": judged, "tables_lost": lost},
            )
        )
    return out


def _anomalies(cfg: Config, snap: Snapshot) -> list[Observation]:
    out = []
    subs = {s.name: s for s in cfg.subsystems}
    for rule in cfg.anomalies:
        count = snap.anomalies.get(rule.name)
        if count is None:
            continue  # not run (database unreadable, query failed: see db.read)
        check = "db.anomaly" if rule.priority == "other" else f"db.anomaly.{rule.priority}"
        out.append(
            Observation(
                check,
                f"{cfg.server_id}/{rule.name}",
                count <= rule.max_rows,
                subs[rule.subsystem].impact(),
                value=float(count),
                name=rule.name,
                detail={
                    "subsystem": rule.subsystem,
                    "priority": rule.priority,
                    "priority_rank": PRIORITY_RANK[rule.priority],
                    "anomalous_rows": count,
                    "max_rows": rule.max_rows,
                },
            )
        )
    return out


def _backups(cfg: Config, snap: Snapshot, server: Impact) -> list[Observation]:
    if snap.backups is None or not cfg.backups.enabled:
        return []
    b = cfg.backups
    check = "db.backup" if b.severity == "routine" else "db.backup.urgent"
    out = []
    for db in b.databases or cfg.databases:
        ages = snap.backups.get(db)
        if ages is None:
            continue  # the database is gone: db.state reports it
        limits = {"full": b.full_days * 1440, "diff": b.diff_days * 1440, "log": b.log_hours * 60}
        latest = {"full": ages.full_min, "diff": ages.diff_min, "log": ages.log_min}
        # A full backup newer than the differential limit is as good a restore base as a differential.
        diff_base = [a for a in (ages.full_min, ages.diff_min) if a is not None]
        latest["diff"] = min(diff_base) if diff_base else None
        for kind in ("full", "diff", "log"):
            if kind == "log" and (ages.recovery_model or "").upper() == "SIMPLE":
                continue  # no log backups exist in SIMPLE recovery
            age = latest[kind]
            ok = age is not None and age <= limits[kind]
            out.append(
                Observation(
                    check,
                    f"{cfg.server_id}/{db}/backup-{kind}",
                    ok,
                    server,
                    value=None if age is None else round(age / 60, 2),
                    name=f"{db} {_BACKUP_NAME[kind]}",
                    detail={
                        "age_hours": None if age is None else round(age / 60, 2),
                        "limit_hours": limits[kind] / 60,
                        "never": age is None,
                        "recovery_model": ages.recovery_model,
                    },
                )
            )
    return out


def _log_and_checkdb(cfg: Config, snap: Snapshot, server: Impact) -> list[Observation]:
    out = []
    log_check = "db.log_full" if cfg.log_full_severity == "routine" else "db.log_full.urgent"
    for db in cfg.databases:
        info = snap.databases.get(db)
        if info is None:
            continue
        if info.log_used_percent is not None:
            out.append(
                Observation(
                    log_check,
                    f"{cfg.server_id}/{db}/log",
                    info.log_used_percent < cfg.log_full_percent,
                    server,
                    value=info.log_used_percent,
                    name=db,
                    detail={"percent_used": info.log_used_percent, "log_reuse_wait": info.log_reuse_wait},
                )
            )
        if cfg.checkdb_days is not None and info.checkdb_age_min is not None:
            days = None if info.checkdb_never else round(info.checkdb_age_min / 1440, 2)
            out.append(
                Observation(
                    "db.checkdb",
                    f"{cfg.server_id}/{db}/checkdb",
                    days is not None and days <= cfg.checkdb_days,
                    server,
                    value=days,
                    name=db,
                    detail={"age_days": days, "never": info.checkdb_never, "limit_days": cfg.checkdb_days},
                )
            )
    return out
