"""SQL Server: every T-SQL statement parsed (sqlglot, tsql), the probe driven by rows recorded in SQL Server's
shapes (tests/data/mssql), and real pymssql against a port that accepts and never answers.

No SQL Server runs here; the statements and the logic around them are what can be tested strictly.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from hisguard.agent.classify import Failing, classify
from hisguard.checks.base import Impact, ProbeContext
from hisguard.checks.database import Config, probe
from hisguard.checks.database.dialects import mssql, mysql, postgresql
from hisguard.checks.database.dialects.base import TAG
from hisguard.checks.database.rebaseline import record
from hisguard.plan import Scope, Severity, Trigger
from hisguard.report import IncidentEvent, utcnow
from tests.test_db_live import driver

DATA = Path(__file__).parent / "data" / "mssql"
SAMPLE_NAMES = ["HIS", "住院数据库", "odd]name"]


QUOTE = {"tsql": mssql.quote_brackets, "postgres": postgresql.quote, "mysql": mysql.quote}


def _formatted(statements: dict[str, str], dialect: str) -> list[tuple[str, str]]:
    out = []
    quote = QUOTE[dialect]
    for key, sql in statements.items():
        for name in SAMPLE_NAMES if "{db}" in sql or "{table}" in sql else [None]:
            db = quote(name) if name else "`x`"
            parts = [name, "dbo", name] if dialect == "tsql" else ["s", name]
            table = ".".join(quote(part) for part in parts) if name else ""
            text = sql.format(db=db, lock_ms=5000, seconds=5, ms=5000, ids="51, 52", table=table)
            out.append((f"{key}:{name}", text.replace("%s", "'x'")))
    return out


@pytest.mark.parametrize(
    ("module", "dialect"), [(mssql, "tsql"), (postgresql, "postgres"), (mysql, "mysql")], ids=["tsql", "pg", "mysql"]
)
def test_every_statement_parses_in_its_dialect(module: Any, dialect: str) -> None:
    for key, sql in _formatted(module.STATEMENTS, dialect):
        trees = sqlglot.parse(sql, read=dialect)  # raises on anything the dialect cannot read
        assert trees and all(t is not None for t in trees), key
        # Parsed for real, not kept as an opaque command; and tagged for DBAs and for the recordings.
        assert not any(isinstance(n, exp.Command) for t in trees for n in t.walk()), key
        assert TAG.search(sql), key


def test_tsql_reads_only_catalogue_views_and_never_writes() -> None:
    writes = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Into)
    for key, sql in _formatted(mssql.STATEMENTS, "tsql"):
        for tree in sqlglot.parse(sql, read="tsql"):
            assert not any(isinstance(n, writes) for n in tree.walk()), key
            if isinstance(tree, exp.Select) and not key.startswith("exact_count:"):
                tables = {t.sql("tsql") for t in tree.find_all(exp.Table)}
                assert all(re.search(r"\bsys\.|msdb\.dbo\.(backupset|suspect_pages)", t) for t in tables), (key, tables)


def test_database_names_are_bracket_quoted_not_spliced() -> None:
    sql = mssql.STATEMENTS["row_counts"].format(db=mssql.quote_brackets("x]; DROP TABLE t; --"))
    (tree,) = sqlglot.parse(sql, read="tsql")
    assert isinstance(tree, exp.Select) and "DROP" not in [n.key.upper() for n in tree.walk()]


# -- recorded rows ---------------------------------------------------------------------------


class RecordedCursor:
    def __init__(self, conn: RecordedServer) -> None:
        self.conn = conn
        self.description: list[tuple[Any, ...]] | None = None
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn.executed.append(sql)
        result = recorded_result(self.conn.data, sql)
        if result is None:
            self.description = None
            return
        self.description = [(c, 1, None, None, None, None, None) for c in result["columns"]]
        self._rows = [tuple(r) for r in result["rows"]]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def close(self) -> None:
        pass


def mssql_error(number: int, text: str) -> Exception:
    pymssql = driver("pymssql")
    return pymssql.OperationalError((number, text.encode()))


def _bracketed(text: str) -> list[str]:
    return [m.replace("]]", "]") for m in re.findall(r"\[((?:[^\]]|\]\])+)\]", text)]


def recorded_result(data: dict[str, Any], sql: str) -> dict[str, Any] | None:
    """The rows recorded for one statement (None: a statement that returns nothing, such as SET or USE).

    Per-database statements are keyed by database, exact counts by database.schema.table; anomaly rules by
    their text. A database the login may not enter raises what pymssql raises (916).
    """
    m = TAG.search(sql)
    key = m.group(1) if m else None
    if key in ("session", "use"):
        return None
    if key == "anomaly" or key is None:
        result = data["anomalies"][TAG.sub("", sql).strip()]
        if "error" in result:  # what the server answered instead of rows (a revoked permission…)
            raise mssql_error(*result["error"])
        return result
    if key in ("columns", "row_counts", "hobt_tables"):
        db = re.search(r"FROM \[((?:[^\]]|\]\])+)\]\.sys\.", sql).group(1).replace("]]", "]")
        if db not in data[key]:
            raise mssql_error(916, f'The server principal is not able to access the database "{db}"')
        return data[key][db]
    if key == "exact_count":
        table = ".".join(_bracketed(sql.split(" FROM ", 1)[1]))
        return data[key][table]
    return data[key]


def load_scenario(scenario: str) -> dict[str, Any]:
    """A recording; a scenario that names `_base` holds only what differs from that one."""
    data = json.loads((DATA / f"{scenario}.json").read_text(encoding="utf-8"))
    base = data.pop("_base", None)
    return {**load_scenario(base), **data} if base else data


class RecordedServer:
    """A DB-API connection answering each tagged statement with the rows recorded for it."""

    def __init__(self, scenario: str) -> None:
        self.data = load_scenario(scenario)
        self.executed: list[str] = []

    def cursor(self) -> RecordedCursor:
        return RecordedCursor(self)

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


def his_config(**extra: Any) -> Config:
    return Config.model_validate(
        {
            "dialect": "mssql",
            "host": "10.20.1.5",
            "label": "HIS 主数据库",
            "user": "hisguard",
            "password": "S3cret-门诊",
            "databases": ["HIS", "住院数据库", "LIS", "PACS_RESTORE", "EMR", "HRP", "OLD_HIS_2019", "体检", "药房库"],
            "offline_ok": ["OLD_HIS_2019"],
            "impact": {"hospital_critical": True},
            "read_error_log": True,
            "subsystems": [
                {"name": "门诊收费", "database": "HIS", "tables": ["dbo.MZ_SFMX", "MZ_FP", "门诊挂号"],
                 "departments": ["门诊收费", "急诊收费"]},
                {"name": "住院", "database": "HIS", "tables": ["ZY_BRXX", "ZY_FYMX"], "hospital_critical": True},
                {"name": "药房", "database": "HIS", "tables": ["YF_YPKC"], "departments": ["门诊药房", "住院药房"]},
                {"name": "财务", "database": "HIS", "tables": ["CW_PZ"], "departments": ["财务科"]},
            ],
            "anomalies": [
                {"name": "门诊负数收费", "subsystem": "门诊收费", "priority": "patient_fee",
                 "query": "SELECT COUNT(*) FROM dbo.MZ_SFMX WHERE JE < 0"},
                {"name": "凭证借贷不平", "subsystem": "财务", "priority": "accounting",
                 "query": "SELECT COUNT(*) FROM dbo.CW_PZ WHERE JF <> DF"},
            ],
            **extra,
        }
    )  # fmt: skip


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> dict[str, RecordedServer]:
    current: dict[str, RecordedServer] = {"conn": RecordedServer("healthy")}
    monkeypatch.setattr(mssql.DIALECT, "connect", lambda *a, **k: current["conn"])
    return current


def run(cfg: Config, ctx: ProbeContext) -> list[Any]:
    return asyncio.run(probe(cfg, ctx))


def test_recorded_healthy_server_is_quiet_then_a_bad_night_maps_to_triggers(server, tmp_path: Path) -> None:
    cfg = his_config()
    ctx = ProbeContext(host="his-db-01", state_dir=tmp_path)
    record(cfg, tmp_path, "initial")
    obs = run(cfg, ctx)
    assert [o for o in obs if o.ok is False] == []
    state = {o.subject.split("/", 1)[1]: o.name for o in obs if o.check == "db.state"}
    assert state["OLD_HIS_2019"] == "OLD_HIS_2019 [OFFLINE]"  # expected offline: fine
    healthy_statements = next(o for o in obs if o.check == "db.connect").detail["statements"]

    server["conn"] = RecordedServer("incident")
    obs = run(cfg, ctx)
    failed = {(o.check, o.subject.split("/", 1)[1] if "/" in o.subject else o.subject) for o in obs if o.ok is False}
    states = {o.subject.split("/", 1)[1]: (o.ok, o.detail["state"]) for o in obs if o.check == "db.state"}
    # States 0-6: SUSPECT, RECOVERY_PENDING, EMERGENCY and an unexpected OFFLINE start the plan; RESTORING,
    # RECOVERING and an expected OFFLINE do not; a database this login cannot see is missing.
    assert states == {
        "HIS": (True, "ONLINE"),
        "PACS_RESTORE": (True, "RESTORING"),
        "EMR": (True, "RECOVERING"),
        "LIS": (False, "RECOVERY_PENDING"),
        "住院数据库": (False, "SUSPECT"),
        "HRP": (False, "EMERGENCY"),
        "OLD_HIS_2019": (True, "OFFLINE"),
        "体检": (False, "OFFLINE"),
        "药房库": (False, "MISSING"),
    }
    assert ("db.restart", "10.20.1.5:1433") in failed
    assert ("db.corruption", "HIS") in failed and ("db.corruption", "database_id 42") in failed
    corruption = next(o for o in obs if o.check == "db.corruption" and o.subject.endswith("/HIS"))
    assert [p["page_id"] for p in corruption.detail["suspect_pages"]] == [123456, 123457]
    (read_retry,) = next(o for o in obs if o.subject.endswith("/(error log)") and not o.ok).detail["errors"]
    assert "Error: 825" in read_retry
    assert ("db.table", "HIS/dbo.ZY_FYMX") in failed and ("db.column", "HIS/dbo.MZ_FP") in failed
    assert ("db.rows", "门诊收费") in failed and ("db.rows", "住院") not in failed
    assert {("db.backup", f"HIS/backup-{k}") for k in ("full", "diff", "log")} <= failed
    assert ("db.backup", "住院数据库/backup-full") in failed
    assert not any(s.startswith("住院数据库/backup-log") for _, s in failed)  # SIMPLE recovery: no log backups
    lis_full = next(o for o in obs if o.subject.endswith("LIS/backup-full"))
    assert lis_full.detail["never"] is True
    assert ("db.log_full.urgent", "HIS/log") in failed and ("db.checkdb", "HIS/checkdb") in failed
    # The statement count does not depend on what the server holds: catalogue queries, not per-table ones.
    assert next(o for o in obs if o.check == "db.connect").detail["statements"] <= healthy_statements

    incidents = {i.key.split("/", 1)[1].replace("10.20.1.5:1433/", ""): i for i in _classify(obs)}
    t = {k: (int(i.trigger), i.severity.value) for k, i in incidents.items()}
    assert t["db.state/住院数据库"] == (3, "critical")
    assert t["db.table/HIS/dbo.ZY_FYMX"] == (3, "critical")  # 住院 is hospital-critical
    assert t["db.column/HIS/dbo.MZ_FP"] == (3, "routine")
    assert t["db.corruption/HIS"] == (3, "critical")
    assert t["db.restart/10.20.1.5:1433"][0] == 2
    assert t["db.rows/门诊收费"] == (4, "urgent") and incidents["db.rows/门诊收费"].departments == [
        "门诊收费",
        "急诊收费",
    ]
    assert t["db.anomaly.patient_fee/门诊负数收费"] == (4, "urgent")
    assert t["db.anomaly.accounting/凭证借贷不平"][0] == 4
    assert t["db.backup/HIS/backup-full"] == (4, "routine")
    assert t["db.log_full.urgent/HIS/log"] == (4, "urgent")
    assert t["db.checkdb/HIS/checkdb"] == (3, "routine")
    # Chinese names pass the wire schema unchanged.
    inc = incidents["db.state/住院数据库"]
    event = _event(inc)
    again = IncidentEvent.model_validate_json(event.model_dump_json())
    assert again.title_zh == "数据库 住院数据库 [SUSPECT] 置疑或不可用" and again.evidence["state"] == "SUSPECT"


def _classify(obs: list[Any]) -> list[Any]:
    return classify("his-db-01", [Failing("his-db", o) for o in obs if o.ok is False])


def _event(inc: Any) -> IncidentEvent:
    return IncidentEvent(
        key=inc.key,
        state="open",
        trigger=inc.trigger,
        severity=inc.severity,
        scope=inc.scope,
        host="his-db-01",
        departments=inc.departments,
        title_zh=inc.title.zh,
        title_en=inc.title.en,
        observed_at=utcnow(),
        evidence=inc.evidence,
    )


def test_every_statement_sent_is_one_of_the_parsed_ones_and_tagged(server, tmp_path: Path) -> None:
    cfg = his_config()
    record(cfg, tmp_path)
    server["conn"] = RecordedServer("incident")  # exact counts and anomaly rules run too
    run(cfg, ProbeContext(host="h", state_dir=tmp_path))
    sent = server["conn"].executed
    anomaly_queries = {a.query for a in cfg.anomalies}
    known = {sql for _, sql in _formatted(mssql.STATEMENTS, "tsql")}
    tags = set()
    for sql in sent:
        m = TAG.search(sql)
        assert m and sql.startswith(m.group(0)), sql  # every statement, the rules' too, starts with its tag
        tags.add(m.group(1))
        if m.group(1) == "anomaly":
            assert sql[len(m.group(0)) :].strip() in anomaly_queries, sql
            continue
        assert m.group(1) in mssql.STATEMENTS, sql
        if not re.search(r"\{\w+\}", mssql.STATEMENTS[m.group(1)]):
            assert sql in known, sql
        sqlglot.parse(sql, read="tsql")
    assert {"anomaly", "exact_count", "lock_waits", "connections", "long_transactions"} <= tags


def test_a_database_the_login_cannot_read_is_not_reported_as_dropped(server, tmp_path: Path) -> None:
    cfg = his_config()
    record(cfg, tmp_path)
    del server["conn"].data["columns"]["HIS"]
    obs = run(cfg, ProbeContext(host="h", state_dir=tmp_path))
    assert not [o for o in obs if o.check in ("db.table", "db.rows") and o.subject.startswith("10.20.1.5:1433/HIS")]
    (read,) = [o for o in obs if o.check == "db.read" and o.subject.endswith("/HIS")]
    assert read.ok is None and "not able to access" in read.detail["unverified_reason"]
    assert "cannot verify since" in (read.name or "")
    assert [o for o in obs if o.ok is False] == []


def test_patient_fee_rules_outrank_accounting_rules_at_every_scope() -> None:
    from hisguard.agent.classify import incident_for
    from hisguard.checks.base import Observation

    for impact in (Impact(), Impact(departments=("门诊收费",)), Impact(hospital_critical=True)):
        fee = incident_for("h", Failing("j", Observation("db.anomaly.patient_fee", "s/a", False, impact, 1.0)))
        acct = incident_for("h", Failing("j", Observation("db.anomaly.accounting", "s/b", False, impact, 1.0)))
        assert fee and acct and fee.trigger is acct.trigger is Trigger.DATA_LOSS
        assert fee.severity.rank > acct.severity.rank or fee.severity is acct.severity is Severity.URGENT
    host_fee = incident_for("h", Failing("j", Observation("db.anomaly.patient_fee", "s/a", False, Impact(), 1.0)))
    assert host_fee and host_fee.scope is Scope.HOST and host_fee.severity is Severity.URGENT


def test_backup_rules_follow_zabbix_defaults(server, tmp_path: Path) -> None:
    data = server["conn"].data
    rows = data["backups"]["rows"]
    rows[:] = [
        ["HIS", "FULL", 9 * 1440, None, 7 * 60],  # full 9 d: fine; no differential but the full is older than 6 d
        ["住院数据库", "SIMPLE", 3 * 1440, None, None],  # full 3 d stands in for a differential; SIMPLE: no log
        ["LIS", "BULK_LOGGED", 1440, 5 * 1440, 8 * 60 + 1],  # log 8 h 1 min: overdue
    ]
    cfg = his_config(databases=["HIS", "住院数据库", "LIS"], offline_ok=[])
    obs = run(cfg, ProbeContext(host="h", state_dir=tmp_path))
    backups = {o.subject.split("/", 1)[1]: o.ok for o in obs if o.check == "db.backup"}
    assert backups == {
        "HIS/backup-full": True,
        "HIS/backup-diff": False,
        "HIS/backup-log": True,
        "住院数据库/backup-full": True,
        "住院数据库/backup-diff": True,
        "LIS/backup-full": True,
        "LIS/backup-diff": True,
        "LIS/backup-log": False,
    }
    urgent = his_config(databases=["HIS"], offline_ok=[], backups={"severity": "urgent", "full_days": 5})
    obs = run(urgent, ProbeContext(host="h", state_dir=tmp_path / "u"))
    incidents = [i for i in _classify(obs) if "backup" in i.key]
    assert sorted(i.key.rsplit("/", 1)[1] for i in incidents) == ["backup-diff", "backup-full"]
    assert {(i.trigger, i.severity) for i in incidents} == {(Trigger.DATA_LOSS, Severity.URGENT)}


# -- a server that accepts and never answers -----------------------------------------------------


def test_silent_server_times_out_within_the_deadline_and_threads_never_pile_up(tmp_path: Path) -> None:
    driver("pymssql")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    cfg = Config(
        dialect="mssql",
        port=listener.getsockname()[1],
        databases=["HIS"],
        password="never-logged-门诊",
        interval=1.0,
        timeout=1.0,
        connect_timeout=1.0,
    )
    ctx = ProbeContext(host="h", state_dir=tmp_path)
    threads_before = threading.active_count()
    peak = threads_before
    rounds = []
    loop = asyncio.new_event_loop()
    try:
        for _ in range(12):
            started = time.monotonic()
            obs = loop.run_until_complete(probe(cfg, ctx))
            rounds.append((time.monotonic() - started, obs))
            peak = max(peak, threading.active_count())
            loop.run_until_complete(asyncio.sleep(0.2))
    finally:
        loop.close()  # does not wait for the stuck worker
        stop.set()
        for s in held:
            s.close()
        listener.close()
    for elapsed, obs in rounds:
        (o,) = obs
        assert (o.check, o.ok, o.detail["error"]) == ("db.connect", False, "timeout")
        assert elapsed < cfg.round_deadline + 0.3
        assert "never-logged" not in json.dumps(o.detail, ensure_ascii=False)
    # One stuck driver call at most, whatever the number of rounds.
    assert peak <= threads_before + 1, (threads_before, peak)
    assert any("previous round" in o.detail["message"] for _, (o,) in rounds[1:])
    assert len(held) <= 3  # the later rounds never opened another connection


@pytest.mark.parametrize(
    ("number", "text", "kind"),
    [
        (
            18456,
            b"Login failed for user 'hisguard'.DB-Lib error message 20018, severity 14:\nGeneral SQL Server error: "
            b"Check messages from the SQL Server\nDB-Lib error message 20002, severity 9:\nAdaptive Server connection "
            b"failed (10.20.1.5)\n",
            "login",
        ),
        # pymssql keeps the number of an earlier message: the text decides.
        (
            18456,
            b"DB-Lib error message 20009, severity 9:\nUnable to connect: Adaptive Server is unavailable or does not "
            b"exist (10.20.1.5)\nNet-Lib error during Connection refused (111)\n",
            "unreachable",
        ),
        (
            20003,
            b"DB-Lib error message 20003, severity 6:\nAdaptive Server connection timed out (10.20.1.5)\n",
            "timeout",
        ),
        # A rule naming a table that is gone (renamed): the rule cannot verify, the server is fine.
        (208, b"Invalid object name 'dbo.MZ_SFMX'.DB-Lib error message 20018, severity 16:\n", "missing"),
        (4060, b"Cannot open database requested by the login. DB-Lib error message 20018, severity 11:\n", "query"),
    ],
)
def test_pymssql_errors_are_classified_by_their_text(number: int, text: bytes, kind: str) -> None:
    err = mssql.DIALECT.error(mssql_error(number, text.decode()))
    assert err.kind == kind
    assert ("18456" in str(err)) == (kind == "login")


def test_uptime_reset_between_rounds_is_a_restart_even_past_the_window(server, tmp_path: Path) -> None:
    cfg = his_config(restart_window=600)
    ctx = ProbeContext(host="h", state_dir=tmp_path)
    uptime = server["conn"].data["server"]["rows"][0]
    restart = [o for o in run(cfg, ctx) if o.check == "db.restart"]
    assert [o.ok for o in restart] == [True]
    uptime[1] = 3000  # restarted since the last round, longer ago than the window
    (restart,) = [o for o in run(cfg, ctx) if o.check == "db.restart"]
    assert (restart.ok, restart.detail["reset"]) == (False, True)
    (inc,) = [i for i in _classify([restart])]
    assert inc.trigger is Trigger.SOFTWARE and inc.severity is Severity.URGENT  # capped: it is running again
    uptime[1] = 3060
    assert [o.ok for o in run(cfg, ctx) if o.check == "db.restart"] == [True]


# -- frozen, saturated, and what the login cannot see (rows in the DMVs' documented columns) ------------------


def test_recorded_freeze_names_the_head_blocker_and_its_transaction(server, tmp_path: Path) -> None:
    cfg = his_config()
    ctx = ProbeContext(host="his-db-01", state_dir=tmp_path)
    record(cfg, tmp_path)
    server["conn"] = RecordedServer("frozen")
    obs = run(cfg, ctx)
    incidents = {i.evidence["check"]: i for i in _classify(obs)}
    inc = incidents["db.frozen"]
    assert inc.trigger is Trigger.SOFTWARE and (inc.scope, inc.severity) == (Scope.HOSPITAL, Severity.CRITICAL)
    # Five sessions behind 87: four on MZ_SFMX (three of them through 91), one on MZ_FP; 94 has waited 12 s,
    # under freeze_wait (30 s). 96 waits in another chain of one session, under freeze_sessions (3).
    assert inc.title.en == (
        "HIS 主数据库: database frozen: 4 sessions blocked by session 87 (his_app@HIS-APP-03, 门诊收费系统) "
        "for 95 s on dbo.MZ_SFMX, dbo.MZ_FP"
    )
    assert inc.title.zh.startswith("HIS 主数据库 数据库卡死：4 个会话被会话 87（his_app@HIS-APP-03, 门诊收费系统）")
    ev = inc.evidence
    assert (ev["state"], ev["transaction_s"], ev["idle_s"]) == ("idle in transaction", 312, 301)
    assert ev["statement"].startswith("UPDATE dbo.MZ_SFMX") and ev["other_chains"] == []
    assert sorted(w["session"] for w in ev["waiters"]) == ["91", "92", "93", "95"]
    # Session 87 is the freeze itself; the idle HRP month-end transaction is the warning before one.
    idle = incidents["db.idle_in_transaction"]
    assert idle.evidence["session"] == "102" and idle.severity is Severity.URGENT
    assert "hrp_etl@HRP-01, 月结" in idle.title.en
    sent = server["conn"].executed
    assert any("hobt_id IN (72057594043236352, 72057594043301888)" in q for q in sent)
    assert any("session_id IN (" in q and "87" in q for q in sent if "hisguard:sessions" in q)


def test_recorded_quiet_server_reads_locks_and_connections_without_incident(server, tmp_path: Path) -> None:
    cfg = his_config(logins={"his_app": 180})
    record(cfg, tmp_path)
    obs = run(cfg, ProbeContext(host="h", state_dir=tmp_path))
    by = {(o.check, o.subject.split("/", 1)[1] if "/" in o.subject else ""): o for o in obs}
    assert by[("db.frozen", "frozen")].ok is True
    server_use = by[("db.connections.full", "connections")]
    assert server_use.ok is True and server_use.detail["in_use"] == 212 and server_use.detail["limit"] == 32767
    # his_app: 168 of the 180 the configuration gives it (SQL Server has no per-login limit of its own): 93 %.
    near = by[("db.connections", "login:his_app/connections")]
    assert near.ok is False and near.detail["in_use"] == 168
    (inc,) = _classify([near])
    assert inc.trigger is Trigger.SOFTWARE and inc.severity is Severity.URGENT
    assert "connections near the limit (login his_app: 168/180)" in inc.title.en


def test_login_refused_because_user_connections_are_used_up_is_an_incident(monkeypatch, tmp_path: Path) -> None:
    text = (
        "Could not connect because the maximum number of '500' user connections has already been reached. The "
        "system administrator can use sp_configure to increase the maximum value. The connection has been closed."
        "DB-Lib error message 20018, severity 20:\nGeneral SQL Server error: Check messages from the SQL Server\n"
    )

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise mssql.DIALECT.error(mssql_error(17809, text))

    monkeypatch.setattr(mssql.DIALECT, "connect", refuse)
    cfg = his_config()
    ctx = ProbeContext(host="h", state_dir=tmp_path)
    (o,) = run(cfg, ctx)
    assert (o.check, o.ok, o.detail["error"]) == ("db.connections.full", False, "full")
    assert ctx.partial  # everything else keeps its state: not seen, not healthy
    (inc,) = _classify([o])
    assert inc.trigger is Trigger.SOFTWARE and inc.severity is Severity.CRITICAL
    assert "connections used up, new logins refused" in inc.title.en and "S3cret" not in json.dumps(inc.evidence)


def test_without_view_server_state_the_freeze_cannot_be_verified_and_says_why(server, tmp_path: Path) -> None:
    data = server["conn"].data
    data["server"]["rows"][0][2] = 0  # HAS_PERMS_BY_NAME(…, 'VIEW SERVER STATE') = 0
    obs = run(his_config(), ProbeContext(host="h", state_dir=tmp_path))
    (frozen,) = [o for o in obs if o.check == "db.frozen"]
    assert frozen.ok is None and "VIEW SERVER STATE" in frozen.detail["unverified_reason"]
    assert "cannot verify since" in frozen.name
    (read,) = [o for o in obs if o.check == "db.read" and o.subject == "10.20.1.5:1433"]
    assert any("GRANT VIEW SERVER STATE" in b for b in read.detail["blind_spots"])


def test_revoked_permission_on_a_rule_keeps_its_incident_open(server, tmp_path: Path) -> None:
    cfg = his_config()
    record(cfg, tmp_path)
    server["conn"] = RecordedServer("incident")
    ctx = ProbeContext(host="h", state_dir=tmp_path)
    first = {o.check: o for o in run(cfg, ctx) if o.subject.endswith("/门诊负数收费")}
    assert first["db.anomaly.patient_fee"].ok is False
    query = cfg.anomalies[0].query
    server["conn"].data["anomalies"][query] = {
        "error": [229, "The SELECT permission was denied on the object 'MZ_SFMX', database 'HIS', schema 'dbo'."]
    }
    ctx.partial = False
    (rule,) = [o for o in run(cfg, ctx) if o.subject.endswith("/门诊负数收费")]
    assert rule.check == "db.anomaly.patient_fee" and rule.ok is None and ctx.partial
    assert "denied" in rule.detail["unverified_reason"] and "cannot verify since" in (rule.name or "")


def test_what_a_session_reports_cannot_break_the_title(server, tmp_path: Path) -> None:
    # program_name and host_name are whatever the client sent: control characters, any length.
    cfg = his_config()
    record(cfg, tmp_path)
    server["conn"] = RecordedServer("frozen")
    head = next(r for r in server["conn"].data["sessions"]["rows"] if r[0] == 87)
    head[2], head[3] = "HIS-APP-03\r\n" + "x" * 300, "门诊收费系统\x1b[31m" + "长" * 400
    (inc,) = [i for i in _classify(run(cfg, ProbeContext(host="h", state_dir=tmp_path))) if "frozen" in i.key]
    event = _event(inc)  # the wire schema refuses control characters and titles over 500 characters
    assert "\n" not in event.title_en and len(event.title_zh) <= 500 and len(event.title_en) <= 500
    assert "session 87 (his_app@HIS-APP-03" in event.title_en
