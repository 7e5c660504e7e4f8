"""From one round's snapshot (plus baseline and row state) to observations. No I/O.

Subjects start with the server (host:port) so that two database jobs on one agent never share
an incident key; impacts come from the subsystems, so scope is the subsystem's departments.

What could not be checked this round is reported with ok=None under the condition's own key and
a "cannot verify since …" label: the agent keeps that condition's previous state (an open incident
stays open) and shows why in `once`, `doctor`, the heartbeat and the console.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hisguard.checks.base import Impact, Observation
from hisguard.checks.database.baseline import Baseline
from hisguard.checks.database.collect import Snapshot
from hisguard.checks.database.config import PRIORITY_RANK, Config, Subsystem
from hisguard.checks.database.dialects.base import BAD_STATES, ConnectionUse, Session
from hisguard.checks.database.locks import PROBABLE, UNKNOWN, Chain, chains, session_id
from hisguard.checks.database.rows import RowState

_BACKUP_NAME = {"full": "完整/full", "diff": "差异/differential", "log": "日志/log"}
_SCOPE_TEXT = {"server": ("服务器", "server"), "database": ("数据库", "database"), "login": ("登录", "login")}


def merged_impact(subsystems: list[Subsystem], base: Impact | None = None) -> Impact:
    departments: list[str] = []
    for s in subsystems:
        departments += s.impact().departments
    if not subsystems and base is not None:
        departments += base.all_departments()
    critical = any(s.hospital_critical for s in subsystems) or bool(base and base.hospital_critical)
    return Impact(departments=tuple(dict.fromkeys(departments)), hospital_critical=critical)


@dataclass
class Memory:
    """What the probe keeps between rounds (in ctx.memory): when each condition could last not be verified,
    and the refused-login counters of the previous round."""

    unverified_since: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    previous_uptime: float | None = None


class _Unverified:
    """Builds ok=None observations for conditions that could not be checked, remembering since when."""

    def __init__(self, memory: Memory, now: float) -> None:
        self.memory = memory
        self.now = now
        self.seen: set[str] = set()

    def __call__(self, check: str, subject: str, impact: Impact, label: str, reason: str, **detail: Any) -> Observation:
        key = f"{check}|{subject}"
        self.seen.add(key)
        since = self.memory.unverified_since.setdefault(key, self.now)
        stamp = datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M")
        text = f"{label} — 无法核实，自 {stamp} 起 / cannot verify since {stamp}: {_short(reason)}"
        return Observation(
            check,
            subject,
            None,
            impact,
            name=text,
            detail={**detail, "unverified_since": stamp, "unverified_reason": reason[:300]},
        )

    def forget_verified(self) -> None:
        for key in [k for k in self.memory.unverified_since if k not in self.seen]:
            del self.memory.unverified_since[key]


def _short(reason: str) -> str:
    return " ".join(reason.split())[:160]


def visible(text: str, limit: int = 80) -> str:
    """What a session or a server reports, fit for a title: no control characters, bounded (titles ≤ 500)."""
    clean = "".join("?" if unicodedata.category(c) == "Cc" else c for c in " ".join(str(text).split()))
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def evaluate(
    cfg: Config,
    snap: Snapshot,
    baseline: Baseline | None,
    state: RowState | None,
    now: float,
    server: Impact,
    memory: Memory | None = None,
) -> list[Observation]:
    memory = memory if memory is not None else Memory()
    unverified = _Unverified(memory, now)
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
        previous = memory.previous_uptime
        reset = previous is not None and snap.server.uptime_s < previous
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
        memory.previous_uptime = snap.server.uptime_s
    obs += _states(cfg, snap, baseline, server, unverified)
    obs += _corruption(cfg, snap, server)
    if baseline is not None:
        obs += _schema(cfg, snap, baseline, state, now, unverified)
    else:
        obs.append(Observation("db.baseline", sid, None, server, detail={"hint": "hisguard-agent baseline -c FILE"}))
    obs += _rows(cfg, snap, baseline, state, now, unverified)
    obs += _statistics(cfg, snap, state)
    obs += _anomalies(cfg, snap, unverified)
    frozen = _frozen(cfg, snap, server, unverified)
    obs += frozen
    heads = {str(o.detail.get("blocker")) for o in frozen if o.ok is False}
    obs += _transactions(cfg, snap, server, unverified, heads)
    obs += _connections(cfg, snap, server, memory, unverified)
    obs += _backups(cfg, snap, server)
    obs += _log_and_checkdb(cfg, snap, server)
    for db, reason in snap.errors.items():
        if db in cfg.databases:
            obs.append(unverified("db.read", f"{sid}/{db}", server, db, reason, database=db))
    rule_errors = {k: v for k, v in snap.errors.items() if k not in cfg.databases}
    if rule_errors or snap.server.blind_spots:
        obs.append(
            Observation(
                "db.read",
                sid,
                None,
                server,
                name=cfg.server_label,
                detail={"errors": rule_errors, "blind_spots": list(snap.server.blind_spots)},
            )
        )
    unverified.forget_verified()
    return obs


# -- databases --------------------------------------------------------------------------------------------


def _states(
    cfg: Config, snap: Snapshot, baseline: Baseline | None, server: Impact, unverified: _Unverified
) -> list[Observation]:
    # A low-privilege login may not see an offline database: absence is reported, never trusted.
    expected = list(dict.fromkeys([*cfg.databases, *(baseline.databases if baseline else {})]))
    known = set(baseline.databases) if baseline else set()
    out = []
    for db in expected:
        subject = f"{cfg.server_id}/{db}"
        info = snap.databases.get(db)
        if info is None:
            gone = snap.databases_gone.get(db, True if db not in snap.databases_gone else None)
            if gone is None:
                reason = snap.unverified.get(f"db {db}") or "not visible to the probe's login (grant it access)"
                out.append(unverified("db.state", subject, server, f"{db} [NOT_VISIBLE]", reason, state="NOT_VISIBLE"))
                continue
            if db not in known:
                # Never seen: a name the configuration got wrong, not a database that was lost.
                out.append(
                    Observation(
                        "db.state",
                        subject,
                        None,
                        server,
                        name=f"{db} [NOT_FOUND] — 服务器上没有此数据库，配置有误？/ no such database: a typo?",
                        detail={"state": "NOT_FOUND", "configuration": True},
                    )
                )
                continue
        state = info.state if info else "MISSING"
        ok = info is not None and state not in BAD_STATES and not (state == "OFFLINE" and db not in cfg.offline_ok)
        out.append(Observation("db.state", subject, ok, server, name=f"{db} [{state}]", detail={"state": state}))
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


# -- structure ------------------------------------------------------------------------------------------------

_INT_RANK = {"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "integer": 4, "bigint": 5}
_TYPE = re.compile(r"^\s*([a-z][a-z ]*?)\s*(?:\(([^)]*)\))?\s*(unsigned)?\s*(?:zerofill)?\s*$")


def _split_type(text: str) -> tuple[str, list[str], bool, bool]:
    """'varchar(100) not null' → ('varchar', ['100'], unsigned, nullable)."""
    nullable = not text.endswith(" not null")
    body = text[: -len(" not null")] if not nullable else text.removesuffix(" null")
    m = _TYPE.match(body.lower())
    if m is None:
        return body.lower(), [], False, nullable
    args = [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]
    return m.group(1).strip(), args, bool(m.group(3)), nullable


def _widened(old: str, new: str) -> bool:
    """A change the application survives: a wider size or a larger integer, or a column allowed NULL."""
    ob, oa, ou, on = _split_type(old)
    nb, na, nu, nn = _split_type(new)
    if on and not nn:
        return False  # NULL no longer allowed: inserts without it now fail
    if ou != nu:
        return False
    if ob == nb:
        if oa == na:
            return True
        if "max" in na:
            return True
        try:
            o, n = [int(x) for x in oa], [int(x) for x in na]
        except ValueError:
            return False
        if ob in _INT_RANK:
            return True  # display width only (int(11) → int(10))
        if len(o) == len(n) == 2:  # decimal(p, s): neither the integer part nor the fraction may shrink
            return n[0] - n[1] >= o[0] - o[1] and n[1] >= o[1]
        return len(o) == len(n) and all(b >= a for a, b in zip(o, n, strict=True))
    if ob in _INT_RANK and nb in _INT_RANK:
        return _INT_RANK[nb] >= _INT_RANK[ob]
    return ob in ("varchar", "character varying", "nvarchar", "char", "character") and nb in ("text", "longtext")


def _column_changes(old: dict[str, str], new: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(breaking, routine): dropped, narrowed or retyped columns break the application; added ones do not."""
    if old == new:
        return {}, {}
    removed = sorted(set(old) - set(new))
    added = sorted(set(new) - set(old))
    changed = {c: [old[c], new[c]] for c in sorted(set(old) & set(new)) if old[c] != new[c]}
    narrowed = {c: v for c, v in changed.items() if not _widened(*v)}
    widened = {c: v for c, v in changed.items() if c not in narrowed}
    breaking = {"removed": removed, "changed": narrowed} if removed or narrowed else {}
    routine = {"added": added, "widened": widened} if added or widened else {}
    return breaking, routine


def _schema(
    cfg: Config, snap: Snapshot, baseline: Baseline, state: RowState | None, now: float, unverified: _Unverified
) -> list[Observation]:
    owners = cfg.subsystem_tables()
    d = cfg.dialect_obj
    out = []
    impacts: dict[tuple[str, ...], Impact] = {}
    for db, tables in baseline.databases.items():
        now_tables = snap.columns.get(db)
        if now_tables is None:
            continue  # database not online or not readable: its state says so, the tables are unknown
        new_tables = {t: c for t, c in now_tables.items() if t not in tables}
        for table, columns in tables.items():
            subs = owners.get((db, table), [])
            names = tuple(s.name for s in subs)
            impact = impacts.get(names) or impacts.setdefault(names, merged_impact(subs))
            label = d.display(db, table)
            detail: dict[str, Any] = {"database": db, "table": table, "subsystems": list(names)}
            subject = f"{cfg.server_id}/{db}/{table}"
            current = now_tables.get(table)
            if current is None:
                gone = snap.gone.get(db, {}).get(table, True)
                if gone is None:
                    reason = snap.unverified.get(f"table {db}/{table}") or (
                        "not visible to the probe's login (a revoked grant?), not dropped"
                    )
                    out.append(unverified("db.table", subject, impact, label, reason, **detail))
                    continue
                renamed = _renamed_to(columns, new_tables)
                if renamed is not None:
                    detail["renamed_to"] = visible(d.display(db, renamed), 200)
                    out.append(Observation("db.table.renamed", subject, False, impact, name=label, detail=detail))
                    continue
                out.append(Observation("db.table", subject, False, impact, name=label, detail=detail))
                continue
            table_obs = _recreated(cfg, snap, state, db, table, subs, now, unverified, detail)
            out.append(table_obs or Observation("db.table", subject, True, impact, name=label, detail=detail))
            breaking, routine = _column_changes(columns, current)
            out.append(
                Observation(
                    "db.column.broken", subject, not breaking, impact, name=label, detail={**detail, **breaking}
                )
            )
            out.append(Observation("db.column", subject, not routine, impact, name=label, detail={**detail, **routine}))
    return out


def _recreated(
    cfg: Config,
    snap: Snapshot,
    state: RowState | None,
    db: str,
    table: str,
    subs: list[Subsystem],
    now: float,
    unverified: _Unverified,
    detail: dict[str, Any],
) -> Observation | None:
    """A subsystem table dropped and created again is back only when its rows are: until then it stays lost."""
    if state is None or not subs:
        return None
    loss = state.loss(db, table)
    if snap.suspects.get(db, {}).get(table) != "re-created" and not (loss and loss.get("recreated")):
        return None
    subject, label = f"{cfg.server_id}/{db}/{table}", cfg.dialect_obj.display(db, table)
    impact = merged_impact(subs)
    count = snap.rows.get(db, {}).get(table)
    ref = state.reference(db, table, now)
    if count is None:
        reason = snap.rows_unverified.get(db, {}).get(table, "re-created; its rows could not be counted")
        return unverified("db.table", subject, impact, label, reason, **detail, recreated=True)
    if ref and ref - count >= ref * min(s.drop_fraction for s in subs):
        return Observation("db.table", subject, False, impact, name=label, detail={**detail, "recreated_empty": True})
    return None


def _renamed_to(columns: dict[str, str], new_tables: dict[str, dict[str, str]]) -> str | None:
    """A table not in the baseline with exactly the missing table's columns: the same table, renamed."""
    same = sorted(t for t, c in new_tables.items() if c == columns)
    return same[0] if len(same) == 1 else None


# -- rows ------------------------------------------------------------------------------------------------------


def _rows(
    cfg: Config,
    snap: Snapshot,
    baseline: Baseline | None,
    state: RowState | None,
    now: float,
    unverified: _Unverified,
) -> list[Observation]:
    out = []
    d = cfg.dialect_obj
    for s in cfg.subsystems:
        db = cfg.subsystem_database(s)
        subject = f"{cfg.server_id}/{s.name}"
        counts = snap.rows.get(db)
        if counts is None:
            reason = snap.unverified.get(f"db {db}") or f"database {db} not read this round"
            out.append(unverified("db.rows", subject, s.impact(), s.name, reason, subsystem=s.name, database=db))
            continue
        lost: list[dict[str, Any]] = []
        unknown: dict[str, str] = {}
        judged, worst = 0, 0.0
        default_schema = d.default_schema(db)
        for name in s.tables:
            table = name if "." in name else f"{default_schema}.{name}"
            if table not in snap.stats.get(db, {}):
                continue  # dropped or hidden: the table check says which
            ref = state.reference(db, table, now) if state else None
            if ref is None and state is None and baseline is not None:
                ref = baseline.rows.get(db, {}).get(table)
            if ref is None or ref < max(1, s.min_rows):
                continue
            current = counts.get(table)
            if current is None:
                unknown[table] = snap.rows_unverified.get(db, {}).get(table, "row count unknown")
                continue
            judged += 1
            loss = ref - current
            fraction = loss / ref
            worst = max(worst, fraction)
            if fraction >= s.drop_fraction or (s.drop_rows is not None and loss >= s.drop_rows):
                why = snap.suspects.get(db, {}).get(table)
                lost.append(
                    {
                        "table": table,
                        "name": d.display(db, table),
                        "reference": ref,
                        "now": current,
                        "lost_fraction": round(fraction, 3),
                        "exact": table in snap.exact.get(db, {}),
                        "why": why,
                    }
                )
                if state is not None:
                    state.open_loss(db, table, ref, now, recreated=why == "re-created")
            elif state is not None and state.loss(db, table) is not None:
                state.close_loss(db, table)  # the rows are back
        detail: dict[str, Any] = {"subsystem": s.name, "database": db, "tables_judged": judged, "tables_lost": lost}
        if lost:
            top = max(lost, key=lambda x: x["lost_fraction"])
            more = f" +{len(lost) - 1}" if len(lost) > 1 else ""
            detail.update(worst=visible(top["name"], 200) + more, percent=round(top["lost_fraction"] * 100))
            out.append(Observation("db.rows", subject, False, s.impact(), round(worst, 3), s.name, detail))
        elif unknown:
            reason = "; ".join(f"{d.display(db, t)}: {why}" for t, why in sorted(unknown.items()))
            out.append(unverified("db.rows", subject, s.impact(), s.name, reason, **detail, tables_unverified=unknown))
        else:
            mine = [n if "." in n else f"{default_schema}.{n}" for n in s.tables]
            accepted = {t: state.accepted_entry(db, t) for t in mine} if state and state.accepted else {}
            accepted = {t: a for t, a in accepted.items() if a}
            if accepted:
                detail["accepted"] = accepted
            out.append(Observation("db.rows", subject, True, s.impact(), round(worst, 3), s.name, detail))
    return out


def _statistics(cfg: Config, snap: Snapshot, state: RowState | None) -> list[Observation]:
    """Statistics that disagree with the exact counts, or never refresh: reported, not an incident."""
    out = []
    for db, stats in snap.stats.items():
        stale = []
        for table, n in snap.exact.get(db, {}).items():
            estimate = stats[table].rows if table in stats else None
            if estimate is None or abs(estimate - n) >= max(1, n) * 0.3:
                stale.append({"table": table, "statistics": estimate, "exact": n})
        autovacuum_off = sorted(t for t, s in stats.items() if s.autovacuum_off)
        if not stale and not autovacuum_off:
            continue
        n = len(stale) + len([t for t in autovacuum_off if t not in {x["table"] for x in stale}])
        out.append(
            Observation(
                "db.statistics",
                f"{cfg.server_id}/{db}",
                None,
                Impact(),
                value=float(n),
                name=f"{db} — 统计信息陈旧：{n} 张表，以精确计数为准 / statistics stale: {n} tables, exact counts used",
                detail={"database": db, "stale": stale[:50], "autovacuum_off": autovacuum_off[:50]},
            )
        )
    return out


def _anomalies(cfg: Config, snap: Snapshot, unverified: _Unverified) -> list[Observation]:
    out = []
    subs = {s.name: s for s in cfg.subsystems}
    for rule in cfg.anomalies:
        check = "db.anomaly" if rule.priority == "other" else f"db.anomaly.{rule.priority}"
        subject = f"{cfg.server_id}/{rule.name}"
        impact = subs[rule.subsystem].impact()
        detail = {
            "subsystem": rule.subsystem,
            "priority": rule.priority,
            "priority_rank": PRIORITY_RANK[rule.priority],
            "max_rows": rule.max_rows,
        }
        count = snap.anomalies.get(rule.name)
        if count is None:
            db = cfg.anomaly_database(rule)
            reason = (
                snap.unverified.get(f"anomaly {rule.name}")
                or snap.unverified.get(f"db {db}")
                or f"database {db} not read this round"
            )
            out.append(unverified(check, subject, impact, rule.name, reason, **detail))
            continue
        out.append(
            Observation(
                check,
                subject,
                count <= rule.max_rows,
                impact,
                value=float(count),
                name=rule.name,
                detail={**detail, "anomalous_rows": count},
            )
        )
    return out


# -- sessions, locks, connections ---------------------------------------------------------------------------


def _session_detail(s: Session | None) -> dict[str, Any]:
    if s is None:
        return {"who": "?", "hidden": True}
    return {
        "who": visible(s.who()),
        "login": s.login,
        "host": s.host,
        "program": s.program,
        "database": s.database,
        "state": s.state,
        "transaction_s": None if s.xact_s is None else round(s.xact_s),
        "idle_s": None if s.idle_s is None else round(s.idle_s),
        "statement": s.statement,
        "tables_locked": s.tables,
        "probable": s.probable,
    }


def _chain_impact(cfg: Config, chain: Chain, server: Impact) -> Impact:
    owners = cfg.subsystem_tables()
    subs: list[Subsystem] = []
    for w in chain.waiters:
        if w.table and w.database:
            subs += owners.get((w.database, w.table), [])
    subs = list({s.name: s for s in subs}.values())
    impact = merged_impact(subs, server)
    if server.hospital_critical and not impact.hospital_critical:
        impact = Impact(departments=impact.departments, hospital_critical=True)
    return impact


def _frozen(cfg: Config, snap: Snapshot, server: Impact, unverified: _Unverified) -> list[Observation]:
    sid = cfg.server_id
    subject = f"{sid}/frozen"
    act = snap.activity
    locks_unread = {k: v for k, v in snap.unverified.items() if k == "locks" or k.startswith("locks ")}
    if act is None or locks_unread:
        reason = "; ".join(locks_unread.values()) or snap.unverified.get("activity", "not read this round")
        return [unverified("db.frozen", subject, server, cfg.server_label, reason)]
    found = chains(act.waits)
    blocked_chains = [(c, c.blocked(cfg.freeze_wait)) for c in found]
    frozen = [(c, b) for c, b in blocked_chains if len(b) >= cfg.freeze_sessions]
    detail: dict[str, Any] = {
        "threshold_sessions": cfg.freeze_sessions,
        "threshold_wait_s": cfg.freeze_wait,
        "waiting": len(act.waits),
        "blind_spots": list(snap.server.blind_spots),
    }
    if not frozen:
        counter = act.waits_without_detail
        if counter is not None and counter >= cfg.freeze_sessions:
            # Only the server's counter is visible: the freeze is real, its blocker unknown.
            detail.update(blocker=UNKNOWN, who="?", blocked=counter, wait_s="?", tables="?", counter_only=True)
            return [Observation("db.frozen", subject, False, server, None, cfg.server_label, detail)]
        longest = max((w.wait_s or 0 for w in act.waits), default=0.0)
        return [Observation("db.frozen", subject, True, server, round(longest, 1), cfg.server_label, detail)]
    chain, blocked = frozen[0]
    sid_head = session_id(chain.head)
    head = act.sessions.get(sid_head)
    wait_s = max((w.wait_s or 0 for w in blocked), default=0.0)
    tables = chain.tables or (head.tables if head else [])
    detail.update(_session_detail(head))
    detail.update(
        blocker=sid_head if chain.head != UNKNOWN else UNKNOWN,
        probable=chain.head.startswith(PROBABLE) or bool(head and head.probable),
        blocked=len(blocked),
        wait_s=round(wait_s),
        tables=visible(", ".join(tables[:3]) + (f" +{len(tables) - 3}" if len(tables) > 3 else ""), 160) or "?",
        waiters=[{"session": w.waiter, "wait_s": w.wait_s, "table": w.table, "kind": w.kind} for w in blocked[:20]],
        other_chains=[{"blocker": c.head, "blocked": len(b)} for c, b in frozen[1:5]],
    )
    if chain.head == UNKNOWN:
        detail["who"] = "?"
    return [
        Observation(
            "db.frozen", subject, False, _chain_impact(cfg, chain, server), round(wait_s, 1), cfg.server_label, detail
        )
    ]


def _transactions(
    cfg: Config, snap: Snapshot, server: Impact, unverified: _Unverified, frozen_heads: set[str]
) -> list[Observation]:
    sid = cfg.server_id
    act = snap.activity
    if act is None:
        reason = snap.unverified.get("activity", "not read this round")
        return [
            unverified("db.long_transaction", f"{sid}/long_transaction", server, cfg.server_label, reason),
            unverified("db.idle_in_transaction", f"{sid}/idle_in_transaction", server, cfg.server_label, reason),
        ]
    # The probe's own sessions never hold a transaction open; the head of a freeze is already its incident.
    mine = [s for s in act.long_transactions if s.program != "hisguard" and s.id not in frozen_heads]
    long = sorted((s for s in mine if (s.xact_s or 0) >= cfg.long_transaction), key=lambda s: -(s.xact_s or 0))
    idle = sorted(
        (
            s
            for s in mine
            if (s.state or "").startswith("idle in transaction")
            and (s.idle_s or 0) >= cfg.idle_in_transaction
            and ((s.locks_held or 0) > 0 or s.writes)
        ),
        key=lambda s: -(s.idle_s or 0),
    )
    out = []
    for check, found, limit, key in (
        ("db.long_transaction", long, cfg.long_transaction, "xact_s"),
        ("db.idle_in_transaction", idle, cfg.idle_in_transaction, "idle_s"),
    ):
        subject = f"{sid}/{check.split('.', 1)[1]}"
        detail: dict[str, Any] = {"threshold_s": limit, "sessions": len(found)}
        if found:
            top = found[0]
            detail.update(session=top.id, age_s=round(getattr(top, key) or 0), **_session_detail(top))
            detail["others"] = [
                {"session": s.id, "who": visible(s.who()), "age_s": round(getattr(s, key) or 0)} for s in found[1:10]
            ]
        value = float(getattr(found[0], key) or 0) if found else 0.0
        out.append(Observation(check, subject, not found, server, round(value, 1), cfg.server_label, detail))
    return out


def _connections(
    cfg: Config, snap: Snapshot, server: Impact, memory: Memory, unverified: _Unverified
) -> list[Observation]:
    sid = cfg.server_id
    act = snap.activity
    out: list[Observation] = []
    if act is None:
        reason = snap.unverified.get("activity", "not read this round")
        return [unverified("db.connections.full", f"{sid}/connections", server, cfg.server_label, reason)]
    refused_now, aborted = {}, {}
    for key, n in act.refused.items():
        before = memory.counters.get(key)
        memory.counters[key] = n
        if before is not None and n > before:
            # Only refusals for max_connections mean "full"; aborted logins include wrong passwords.
            (refused_now if key == "Connection_errors_max_connections" else aborted)[key] = n - before
    uses = list(act.connections)
    for db in snap.refused:
        name = db.split(" ", 1)[1]
        if not any(c.scope == "database" and c.name == name for c in uses):
            uses.append(ConnectionUse("database", name, None, None))
    for c in uses:
        what_zh, what_en = _SCOPE_TEXT[c.scope]
        if c.name:
            what_zh, what_en = f"{what_zh} {visible(c.name, 60)}", f"{what_en} {visible(c.name, 60)}"
        subject = f"{sid}/connections" if c.scope == "server" else f"{sid}/{c.scope}:{c.name}/connections"
        limit = c.limit
        if c.scope == "login" and cfg.logins.get(c.name):
            limit = cfg.logins[c.name]
        refused = snap.refused.get(f"database {c.name}") if c.scope == "database" else None
        base = {"scope": c.scope, "target": c.name, "what_zh": what_zh, "what_en": what_en}
        if c.in_use is None and refused is None:
            reason = "this login cannot count other logins' sessions (" + cfg.dialect_obj.lock_privilege + ")"
            out.append(
                unverified("db.connections.full", subject, server, f"{cfg.server_label} {what_en}", reason, **base)
            )
            continue
        detail = {**base, "in_use": c.in_use if c.in_use is not None else "?", "limit": limit if limit else "∞"}
        full = refused is not None or (limit is not None and c.in_use is not None and c.in_use >= limit)
        if c.scope == "server" and refused_now:
            full = True
            detail["refused_since_last_round"] = refused_now
        if c.scope == "server" and aborted:
            detail["aborted_logins_since_last_round"] = aborted
        if refused:
            detail["refused"] = refused
        near = (
            not full
            and limit is not None
            and c.in_use is not None
            and c.in_use >= limit * cfg.connections_warn_percent / 100.0
        )
        value = None if c.in_use is None else float(c.in_use)
        out.append(Observation("db.connections.full", subject, not full, server, value, cfg.server_label, detail))
        out.append(Observation("db.connections", subject, not near, server, value, cfg.server_label, detail))
    return out


def refused_login(cfg: Config, server: Impact, scope: str | None, message: str) -> list[Observation]:
    """The probe's own login refused because the server (or a login, a database, this host) is full."""
    kind, _, name = (scope or "server").partition(" ")
    if kind == "login" and not name:
        name = cfg.user or cfg.dialect_obj.default_user
    if kind == "host":
        kind, name = "server", ""
    what_zh, what_en = _SCOPE_TEXT.get(kind, _SCOPE_TEXT["server"])
    if name:
        what_zh, what_en = f"{what_zh} {visible(name, 60)}", f"{what_en} {visible(name, 60)}"
    subject = f"{cfg.server_id}/connections" if kind == "server" else f"{cfg.server_id}/{kind}:{name}/connections"
    detail = {"scope": kind, "target": name, "what_zh": what_zh, "what_en": what_en, "in_use": "?", "limit": "?",
              "refused": message, "error": "full"}  # fmt: skip
    return [Observation("db.connections.full", subject, False, server, None, cfg.server_label, detail)]


# -- backups, log, CHECKDB ----------------------------------------------------------------------------------------


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
