"""A database job that cannot be right is refused before the agent starts, with the key, the line and why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hisguard.agent.cli import main as agent_main
from hisguard.agent.config import load_config
from hisguard.checks.base import ProbeError
from hisguard.checks.database import Config
from hisguard.checks.database.readonly import NotReadOnly, check_read_only
from hisguard.tomlconfig import ConfigError

HEAD = """
[agent]
name = "his-db-01"
state_dir = "state"

[server]
url = "http://127.0.0.1:9"
token = "x"

[[probe.database]]
dialect = "{dialect}"
databases = ["HIS"]
{extra}

[[probe.database.subsystems]]
name = "门诊收费"
{tables}

[[probe.database.anomalies]]
name = "门诊负数收费"
subsystem = "门诊收费"
priority = "patient_fee"
query = "{query}"
"""


def write(tmp_path: Path, **over: str) -> Path:
    values = {
        "dialect": "mssql",
        "extra": "",
        "tables": 'tables = ["dbo.MZ_SFMX", "门诊挂号"]',
        "query": "SELECT COUNT(*) FROM dbo.MZ_SFMX WHERE JE < 0",
    }
    values.update(over)
    path = tmp_path / "agent.toml"
    path.write_text(HEAD.format(**values), encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_a_good_database_job_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path))
    (job,) = cfg.jobs
    assert job.spec.name == "database" and job.config.subsystems[0].tables == ["dbo.MZ_SFMX", "门诊挂号"]


def test_unknown_dialect(tmp_path: Path) -> None:
    msg = refused(write(tmp_path, dialect="oracle"))
    assert "agent.toml:11: probe.database[0].dialect" in msg
    assert "unknown dialect 'oracle'" in msg and "mssql" in msg and "postgresql" in msg


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ("", "probe.database[0].subsystems[0].tables: 缺少必填的键 / required key is missing"),
        ("tables = []", "probe.database[0].subsystems[0].tables: 项数太少 / List should have at least 1 item"),
        ('tables = ["dbo."]', "table name 'dbo.' is not schema.table"),
    ],
)
def test_subsystem_without_its_tables(tmp_path: Path, tables: str, expected: str) -> None:
    assert expected in refused(write(tmp_path, tables=tables))


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM dbo.MZ_SFMX WHERE JE < 0",
        "UPDATE dbo.MZ_SFMX SET JE = 0 WHERE JE < 0",
        "SELECT COUNT(*) INTO #t FROM dbo.MZ_SFMX",
        "SELECT COUNT(*) FROM dbo.MZ_SFMX; DROP TABLE dbo.MZ_SFMX",
        "EXEC dbo.usp_fix_fees",
    ],
)
def test_anomaly_query_that_writes(tmp_path: Path, query: str) -> None:
    msg = refused(write(tmp_path, query=query))
    assert "probe.database[0]" in msg and "anomaly '门诊负数收费': query refused, it must only read" in msg


def test_anomaly_on_unknown_subsystem_and_clashing_passwords(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace('subsystem = "门诊收费"', 'subsystem = "住院"'), "utf-8")
    assert "anomaly '门诊负数收费': unknown subsystem '住院' (known: 门诊收费)" in refused(path)
    msg = refused(write(tmp_path, extra='password = "a"\npassword_env = "B"'))
    assert "give at most one of password, password_env, password_file" in msg
    assert 'password = "a"' not in msg and "'a'" not in msg


def test_check_config_exits_2_before_the_agent_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, query="DELETE FROM dbo.MZ_SFMX")
    with pytest.raises(SystemExit) as info:
        agent_main(["check-config", "-c", str(path)])
    assert info.value.code == 2
    assert "must be a SELECT, found DELETE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "WITH gone AS (DELETE FROM fee RETURNING 1) SELECT count(*) FROM gone"),
        ("postgres", "SELECT count(*) FROM fee FOR UPDATE"),
        ("mysql", "SELECT COUNT(*) FROM fee LOCK IN SHARE MODE"),
        ("postgres", "CREATE TABLE x AS SELECT 1"),
    ],
)
def test_read_only_check_sees_writes_hidden_inside_a_select(dialect: str, sql: str) -> None:
    with pytest.raises(NotReadOnly):
        check_read_only(sql, dialect)


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "db.pw"
    secret.write_text("门诊-secret\n", encoding="utf-8")
    cfg = Config(dialect="mysql", databases=["his"], password_file=secret)
    assert cfg.resolve_password() == "门诊-secret"
    assert "门诊-secret" not in repr(Config(dialect="mysql", databases=["his"], password="门诊-secret"))
    env = Config(dialect="mysql", databases=["his"], password_env="HG_DB_PW_UNSET_X")
    monkeypatch.delenv("HG_DB_PW_UNSET_X", raising=False)
    with pytest.raises(ProbeError, match="HG_DB_PW_UNSET_X is not set"):
        env.resolve_password()


def test_the_commented_example_in_config_example_toml_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "config.example.toml").read_text(encoding="utf-8")
    block = text[text.index("# [[probe.database]]") :]
    lines = [line[2:] for line in block.splitlines() if re.match(r"# \[|# [a-z_]+ =", line)]
    path = tmp_path / "agent.toml"
    path.write_text('[server]\nurl = "http://127.0.0.1:9"\ntoken = "x"\n' + "\n".join(lines) + "\n", encoding="utf-8")
    (job,) = load_config(path).jobs
    cfg = job.config
    assert (cfg.dialect, cfg.backups.full_days, cfg.backups.log_hours) == ("mssql", 10, 8)
    assert cfg.subsystems[0].departments == ["门诊收费", "急诊收费"] and cfg.anomalies[0].priority == "patient_fee"
