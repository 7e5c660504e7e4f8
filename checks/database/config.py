"""The database probe's configuration: the server, its expected databases, subsystems and anomaly rules."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hisguard.checks.base import Impact, ProbeConfig, ProbeError
from hisguard.checks.database.dialects import DIALECTS, dialect
from hisguard.checks.database.dialects.base import split_table
from hisguard.checks.database.readonly import NotReadOnly, check_read_only

Priority = Literal["patient_fee", "accounting", "other"]
# The plan (2.6, trigger 4): patient fees are put right first, then the hospital's accounts.
PRIORITY_RANK: dict[str, int] = {"patient_fee": 1, "accounting": 2, "other": 3}


class Subsystem(BaseModel):
    """A HIS subsystem (门诊收费, 住院, 药房…): its tables and the departments that stop when they lose data."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    database: str | None = Field(None, description="Database holding the tables (default: the first listed)")
    tables: list[str] = Field(min_length=1, description="Tables as schema.table (or table in the default schema)")
    departments: list[str] | None = Field(None, description="Departments served (default: the subsystem's name)")
    hospital_critical: bool = Field(False, description="Its loss paralyses the whole hospital")
    drop_fraction: float = Field(0.3, gt=0, le=1, description="A table losing this fraction of its rows is a loss")
    drop_rows: int | None = Field(None, ge=1, description="…or losing at least this many rows")
    min_rows: int = Field(100, ge=0, description="Tables smaller than this (at their reference) are not judged")

    @field_validator("tables")
    @classmethod
    def _tables(cls, tables: list[str]) -> list[str]:
        for t in tables:
            if not t.strip() or t.startswith(".") or t.endswith("."):
                raise ValueError(f"table name {t!r} is not schema.table")
        if len(set(tables)) != len(tables):
            raise ValueError("a table is listed twice")
        return tables

    def impact(self) -> Impact:
        departments = self.departments if self.departments is not None else [self.name]
        return _impact(tuple(departments), self.hospital_critical)


@lru_cache(maxsize=4096)
def _impact(departments: tuple[str, ...], hospital_critical: bool) -> Impact:
    # Built once per distinct scope: a round judges hundreds of tables against a handful of subsystems.
    return Impact(departments=departments, hospital_critical=hospital_critical)


class Anomaly(BaseModel):
    """A read-only query counting anomalous rows (negative charges, fees without a patient…)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    subsystem: str = Field(description="The subsystem whose data it checks (gives the scope)")
    priority: Priority = Field("other", description="patient_fee outranks accounting (plan 2.6)")
    query: str = Field(min_length=1, description="SELECT returning one number: the count of anomalous rows")
    max_rows: int = Field(0, ge=0, description="More anomalous rows than this fires the rule")
    database: str | None = Field(None, description="Database to run it in (default: the subsystem's)")


class Backups(BaseModel):
    """Backup ages; defaults as the Zabbix MSSQL template (full 10 d, differential 6 d, log 8 h)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    full_days: float = Field(10.0, gt=0)
    diff_days: float = Field(6.0, gt=0)
    log_hours: float = Field(8.0, gt=0, description="Skipped for databases in SIMPLE recovery")
    severity: Literal["routine", "urgent"] = "routine"
    databases: list[str] | None = Field(None, description="Databases to check (default: the expected list)")


class Config(ProbeConfig):
    interval: float = Field(60.0, gt=0, le=86400)
    timeout: float = Field(20.0, gt=0)
    dialect: str = Field(description="mssql (sqlserver), postgresql (postgres) or mysql (mariadb)")
    host: str = Field("127.0.0.1", min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    label: str | None = Field(None, description="What staff call the server (HIS 主数据库)")
    user: str | None = None
    password: SecretStr | None = Field(None, description="Prefer password_env or password_file")
    password_env: str | None = None
    password_file: Path | None = None
    maintenance_database: str | None = Field(None, description="Where the server-wide queries run")
    databases: list[str] = Field(min_length=1, description="Databases that must exist and are monitored")
    offline_ok: list[str] = Field(default_factory=list, description="Databases allowed to be OFFLINE")
    impact: Impact | None = Field(None, description="Where the server sits (default: this agent's [agent])")
    connect_timeout: float = Field(5.0, gt=0, le=300)
    statement_timeout: float = Field(5.0, gt=0, le=300)
    deadline: float | None = Field(None, gt=0, description="Wall-clock bound of a round (default: timeout − 1 s)")
    login_failure: Literal["probe_error", "incident"] = Field(
        "probe_error", description="A refused login: the probe's own problem, or an incident like unreachable"
    )
    restart_window: float = Field(600.0, ge=0, description="Uptime below this (s) is a recent restart")
    baseline: Path | None = Field(None, description="Schema baseline file (default: in the agent's state_dir)")
    history_hours: float = Field(24.0, gt=0, description="Row counts are compared with the highest in this window")
    log_full_percent: float = Field(90.0, gt=0, le=100, description="Transaction log use that warns of 9002")
    log_full_severity: Literal["routine", "urgent"] = "urgent"
    checkdb_days: float | None = Field(7.0, gt=0, description="Last good CHECKDB older than this (None: off)")
    read_error_log: bool = Field(False, description="SQL Server: read 825 from the error log (securityadmin)")
    backups: Backups = Field(default_factory=Backups)
    # Frozen database ("HIS 卡死"): this many sessions waiting at least freeze_wait seconds behind one head blocker.
    freeze_sessions: int = Field(3, ge=1, le=10000, description="Sessions blocked behind one head blocker")
    freeze_wait: float = Field(30.0, gt=0, le=86400, description="…each waiting at least this long (s)")
    long_transaction: float = Field(600.0, gt=0, description="A transaction open longer than this (s): routine")
    idle_in_transaction: float = Field(
        120.0, gt=0, description="Idle in an open transaction that holds locks longer than this (s): urgent"
    )
    connections_warn_percent: float = Field(90.0, gt=0, le=100, description="Connections in use that warn (%)")
    logins: dict[str, int] = Field(
        default_factory=dict,
        description="HIS application logins watched against their connection limit (0: the server's own limit)",
    )
    exact_counts: int = Field(20, ge=0, le=1000, description="Exact COUNT(*)s of suspected tables a round, at most")
    subsystems: list[Subsystem] = Field(default_factory=list)
    anomalies: list[Anomaly] = Field(default_factory=list)

    @field_validator("dialect")
    @classmethod
    def _dialect(cls, name: str) -> str:
        if name not in DIALECTS:
            raise ValueError(f"unknown dialect {name!r} (known: {', '.join(sorted(DIALECTS))})")
        return name

    @model_validator(mode="after")
    def _coherent_db(self) -> Config:
        given = [k for k in ("password", "password_env", "password_file") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give at most one of password, password_env, password_file (got {', '.join(given)})")
        if self.deadline is not None and self.deadline > self.timeout:
            raise ValueError(f"deadline ({self.deadline}s) must not exceed timeout ({self.timeout}s)")
        names = [s.name for s in self.subsystems]
        if len(set(names)) != len(names):
            raise ValueError("a subsystem name is used twice")
        for s in self.subsystems:
            if s.database is not None and s.database not in self.databases:
                raise ValueError(f"subsystem {s.name!r}: database {s.database!r} is not in databases")
        for login, limit in self.logins.items():
            if not login or limit < 0:
                raise ValueError(f"logins: {login!r} needs a name and a limit ≥ 0 (0: the server's own limit)")
        rules = [a.name for a in self.anomalies]
        if len(set(rules)) != len(rules):
            raise ValueError("an anomaly rule name is used twice")
        sqlglot_name = dialect(self.dialect).sqlglot
        for a in self.anomalies:
            if a.subsystem not in names:
                raise ValueError(f"anomaly {a.name!r}: unknown subsystem {a.subsystem!r} (known: {', '.join(names)})")
            if a.database is not None and a.database not in self.databases:
                raise ValueError(f"anomaly {a.name!r}: database {a.database!r} is not in databases")
            try:
                check_read_only(a.query, sqlglot_name)
            except NotReadOnly as exc:
                raise ValueError(f"anomaly {a.name!r}: query refused, it must only read: {exc}") from None
        return self

    # -- derived ---------------------------------------------------------------------------
    @property
    def dialect_obj(self) -> Any:  # the dialect module's DIALECT
        return dialect(self.dialect)

    @property
    def server_id(self) -> str:
        return f"{self.host}:{self.port or self.dialect_obj.default_port}"

    @property
    def server_label(self) -> str:
        return self.label or self.server_id

    @property
    def round_deadline(self) -> float:
        return self.deadline if self.deadline is not None else max(0.5, self.timeout - 1.0)

    def resolve_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ProbeError(f"password_file: cannot read {self.password_file}: {exc.strerror}") from None
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ProbeError(f"password_env: environment variable {self.password_env} is not set")
            return value
        return None

    def subsystem_database(self, s: Subsystem) -> str:
        return s.database or self.databases[0]

    def anomaly_database(self, a: Anomaly) -> str:
        if a.database:
            return a.database
        sub = next(s for s in self.subsystems if s.name == a.subsystem)
        return self.subsystem_database(sub)

    def subsystem_tables(self) -> dict[tuple[str, str], list[Subsystem]]:
        """(database, schema.table) → the subsystems that list it."""
        out: dict[tuple[str, str], list[Subsystem]] = {}
        d = self.dialect_obj
        for s in self.subsystems:
            db = self.subsystem_database(s)
            for t in s.tables:
                out.setdefault((db, split_table(t, d.default_schema(db))), []).append(s)
        return out
