"""The database probe against real PostgreSQL and MariaDB: a small HIS with Chinese data, baselined, then damaged.

Each test builds its own uniquely named database (and a low-privilege login holding only the
documented permissions), runs the probe through the real agent path (config file → Agent →
classifier), and drops everything afterwards. Catalogue row counts are statistics: the tests
refresh them with ANALYZE / ANALYZE TABLE, where production relies on autovacuum / InnoDB.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hisguard.agent.cli import main as agent_main
from hisguard.agent.config import load_config
from hisguard.agent.runtime import Agent
from hisguard.plan import Scope, Severity, Trigger
from tests.support.peers import need
from tests.support.procs import ServerProc, free_port


def driver(name: str) -> Any:
    """The driver module; CI (HISGUARD_REQUIRE_PEERS=1) fails instead of skipping when it is missing."""
    need(importlib.util.find_spec(name) is not None, f"{name} (pip install 'hisguard[db]')")
    return importlib.import_module(name)


PATIENTS = ["张三", "李四", "王五", "赵六", "钱七", "孙八", "周九", "吴十"]
ITEMS = ["挂号费", "诊查费", "血常规", "胸部X线", "阿莫西林胶囊", "静脉输液"]
PASSWORD = "Pw-门诊-" + uuid.uuid4().hex[:10]  # unique, so finding it anywhere is a leak


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class His:
    """One HIS database on a real server, with an admin connection to damage it."""

    dialect: str
    name: str
    user: str
    port: int
    admin: Any
    root: Any = None  # PostgreSQL: a session in another database, for ALTER DATABASE

    def q(self, ident: str) -> str:
        return f'"{ident}"' if self.dialect == "postgresql" else f"`{ident}`"

    def exec(self, sql: str, params: Any = None) -> None:
        with self.admin.cursor() as cur:
            cur.execute(sql, params)
        if self.dialect == "mysql":
            self.admin.commit()

    def analyze(self, table: str) -> None:
        self.exec(f"ANALYZE {self.q(table)}" if self.dialect == "postgresql" else f"ANALYZE TABLE {self.q(table)}")

    def table(self, name: str) -> str:
        return f"public.{name}" if self.dialect == "postgresql" else f"{self.name}.{name}"


SCHEMA = [
    # (table, columns DDL, rows): 门诊收费 (outpatient billing), 住院 (inpatient), 药房 (pharmacy), 财务 (accounts)
    (
        "mz_fee",
        "id INT PRIMARY KEY, patient VARCHAR(50) NOT NULL, item VARCHAR(100) NOT NULL, amount DECIMAL(10,2)",
        300,
    ),
    ("mz_invoice", "id INT PRIMARY KEY, patient VARCHAR(50), total DECIMAL(10,2)", 120),
    ("门诊挂号", "编号 INT PRIMARY KEY, 患者 VARCHAR(50), 科室 VARCHAR(50)", 80),
    ("zy_patient", "id INT PRIMARY KEY, name VARCHAR(50), ward VARCHAR(50)", 60),
    ("zy_fee", "id INT PRIMARY KEY, patient_id INT, item VARCHAR(100), amount DECIMAL(10,2)", 200),
    ("yf_drug", "id INT PRIMARY KEY, name VARCHAR(100), stock INT", 50),
    ("cw_ledger", "id INT PRIMARY KEY, account VARCHAR(50), debit DECIMAL(12,2), credit DECIMAL(12,2)", 40),
]


def _fill(his: His) -> None:
    for table, ddl, n in SCHEMA:
        cols = [c.split()[0] for c in ddl.split(", ")]
        defs = ", ".join(his.q(c.split()[0]) + " " + " ".join(c.split()[1:]) for c in ddl.split(", "))
        his.exec(f"CREATE TABLE {his.q(table)} ({defs})")
        rows = []
        for i in range(1, n + 1):
            values: list[Any] = [i]
            for c in cols[1:]:
                if c in ("patient", "name", "患者", "account"):
                    values.append(PATIENTS[i % len(PATIENTS)] if c != "account" else f"科目{i % 7}")
                elif c in ("item", "ward", "科室"):
                    values.append(ITEMS[i % len(ITEMS)])
                else:
                    values.append(10 + i % 90)
            rows.append(values)
        marks = ", ".join(["%s"] * len(cols))
        with his.admin.cursor() as cur:
            cur.executemany(f"INSERT INTO {his.q(table)} VALUES ({marks})", rows)
        if his.dialect == "mysql":
            his.admin.commit()
        his.analyze(table)


def _postgres() -> Iterator[His]:
    psycopg = driver("psycopg")
    need(_port_open(5432), "PostgreSQL on 127.0.0.1:5432")
    tag = f"hg_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    root = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True)
    root.execute(f'CREATE DATABASE "{tag}" ENCODING UTF8 TEMPLATE template0')
    # Minimum permissions (docs/database.md): LOGIN, CONNECT, USAGE on the schema, SELECT for anomaly rules.
    root.execute(f'CREATE ROLE "{tag}" LOGIN')
    admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=tag, autocommit=True)
    his = His("postgresql", tag, tag, 5432, admin, root)
    try:
        _fill(his)
        his.exec(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{tag}"')
        yield his
    finally:
        admin.close()
        root.execute(f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)')
        root.execute(f'DROP ROLE IF EXISTS "{tag}"')
        root.close()


def _mariadb() -> Iterator[His]:
    pymysql = driver("pymysql")
    need(_port_open(3306), "MariaDB on 127.0.0.1:3306")
    tag = f"hg_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", charset="utf8mb4")
    his = His("mysql", tag, tag, 3306, admin)
    try:
        his.exec(f"CREATE DATABASE `{tag}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        his.exec(f"USE `{tag}`")
        his.exec(f"CREATE USER '{tag}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        his.exec(f"GRANT SELECT ON `{tag}`.* TO '{tag}'@'%'")  # the only privilege the probe needs
        _fill(his)
        yield his
    finally:
        his.exec(f"DROP DATABASE IF EXISTS `{tag}`")
        his.exec(f"DROP USER IF EXISTS '{tag}'@'%'")
        admin.close()


@pytest.fixture(params=["postgresql", "mariadb"])
def his(request: pytest.FixtureRequest) -> Iterator[His]:
    yield from (_postgres() if request.param == "postgresql" else _mariadb())


def config_text(his: His, port: int | None = None, user: str | None = None, extra: str = "") -> str:
    fee = "mz_fee"
    return f"""
[agent]
name = "his-db-01"
state_dir = "state"

[server]
url = "http://127.0.0.1:9"
token = "x"

[[probe.database]]
name = "his-db"
dialect = "{his.dialect}"
host = "127.0.0.1"
port = {port or his.port}
label = "HIS 主数据库"
user = "{user or his.user}"
password_env = "HG_TEST_DB_PASSWORD"
databases = ["{his.name}"]
impact = {{ hospital_critical = true }}
timeout = 10
restart_window = 0
{extra}

[[probe.database.subsystems]]
name = "门诊收费"
tables = ["mz_fee", "mz_invoice", "门诊挂号"]
departments = ["门诊收费", "急诊收费"]
min_rows = 10

[[probe.database.subsystems]]
name = "住院"
tables = ["zy_patient", "zy_fee"]
departments = ["住院登记", "护士站"]
hospital_critical = true
min_rows = 10

[[probe.database.subsystems]]
name = "药房"
tables = ["yf_drug"]
departments = ["门诊药房", "住院药房"]
min_rows = 10

[[probe.database.subsystems]]
name = "财务"
tables = ["cw_ledger"]
departments = ["财务科"]
min_rows = 10

[[probe.database.anomalies]]
name = "门诊负数收费"
subsystem = "门诊收费"
priority = "patient_fee"
query = "SELECT COUNT(*) FROM {fee} WHERE amount < 0"

[[probe.database.anomalies]]
name = "账目负数发生额"
subsystem = "财务"
priority = "accounting"
query = "SELECT COUNT(*) FROM cw_ledger WHERE debit < 0 OR credit < 0"
"""


@pytest.fixture
def env_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", PASSWORD)


def make_agent(tmp_path: Path, text: str) -> Agent:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return Agent(load_config(path))


def round_(agent: Agent) -> list[Any]:
    job = agent.cfg.jobs[0]
    asyncio.run(agent.run_round(job, confirm=False))
    return agent.current_incidents()


def baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = agent_main(["baseline", "-c", str(tmp_path / "agent.toml"), "--reason", "测试基线"])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


@pytest.mark.usefixtures("env_password")
def test_healthy_his_then_dropped_table_is_one_trigger3_incident(his: His, tmp_path: Path, capsys) -> None:
    agent = make_agent(tmp_path, config_text(his))
    out = baseline(tmp_path, capsys)
    assert "baseline recorded" in out and "first baseline" in out
    assert round_(agent) == [], agent.status["his-db"]
    obs = {(o.check, o.subject): o for o in agent.latest["his-db"]}
    rows = obs[("db.rows", f"127.0.0.1:{his.port}/门诊收费")]
    assert rows.ok and rows.detail["tables_judged"] == 3  # the Chinese-named table is read too

    his.exec(f"DROP TABLE {his.q('zy_fee')}")
    incidents = round_(agent)
    assert len(incidents) == 1, [i.title for i in incidents]
    inc = incidents[0]
    assert inc.trigger is Trigger.DATABASE
    assert "zy_fee" in inc.title.zh and "zy_fee" in inc.title.en
    assert f"{his.name}.{his.name}." not in inc.title.en  # MySQL tables are database.table
    assert inc.key.endswith(f"/db.table/127.0.0.1:{his.port}/{his.name}/{his.table('zy_fee')}")
    # 住院 is hospital-critical: a table lost from it paralyses the whole hospital.
    assert (inc.scope, inc.severity) == (Scope.HOSPITAL, Severity.CRITICAL)
    assert inc.evidence["subsystems"] == ["住院"]


@pytest.mark.usefixtures("env_password")
def test_sixty_percent_of_fee_rows_deleted_is_trigger4_for_the_subsystem(his: His, tmp_path: Path, capsys) -> None:
    agent = make_agent(tmp_path, config_text(his))
    baseline(tmp_path, capsys)
    assert round_(agent) == []
    his.exec(f"DELETE FROM {his.q('mz_fee')} WHERE MOD(id, 5) IN (0, 1, 2)")  # 180 of 300 rows
    his.analyze("mz_fee")
    incidents = round_(agent)
    assert len(incidents) == 1, [i.title for i in incidents]
    inc = incidents[0]
    assert inc.trigger is Trigger.DATA_LOSS
    assert "门诊收费" in inc.title.zh
    assert inc.departments == ["门诊收费", "急诊收费"]
    assert (inc.scope, inc.severity) == (Scope.DEPARTMENT, Severity.URGENT)
    (lost,) = inc.evidence["tables_lost"]
    assert lost["table"] == his.table("mz_fee") and lost["reference"] == 300 and lost["now"] == 120


@pytest.mark.usefixtures("env_password")
def test_negative_charge_fires_the_patient_fee_rule_first(his: His, tmp_path: Path, capsys) -> None:
    agent = make_agent(tmp_path, config_text(his))
    baseline(tmp_path, capsys)
    assert round_(agent) == []
    his.exec(f"INSERT INTO {his.q('mz_fee')} VALUES (9001, '张三', '退费冲红', -35.50)")
    his.exec(f"INSERT INTO {his.q('cw_ledger')} VALUES (9001, '应收医疗款', -35.50, 0)")
    incidents = sorted(round_(agent), key=lambda i: i.evidence["priority_rank"])
    assert [i.trigger for i in incidents] == [Trigger.DATA_LOSS, Trigger.DATA_LOSS]
    fee, account = incidents
    assert fee.evidence["priority"] == "patient_fee" and "患者费用" in fee.title.zh and "门诊负数收费" in fee.title.zh
    assert account.evidence["priority"] == "accounting" and "医院账目" in account.title.zh
    assert fee.severity.rank >= account.severity.rank
    assert fee.departments == ["门诊收费", "急诊收费"] and fee.evidence["anomalous_rows"] == 1


def test_unreachable_server_and_refused_login_are_clear_and_never_crash(
    his: His, tmp_path: Path, caplog, monkeypatch
) -> None:
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    # Nothing listening: the service is down → trigger 2 for the hospital-critical server.
    agent = make_agent(tmp_path, config_text(his, port=free_port()))
    (inc,) = round_(agent)
    assert inc.trigger is Trigger.SOFTWARE and inc.severity is Severity.CRITICAL
    assert inc.evidence["error"] == "unreachable" and "HIS 主数据库" in inc.title.zh

    # A refused login is the probe's own problem by default: a clear error, no incident.
    bad_user = his.user if his.dialect == "mysql" else "no_such_role_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", PASSWORD + "-wrong")
    (tmp_path / "b").mkdir()
    agent = make_agent(tmp_path / "b", config_text(his, user=bad_user))
    assert round_(agent) == []
    error = agent.status["his-db"].error or ""
    assert "login failed" in error and "HIS 主数据库" in error
    # …or, when configured so, an incident like an unreachable server.
    (tmp_path / "c").mkdir()
    agent2 = make_agent(tmp_path / "c", config_text(his, user=bad_user, extra='login_failure = "incident"'))
    (inc,) = round_(agent2)
    assert inc.trigger is Trigger.SOFTWARE and inc.evidence["error"] == "login"
    # The password is nowhere: not in errors, logs, the health snapshot or the incident.
    seen = [error, caplog.text, json.dumps(agent.snapshot(), ensure_ascii=False), json.dumps(inc.evidence)]
    for text in seen:
        assert PASSWORD not in text


@pytest.mark.usefixtures("env_password")
def test_baseline_refuses_a_subsystem_table_that_does_not_exist(his: His, tmp_path: Path, capsys) -> None:
    text = config_text(his).replace('tables = ["yf_drug"]', 'tables = ["yf_drug", "yf_stock_missing"]')
    make_agent(tmp_path, text)
    code = agent_main(["baseline", "-c", str(tmp_path / "agent.toml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "baseline NOT recorded" in out and "药房" in out and "yf_stock_missing" in out
    assert not list((tmp_path / "state").glob("db-baseline-*.json"))


@pytest.mark.usefixtures("env_password")
def test_rebaseline_after_planned_change_is_logged_and_clears(his: His, tmp_path: Path, capsys) -> None:
    agent = make_agent(tmp_path, config_text(his))
    baseline(tmp_path, capsys)
    his.exec(f"ALTER TABLE {his.q('yf_drug')} ADD COLUMN 批号 VARCHAR(30)")
    (inc,) = round_(agent)
    assert inc.trigger is Trigger.DATABASE and inc.severity is Severity.ROUTINE
    assert inc.evidence["added"] == ["批号"]
    out = baseline(tmp_path, capsys)
    shown = f"{his.name}.public.yf_drug" if his.dialect == "postgresql" else f"{his.name}.yf_drug"  # never db.db.t
    assert f"~ columns {shown}\n" in out
    assert round_(agent) == []
    (log_file,) = (tmp_path / "state").glob("db-baseline-*.log")
    log_text = log_file.read_text(encoding="utf-8")
    assert log_text.count("baseline by") == 2 and "测试基线" in log_text and "yf_drug" in log_text


def test_postgres_database_refusing_connections_is_unexpected_offline(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", "")
    with contextmanager(_postgres)() as his:
        agent = make_agent(tmp_path, config_text(his))
        baseline(tmp_path, capsys)
        his.root.execute(f'ALTER DATABASE "{his.name}" ALLOW_CONNECTIONS false')
        incidents = round_(agent)
        assert [(i.trigger, i.severity) for i in incidents] == [(Trigger.DATABASE, Severity.CRITICAL)]
        assert f"{his.name} [OFFLINE]" in incidents[0].title.zh
        his.root.execute(f'ALTER DATABASE "{his.name}" ALLOW_CONNECTIONS true')


def test_chinese_names_reach_the_server_unchanged(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HG_TEST_DB_PASSWORD", "")
    with contextmanager(_postgres)() as his:
        server = ServerProc(tmp_path / "server").start()
        try:
            token = server.agent_token("his-db-01", "郑州市某医院")
            text = config_text(his).replace('token = "x"', f'token = "{token}"')
            text = text.replace('url = "http://127.0.0.1:9"', f'url = "{server.url}"')
            (tmp_path / "agent.toml").write_text(text, encoding="utf-8")
            baseline(tmp_path, capsys)
            his.exec(f"DROP TABLE {his.q('门诊挂号')}")
            assert agent_main(["once", "-c", str(tmp_path / "agent.toml")]) == 0
            out = capsys.readouterr().out
            assert "已送达" in out and "delivered" in out, out
            (row,) = server.incidents()
            assert "数据表 " + his.name + ".public.门诊挂号 被删除或丢失" in row["title_zh"], row
            assert row["key"].endswith(f"/db.table/127.0.0.1:5432/{his.name}/public.门诊挂号")
            assert row["evidence"]["table"] == "public.门诊挂号" and row["evidence"]["subsystems"] == ["门诊收费"]
            assert row["departments"] == ["门诊收费", "急诊收费"] and row["functions"] == [
                "outpatient_billing",
                "emergency_billing",
            ]
        finally:
            server.stop()
