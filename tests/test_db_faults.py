"""The HIS database as it really fails, on private PostgreSQL and MariaDB servers started by these tests.

A frozen database (a row lock with four sessions queued behind it, a table lock), a slow anomaly
rule, connections used up (the server's and the HIS login's), TRUNCATE, a table dropped and
re-created empty, 60 % deleted with autovacuum off, a MariaDB restart with stale statistics, a
revoked grant, a renamed table and narrowed columns — each reproduced on a real server and read
through the real agent path (configuration file → Agent → classifier). The servers are private
(their own data directory and port) because restarts, connection limits and autovacuum are
settings the machine's shared servers must keep.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hisguard.agent.cli import main as agent_main
from hisguard.agent.runtime import Agent
from hisguard.plan import Scope, Severity, Trigger
from tests.support.privdb import PrivateMariaDB, PrivatePostgres
from tests.support.procs import wait_until
from tests.test_db_live import PASSWORD, SCHEMA, His, _fill, baseline, config_text, driver, make_agent, round_

FAST = """
freeze_sessions = 3
freeze_wait = 2
statement_timeout = 3
idle_in_transaction = 3
"""


# -- private servers (one each per module) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PrivatePostgres]:
    driver("psycopg")
    # autovacuum off: statistics never refresh by themselves, as on a server where it is off or far behind.
    server = PrivatePostgres(autovacuum="off", max_connections="20").start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def my_server() -> Iterator[PrivateMariaDB]:
    driver("pymysql")
    # metadata_lock_info names the holders of table locks (docs/database.md, minimum permissions).
    server = PrivateMariaDB("--plugin-load-add=metadata_lock_info", "--max-connections=20").start()
    try:
        yield server
    finally:
        server.remove()


@dataclass
class PrivateHis(His):
    """A HIS database on a private server, its application login, and the probe's login."""

    server: Any = None
    app_user: str = ""
    held: list[Any] = field(default_factory=list)

    def app(self, autocommit: bool = False) -> Any:
        """A session of the HIS application (门诊收费, program HIS-MZSF), as the hospital's clients connect."""
        if self.dialect == "postgresql":
            conn = self.server.connect(self.name, self.app_user, autocommit=autocommit, application_name="HIS-MZSF")
        else:
            conn = self.server.connect(self.app_user, PASSWORD, self.name, autocommit=autocommit)
        self.held.append(conn)
        return conn

    def session_id(self, conn: Any) -> str:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()" if self.dialect == "postgresql" else "SELECT CONNECTION_ID()")
            return str(cur.fetchone()[0])

    def scalar(self, sql: str) -> Any:
        with self.admin.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]

    def close_held(self) -> None:
        for conn in self.held:
            with contextlib.suppress(Exception):
                conn.close()
        self.held.clear()


def _pg_his(server: PrivatePostgres) -> Iterator[PrivateHis]:
    tag = f"hg_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    root = server.connect()
    root.execute(f'CREATE DATABASE "{tag}" ENCODING UTF8 TEMPLATE template0')
    root.execute(f'CREATE ROLE "{tag}" LOGIN')
    root.execute(f'GRANT pg_monitor TO "{tag}"')  # lock holders' client address, transaction age, statement
    root.execute(f'CREATE ROLE "app_{tag}" LOGIN')
    admin = server.connect(tag)
    his = PrivateHis("postgresql", tag, tag, server.port, admin, root, server=server, app_user=f"app_{tag}")
    try:
        _fill(his)
        his.exec(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{tag}"')
        # …and on tables created later, as docs/database.md asks (a re-created table stays countable).
        his.exec(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{tag}"')
        his.exec(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "app_{tag}"')
        yield his
    finally:
        his.close_held()
        admin.close()
        root.execute(f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)')
        root.execute(f'DROP ROLE IF EXISTS "{tag}"')
        root.execute(f'DROP ROLE IF EXISTS "app_{tag}"')
        root.close()


def _my_his(server: PrivateMariaDB) -> Iterator[PrivateHis]:
    tag = f"hg_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = server.connect()
    his = PrivateHis("mysql", tag, tag, server.port, admin, server=server, app_user=f"app_{tag[-12:]}")
    try:
        his.exec(f"CREATE DATABASE `{tag}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        his.exec(f"USE `{tag}`")
        his.exec(f"CREATE USER '{tag}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        his.exec(f"GRANT SELECT ON `{tag}`.* TO '{tag}'@'%'")
        his.exec(f"GRANT PROCESS ON *.* TO '{tag}'@'%'")  # lock waits, every session (docs/database.md)
        his.exec(f"CREATE USER '{his.app_user}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        his.exec(f"GRANT SELECT, INSERT, UPDATE, DELETE, LOCK TABLES ON `{tag}`.* TO '{his.app_user}'@'%'")
        _fill(his)
        yield his
    finally:
        his.close_held()
        try:
            his.admin.ping()
        except Exception:  # the server was restarted under it
            his.admin = server.connect()
        admin = his.admin
        his.exec(f"DROP DATABASE IF EXISTS `{tag}`")
        his.exec(f"DROP USER IF EXISTS '{tag}'@'%'")
        his.exec(f"DROP USER IF EXISTS '{his.app_user}'@'%'")
        admin.close()


@pytest.fixture(params=["postgresql", "mariadb"])
def his(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateHis]:
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", PASSWORD)
    if request.param == "postgresql":
        yield from _pg_his(request.getfixturevalue("pg_server"))
    else:
        yield from _my_his(request.getfixturevalue("my_server"))


@pytest.fixture
def pg_his(pg_server: PrivatePostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateHis]:
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", PASSWORD)
    yield from _pg_his(pg_server)


@pytest.fixture
def my_his(my_server: PrivateMariaDB, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateHis]:
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", PASSWORD)
    yield from _my_his(my_server)


def agent_for(his: PrivateHis, tmp_path: Path, extra: str = "", capsys: Any = None) -> Agent:
    agent = make_agent(tmp_path, config_text(his, extra=FAST + extra))
    if capsys is not None:
        baseline(tmp_path, capsys)
    return agent


def observations(agent: Agent) -> dict[tuple[str, str], Any]:
    return {(o.check, o.subject.split("/", 1)[1] if "/" in o.subject else ""): o for o in agent.latest["his-db"]}


def by_check(incidents: list[Any]) -> dict[str, Any]:
    return {i.evidence["check"]: i for i in incidents}


# -- sessions that hold and wait -----------------------------------------------------------------------------


class Waiters:
    """N application sessions each running one statement that waits for a lock, in threads."""

    def __init__(self, his: PrivateHis, sql: str, n: int) -> None:
        self.errors: list[BaseException] = []
        self.ids: list[str] = []
        conns = [his.app(autocommit=True) for _ in range(n)]
        self.ids = [his.session_id(c) for c in conns]
        self.threads = [threading.Thread(target=self._run, args=(c, sql), daemon=True) for c in conns]
        for t in self.threads:
            t.start()

    def _run(self, conn: Any, sql: str) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                if cur.description:
                    cur.fetchall()
        except BaseException as exc:  # reported by join()
            self.errors.append(exc)

    def join(self) -> None:
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads)


def waiting_at_least(his: PrivateHis, seconds: float) -> int:
    """Sessions the server shows waiting for a lock for at least `seconds` (the condition the probe looks for)."""
    if his.dialect == "postgresql":
        sql = f"SELECT count(*) FROM pg_locks WHERE NOT granted AND waitstart < now() - interval '{seconds} seconds'"
    else:
        sql = (
            "SELECT (SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' "
            f"AND trx_wait_started < NOW() - INTERVAL {seconds} SECOND) + (SELECT COUNT(*) FROM "
            f"information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for table%' AND TIME >= {seconds})"
        )
    return int(his.scalar(sql))


def frozen_within_two_rounds(agent: Agent) -> Any:
    for _ in range(2):
        found = [i for i in round_(agent) if i.evidence["check"] == "db.frozen"]
        if found:
            return found
    raise AssertionError(f"no frozen incident in two rounds: {[o for o in agent.latest['his-db'] if o.ok is False]}")


def assert_released(agent: Agent) -> None:
    """After the blocker let go the freeze is never seen again; it resolves as soon as a round can read the
    lock views (a loaded machine may make one round's read outlast the statement limit: "cannot verify",
    which keeps the incident open, as it should)."""
    for _ in range(4):
        frozen_now = [i for i in round_(agent) if i.evidence["check"] == "db.frozen"]
        seen = observations(agent)[("db.frozen", "frozen")]
        assert seen.ok is not False, seen.detail
        if seen.ok:
            assert frozen_now == []
            return
    raise AssertionError(f"the lock views could not be read in four rounds: {seen.detail}")


# -- 1. frozen database -------------------------------------------------------------------------------------------


def test_row_lock_with_four_waiters_is_one_frozen_incident_naming_the_blocker(
    his: PrivateHis, tmp_path: Path, capsys
) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    blocker = his.app()
    blocker_id = his.session_id(blocker)
    with blocker.cursor() as cur:
        cur.execute(f"UPDATE {his.q('mz_fee')} SET amount = amount + 1 WHERE id <= 100")  # left open: 卡死
    waiters = Waiters(his, f"UPDATE {his.q('mz_fee')} SET amount = 0 WHERE id = 5", 4)
    try:
        wait_until(lambda: waiting_at_least(his, 2.5) >= 4, 30, what="four sessions waiting 2.5 s")
        (inc,) = frozen_within_two_rounds(agent)
        others = [i for i in agent.current_incidents() if i.evidence["check"] != "db.frozen"]
        assert others == [], [i.title.en for i in others]
        assert inc.trigger is Trigger.SOFTWARE
        assert (inc.scope, inc.severity) == (Scope.HOSPITAL, Severity.CRITICAL)  # hospital-critical server
        ev = inc.evidence
        assert ev["blocker"] == blocker_id and ev["blocked"] == 4 and ev["login"] == his.app_user
        assert f"session {blocker_id} ({his.app_user}@127.0.0.1" in inc.title.en
        assert "4 sessions blocked" in inc.title.en and "mz_fee" in inc.title.en
        assert f"4 个会话被会话 {blocker_id}" in inc.title.zh
        assert ev["transaction_s"] >= 2
        if his.dialect == "postgresql":  # MariaDB without performance_schema keeps neither (docs/database.md)
            assert ev["program"] == "HIS-MZSF" and "UPDATE" in ev["statement"]
            assert f"({his.app_user}@127.0.0.1, HIS-MZSF)" in inc.title.en
        assert set(inc.departments) >= {"门诊收费", "急诊收费"}  # the locked table's subsystem
    finally:
        blocker.rollback()
        waiters.join()
    assert_released(agent)


def test_table_lock_is_a_frozen_incident_and_the_blocked_rule_is_only_that_rules_problem(
    his: PrivateHis, tmp_path: Path, capsys
) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    blocker = his.app(autocommit=his.dialect == "mysql")
    blocker_id = his.session_id(blocker)
    with blocker.cursor() as cur:
        if his.dialect == "postgresql":
            cur.execute("LOCK TABLE mz_fee IN ACCESS EXCLUSIVE MODE")
        else:
            cur.execute("LOCK TABLES mz_fee WRITE")
    waiters = Waiters(his, f"SELECT COUNT(*) FROM {his.q('mz_fee')}", 3)
    try:
        wait_until(lambda: waiting_at_least(his, 2.5) >= 3, 30, what="three sessions waiting 2.5 s")
        (inc,) = frozen_within_two_rounds(agent)
        assert inc.evidence["blocker"] == blocker_id and inc.evidence["blocked"] >= 3
        assert f"session {blocker_id}" in inc.title.en and "mz_fee" in inc.title.en
        # The patient-fee rule reads the locked table: it cannot run, and says so. No "cannot be reached".
        checks = {i.evidence["check"] for i in agent.current_incidents()}
        assert "db.connect" not in checks and checks == {"db.frozen"}
        rule = observations(agent)[("db.anomaly.patient_fee", "门诊负数收费")]
        assert rule.ok is None and "cannot verify since" in rule.name and "timeout" in rule.detail["unverified_reason"]
        assert observations(agent)[("db.anomaly.accounting", "账目负数发生额")].ok is True  # the rest still counts
    finally:
        if his.dialect == "postgresql":
            blocker.rollback()
        else:
            with blocker.cursor() as cur:
                cur.execute("UNLOCK TABLES")
        waiters.join()
    assert_released(agent)


def test_idle_in_transaction_holding_locks_warns_before_it_becomes_a_freeze(
    his: PrivateHis, tmp_path: Path, capsys
) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    holder = his.app()
    holder_id = his.session_id(holder)
    with holder.cursor() as cur:
        cur.execute(f"UPDATE {his.q('yf_drug')} SET stock = stock - 1 WHERE id = 7")  # and then nothing
    try:
        time.sleep(4.5)  # past idle_in_transaction = 3 s, in whole seconds (a lower bound; no upper bound is asserted)
        incidents = by_check(round_(agent))
        inc = incidents["db.idle_in_transaction"]
        assert inc.trigger is Trigger.SOFTWARE and inc.severity is Severity.URGENT  # a warning, capped
        assert inc.evidence["session"] == holder_id and his.app_user in inc.title.en
        assert "db.frozen" not in incidents
    finally:
        holder.rollback()
    assert "db.idle_in_transaction" not in by_check(round_(agent))


# -- 2. a slow rule -------------------------------------------------------------------------------------------------


def test_a_slow_anomaly_rule_is_never_database_unreachable(his: PrivateHis, tmp_path: Path, capsys) -> None:
    slow = "pg_sleep(0.05) IS NULL" if his.dialect == "postgresql" else "SLEEP(0.05) = 1"  # 300 rows: 15 s
    text = config_text(his, extra=FAST).replace(
        "SELECT COUNT(*) FROM mz_fee WHERE amount < 0", f"SELECT COUNT(*) FROM mz_fee WHERE amount < 0 OR {slow}"
    )
    agent = make_agent(tmp_path, text)
    baseline(tmp_path, capsys)
    incidents = round_(agent)
    assert incidents == [], [i.title.en for i in incidents]
    obs = observations(agent)
    assert obs[("db.connect", "")].ok is True
    rule = obs[("db.anomaly.patient_fee", "门诊负数收费")]
    assert rule.ok is None and "timeout" in rule.detail["unverified_reason"] and "门诊负数收费" in rule.name
    # The rest of the round counted: the other rule, the row counts, the tables.
    assert obs[("db.anomaly.accounting", "账目负数发生额")].ok is True
    assert obs[("db.rows", "门诊收费")].ok is True and obs[("db.rows", "住院")].ok is True
    assert agent.status["his-db"].ok is True  # not a probe failure either


# -- 3. connections ----------------------------------------------------------------------------------------------


def _fill_connections(his: PrivateHis) -> int:
    """Open application sessions until the server refuses one because it is full."""
    opened = 0
    for _ in range(40):
        try:
            his.app(autocommit=True)
            opened += 1
        except Exception as exc:
            text = str(exc)
            assert (
                "1040" in text
                or "Too many connections" in text
                or "too many clients" in text
                or ("remaining connection slots" in text)
            ), text
            return opened
    raise AssertionError("the server never refused a connection")


def test_server_refusing_logins_because_it_is_full_is_an_incident(his: PrivateHis, tmp_path: Path, capsys) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    try:
        assert _fill_connections(his) > 5
        incidents = round_(agent)
        (inc,) = incidents
        assert inc.evidence["check"] == "db.connections.full" and inc.trigger is Trigger.SOFTWARE
        assert (inc.scope, inc.severity) == (Scope.HOSPITAL, Severity.CRITICAL)
        assert "connections used up" in inc.title.en and "连接已满" in inc.title.zh
        assert agent.status["his-db"].ok is True  # an observation, not the probe's own error
    finally:
        his.close_held()
    assert round_(agent) == []


def test_his_login_at_its_connection_limit_is_an_incident(his: PrivateHis, tmp_path: Path, capsys) -> None:
    if his.dialect == "postgresql":
        his.root.execute(f'ALTER ROLE "{his.app_user}" CONNECTION LIMIT 3')
        extra = f'logins = {{ "{his.app_user}" = 0 }}'  # the server's own limit (rolconnlimit)
    else:
        his.exec(f"ALTER USER '{his.app_user}'@'%' WITH MAX_USER_CONNECTIONS 3")
        extra = f'logins = {{ "{his.app_user}" = 3 }}'  # MariaDB does not show account limits to the probe
    agent = agent_for(his, tmp_path, extra, capsys)
    assert round_(agent) == []
    for _ in range(3):
        his.app(autocommit=True)
    with pytest.raises(Exception):  # noqa: B017 - the server's own refusal, whatever the driver calls it
        his.app(autocommit=True)
    (inc,) = round_(agent)
    assert inc.evidence["check"] == "db.connections.full" and inc.evidence["target"] == his.app_user
    assert (inc.evidence["in_use"], inc.evidence["limit"]) == (3, 3)
    assert f"login {his.app_user}: 3/3" in inc.title.en
    his.close_held()
    assert round_(agent) == []


# -- 4. every real loss, no false ones ----------------------------------------------------------------------------


def _loss(agent: Agent) -> Any:
    (inc,) = [i for i in round_(agent) if i.evidence["check"] == "db.rows"]
    return inc


def test_truncate_is_trigger4_naming_table_and_percentage(his: PrivateHis, tmp_path: Path, capsys) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    his.exec(f"TRUNCATE TABLE {his.q('mz_fee')}")
    inc = _loss(agent)
    assert inc.trigger is Trigger.DATA_LOSS and inc.departments == ["门诊收费", "急诊收费"]
    name = f"{his.name}.public.mz_fee" if his.dialect == "postgresql" else f"{his.name}.mz_fee"
    assert f"{name} down 100%" in inc.title.en and f"{name} 减少 100%" in inc.title.zh
    assert f"{his.name}.{his.name}." not in inc.title.en  # MySQL names are db.table
    (lost,) = inc.evidence["tables_lost"]
    assert (lost["reference"], lost["now"], lost["exact"]) == (300, 0, True)


def test_table_dropped_and_recreated_empty_stays_lost(his: PrivateHis, tmp_path: Path, capsys) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    ddl = next(d for t, d, _ in SCHEMA if t == "mz_fee")
    his.exec(f"DROP TABLE {his.q('mz_fee')}")
    assert {i.evidence["check"] for i in round_(agent)} == {"db.table"}
    his.exec(f"CREATE TABLE {his.q('mz_fee')} ({ddl})")
    incidents = by_check(round_(agent))
    # Same columns again, but empty: still the table that was lost, and its rows are lost (trigger 4).
    assert set(incidents) == {"db.table", "db.rows"}
    assert incidents["db.table"].evidence["recreated_empty"] is True
    assert incidents["db.rows"].trigger is Trigger.DATA_LOSS and "down 100%" in incidents["db.rows"].title.en


def test_sixty_percent_deleted_without_fresh_statistics_is_trigger4(his: PrivateHis, tmp_path: Path, capsys) -> None:
    if his.dialect == "mysql":
        his.exec("ALTER TABLE mz_fee STATS_AUTO_RECALC = 0")  # InnoDB's counterpart of autovacuum off
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    stats_before = _statistics_rows(his)
    his.exec(f"DELETE FROM {his.q('mz_fee')} WHERE MOD(id, 5) IN (0, 1, 2)")  # 180 of 300 rows, no ANALYZE
    if his.dialect == "postgresql":
        # The deleting session reports its counters when it goes idle; the probe reads them like anyone.
        wait_until(lambda: _deleted(his) >= 180, 30, what="pg_stat_user_tables showing the deletes")
        assert _statistics_rows(his) == stats_before == 300  # the planner's statistics never moved
    inc = _loss(agent)
    assert inc.trigger is Trigger.DATA_LOSS and "down 60%" in inc.title.en
    (lost,) = inc.evidence["tables_lost"]
    assert (lost["reference"], lost["now"], lost["exact"]) == (300, 120, True)


def _statistics_rows(his: PrivateHis) -> int:
    if his.dialect == "postgresql":
        return int(his.scalar("SELECT reltuples::bigint FROM pg_class WHERE relname = 'mz_fee'"))
    return int(his.scalar(f"SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{his.name}' "
                          "AND TABLE_NAME = 'mz_fee'"))  # fmt: skip


def _deleted(his: PrivateHis) -> int:
    return int(his.scalar("SELECT COALESCE(n_tup_del, 0) FROM pg_stat_user_tables WHERE relname = 'mz_fee'"))


def test_mariadb_restart_with_stale_statistics_raises_no_false_loss(my_his: PrivateHis, tmp_path: Path, capsys) -> None:
    his = my_his
    # Statistics recorded while the tables were small, never recalculated (STATS_AUTO_RECALC=0), the tables
    # grown tenfold since: after a restart TABLE_ROWS falls back to the stored, stale figures.
    for table, ddl, n in SCHEMA:
        cols = [c.split()[0] for c in ddl.split(", ")]
        his.exec(f"ALTER TABLE {his.q(table)} STATS_AUTO_RECALC = 0")
        rest = ", ".join(his.q(c) for c in cols[1:])
        for k in range(1, 10):
            his.exec(f"INSERT INTO {his.q(table)} SELECT {his.q(cols[0])} + {k * 10000}, {rest} "
                     f"FROM {his.q(table)} WHERE {his.q(cols[0])} <= {n}")  # fmt: skip
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    his.server.restart()
    his.admin = his.server.connect(database=his.name)
    assert _statistics_rows(his) == 300  # 3,000 rows, statistics say 300: a 90 % "loss" on paper
    incidents = round_(agent)
    assert [i.evidence["check"] for i in incidents] == ["db.restart"]  # the restart itself, nothing lost
    obs = observations(agent)
    assert all(obs[("db.rows", s)].ok for s in ("门诊收费", "住院", "药房", "财务"))
    stale = obs[("db.statistics", his.name)]
    assert stale.ok is None and "statistics stale" in stale.name and len(stale.detail["stale"]) == len(SCHEMA)
    counted = obs[("db.connect", "")].detail["statements"]
    # The next round reuses the exact counts while the statistics stay as they are: no recount.
    round_(agent)
    assert observations(agent)[("db.connect", "")].detail["statements"] == counted - len(SCHEMA)


# -- 5. losses end by evidence or by a person ----------------------------------------------------------------------


def test_a_loss_outlives_its_history_window_and_ends_by_evidence_or_by_a_person(
    pg_his: PrivateHis, tmp_path: Path, capsys
) -> None:
    his = pg_his
    agent = agent_for(his, tmp_path, "history_hours = 0.001", capsys)  # a window of 3.6 s
    assert round_(agent) == []
    his.exec("DELETE FROM mz_fee WHERE id > 100")  # two thirds, e.g. a planned archive
    wait_until(lambda: _deleted(his) >= 200, 30, what="the deletes counted")
    assert _loss(agent).evidence["tables_lost"][0]["now"] == 100
    time.sleep(4.0)  # the window has passed: the reference would have aged out
    assert _loss(agent).evidence["tables_lost"][0]["reference"] == 300  # still lost
    # The rows come back: evidence of recovery resolves it.
    his.exec("INSERT INTO mz_fee SELECT g, '张三', '挂号费', 10 FROM generate_series(101, 300) g")
    his.analyze("mz_fee")
    assert round_(agent) == []
    # Lost again, and this time a person accepts the new level as a planned archive.
    his.exec("DELETE FROM mz_fee WHERE id > 100")
    his.analyze("mz_fee")
    assert _loss(agent).trigger is Trigger.DATA_LOSS
    code = agent_main(["baseline", "-c", str(tmp_path / "agent.toml"), "--accept-rows", "门诊收费"])
    assert code == 1 and "--reason is required" in capsys.readouterr().out
    code = agent_main(["baseline", "-c", str(tmp_path / "agent.toml"), "--accept-rows", "门诊收费",
                       "--reason", "2023 年门诊收费明细归档"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "public.mz_fee: 100 rows accepted" in out, out
    assert round_(agent) == []
    rows = observations(agent)[("db.rows", "门诊收费")]
    (entry,) = [a for t, a in rows.detail["accepted"].items() if t == "public.mz_fee"]
    assert entry["reason"] == "2023 年门诊收费明细归档" and entry["by"] and entry["rows"] == 100
    (log,) = (tmp_path / "state").glob("db-baseline-*.log")
    assert "rows of 门诊收费 accepted by" in log.read_text(encoding="utf-8")


# -- 6. unknown is not fine --------------------------------------------------------------------------------------


def test_revoked_grant_cannot_verify_and_the_patient_fee_incident_stays_open(
    his: PrivateHis, tmp_path: Path, capsys
) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    his.exec(f"INSERT INTO {his.q('mz_fee')} VALUES (9001, '张三', '退费冲红', -35.50)")
    (fee,) = [i for i in round_(agent) if i.evidence["check"] == "db.anomaly.patient_fee"]
    if his.dialect == "postgresql":
        his.exec(f'REVOKE SELECT ON mz_fee FROM "{his.user}"')
    else:
        his.exec(f"REVOKE SELECT ON `{his.name}`.* FROM '{his.user}'@'%'")
    incidents = round_(agent)
    assert [i.key for i in incidents] == [fee.key]  # still open; nothing new (no "database dropped")
    assert fee.key in agent.store.active()
    rule = observations(agent)[("db.anomaly.patient_fee", "门诊负数收费")]
    assert rule.ok is None and "cannot verify since" in rule.name and "无法核实" in rule.name
    beat = json.dumps(agent.snapshot(), ensure_ascii=False)  # what the heartbeat carries to the console
    assert "门诊负数收费 — 无法核实" in beat and "cannot verify since" in beat
    if his.dialect == "mysql":
        state = observations(agent)[("db.state", his.name)]
        assert state.ok is None and state.detail["state"] == "NOT_VISIBLE"
    # `once` and `doctor` say the same.
    assert agent_main(["once", "-c", str(tmp_path / "agent.toml")]) == 0
    out = capsys.readouterr().out
    assert "UNKNOWN" in out and "门诊负数收费 — 无法核实" in out and "cannot verify since" in out
    agent_main(["doctor", "-c", str(tmp_path / "agent.toml")])
    out = capsys.readouterr().out
    assert "门诊负数收费 — 无法核实" in out
    if his.dialect == "mysql":
        assert f"database {his.name} is not visible to the probe's login" in out
    # The grant back and the bad row gone: evidence of recovery resolves it.
    if his.dialect == "postgresql":
        his.exec(f'GRANT SELECT ON mz_fee TO "{his.user}"')
    else:
        his.exec(f"GRANT SELECT ON `{his.name}`.* TO '{his.user}'@'%'")
    assert [i.key for i in round_(agent)] == [fee.key]
    his.exec(f"DELETE FROM {his.q('mz_fee')} WHERE id = 9001")
    assert round_(agent) == []


def test_database_typo_is_a_configuration_problem_not_the_critical_plan(
    his: PrivateHis, tmp_path: Path, capsys
) -> None:
    text = config_text(his, extra=FAST).replace(f'databases = ["{his.name}"]', f'databases = ["{his.name}", "HSI"]')
    agent = make_agent(tmp_path, text)
    assert round_(agent) == []
    state = observations(agent)[("db.state", "HSI")]
    assert state.ok is None and state.detail["state"] in ("NOT_FOUND", "NOT_VISIBLE")
    agent_main(["doctor", "-c", str(tmp_path / "agent.toml")])
    out = capsys.readouterr().out
    assert "no schema baseline yet" in out
    if his.dialect == "postgresql":
        assert "database HSI listed in the configuration does not exist on the server" in out
    else:  # MariaDB cannot tell a missing database from one this login may not see
        assert "database HSI is not visible to the probe's login" in out
    assert "all good" not in out


# -- 7. structure -------------------------------------------------------------------------------------------------


def test_rename_is_reported_as_a_rename_and_its_rule_cannot_verify(his: PrivateHis, tmp_path: Path, capsys) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    assert round_(agent) == []
    his.exec(f"ALTER TABLE {his.q('mz_fee')} RENAME TO {his.q('mz_fee_2023')}")
    incidents = by_check(round_(agent))
    assert set(incidents) == {"db.table.renamed"}, [i.title.en for i in incidents.values()]
    inc = incidents["db.table.renamed"]
    new = f"{his.name}.public.mz_fee_2023" if his.dialect == "postgresql" else f"{his.name}.mz_fee_2023"
    assert inc.trigger is Trigger.DATABASE and inc.severity.rank >= Severity.URGENT.rank
    assert f"renamed to {new}" in inc.title.en and "被改名为" in inc.title.zh
    rule = observations(agent)[("db.anomaly.patient_fee", "门诊负数收费")]
    assert rule.ok is None and "cannot verify since" in rule.name


def test_dropped_or_narrowed_column_is_urgent_an_added_one_routine(his: PrivateHis, tmp_path: Path, capsys) -> None:
    agent = agent_for(his, tmp_path, capsys=capsys)
    his.exec(f"ALTER TABLE {his.q('yf_drug')} ADD COLUMN 批号 VARCHAR(30)")
    (added,) = round_(agent)
    assert (added.evidence["check"], added.severity) == ("db.column", Severity.ROUTINE)
    if his.dialect == "postgresql":
        his.exec("ALTER TABLE mz_invoice DROP COLUMN total")
        his.exec("ALTER TABLE cw_ledger ALTER COLUMN account TYPE VARCHAR(20)")
    else:
        his.exec("ALTER TABLE mz_invoice DROP COLUMN total")
        his.exec("ALTER TABLE cw_ledger MODIFY account VARCHAR(20)")
    incidents = {(i.evidence["check"], i.evidence["table"].rsplit(".", 1)[-1]): i for i in round_(agent)}
    dropped = incidents[("db.column.broken", "mz_invoice")]
    narrowed = incidents[("db.column.broken", "cw_ledger")]
    assert dropped.severity is Severity.URGENT and dropped.evidence["removed"] == ["total"]
    assert narrowed.severity is Severity.URGENT and list(narrowed.evidence["changed"]) == ["account"]
    assert incidents[("db.column", "yf_drug")].severity is Severity.ROUTINE
    assert "columns dropped or narrowed" in dropped.title.en


def test_the_console_shows_what_cannot_be_verified_from_the_heartbeat(
    pg_his: PrivateHis, tmp_path: Path, capsys
) -> None:
    from hisguard.report import utcnow
    from tests.test_web import Console

    his = pg_his
    agent = agent_for(his, tmp_path, capsys=capsys)
    his.exec(f'REVOKE SELECT ON mz_fee FROM "{his.user}"')
    round_(agent)
    console = Console(tmp_path / "server")
    try:
        snapshot = agent.snapshot()  # what the agent's heartbeat carries
        beat = {"type": "heartbeat", "observed_at": utcnow().isoformat(), "interval_s": 30, "snapshot": snapshot}
        console.report("renmin", "his-db1", [beat])
        page = console.login("mgr").get("/sites/renmin").text
    finally:
        console.close()
    assert "门诊负数收费 — 无法核实，自" in page and "cannot verify since" in page


def test_table_lock_on_a_server_without_lock_owner_views_is_still_a_freeze(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine's MariaDB has no metadata_lock_info plugin: the waiters are visible, their holder is inferred.
    from contextlib import contextmanager

    import pymysql

    from tests.test_db_live import _mariadb

    with contextmanager(_mariadb)() as shared:
        shared.exec(f"GRANT PROCESS ON *.* TO '{shared.user}'@'%'")
        monkeypatch.setenv("HG_TEST_DB_PASSWORD", PASSWORD)
        agent = make_agent(tmp_path, config_text(shared, extra=FAST))
        baseline(tmp_path, capsys)
        assert round_(agent) == []
        holder = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=shared.name)
        conns = [pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=shared.name)
                 for _ in range(3)]  # fmt: skip
        try:
            holder.cursor().execute("LOCK TABLES mz_fee WRITE")
            threads = [threading.Thread(target=c.cursor().execute, args=("SELECT COUNT(*) FROM mz_fee",), daemon=True)
                       for c in conns]  # fmt: skip
            for t in threads:
                t.start()
            probe_user = PrivateHis("mysql", shared.name, shared.user, 3306, shared.admin)
            wait_until(lambda: waiting_at_least(probe_user, 2.5) >= 3, 30, what="three sessions waiting 2.5 s")
            (inc,) = frozen_within_two_rounds(agent)
            # The holder's own transaction (LOCK TABLES with autocommit off takes InnoDB table locks) is the
            # oldest open one in that database: named, and marked as inferred.
            assert inc.evidence["blocker"] == str(holder.thread_id()) and inc.evidence["probable"] is True
            assert inc.evidence["blocked"] == 3 and "mz_fee" in inc.title.en
        finally:
            holder.cursor().execute("UNLOCK TABLES")
            for t in threads:
                t.join(30)
            for c in [holder, *conns]:
                c.close()
        assert_released(agent)
