"""Microsoft SQL Server through pymssql (FreeTDS). Every T-SQL statement the probe sends is here.

Names of databases are inserted with QUOTENAME-style brackets (three-part names), never as
values; everything else is a literal. Ages are computed on the server (GETDATE()) so that the
server's local time zone and clock never meet the agent's.
"""

from __future__ import annotations

import re
from typing import Any

from hisguard.checks.database.dialects.base import (
    BackupAges,
    Corruption,
    DbError,
    DbInfo,
    Query,
    ServerFacts,
    quote_brackets,
)

STATEMENTS: dict[str, str] = {
    # Session: never wait long on a lock (catalogue views wait on schema locks), always lose a deadlock.
    "session": "/* hisguard:session */ SET LOCK_TIMEOUT {lock_ms}; SET DEADLOCK_PRIORITY LOW",
    "server": (
        "/* hisguard:server */ SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS version, "
        "DATEDIFF(SECOND, sqlserver_start_time, SYSDATETIME()) AS uptime_s "
        "FROM sys.dm_os_sys_info"
    ),
    # LastGoodCheckDbTime exists from SQL Server 2016 SP2 on (NULL before); 1900-01-01 means never.
    "databases": (
        "/* hisguard:databases */ SELECT d.name, d.database_id, d.state, d.state_desc, d.recovery_model_desc, "
        "d.user_access_desc, d.is_read_only, d.log_reuse_wait_desc, d.collation_name, "
        "DATEDIFF(MINUTE, CAST(DATABASEPROPERTYEX(d.name, 'LastGoodCheckDbTime') AS datetime), GETDATE()) "
        "AS checkdb_age_min "
        "FROM sys.databases AS d"
    ),
    # One row per database from the performance counters: no per-database context switch.
    "log_space": (
        "/* hisguard:log_space */ SELECT RTRIM(instance_name) AS database_name, cntr_value AS percent_log_used "
        "FROM sys.dm_os_performance_counters "
        "WHERE counter_name = 'Percent Log Used' AND object_name LIKE '%:Databases%'"
    ),
    # msdb may have another collation than the user databases (Chinese_PRC_CI_AS beside
    # SQL_Latin1_General_CP1_CI_AS): compare names in one collation or the join fails.
    "backups": (
        "/* hisguard:backups */ SELECT d.name AS database_name, d.recovery_model_desc, "
        "DATEDIFF(MINUTE, MAX(CASE WHEN b.type = 'D' THEN b.backup_finish_date END), GETDATE()) AS full_age_min, "
        "DATEDIFF(MINUTE, MAX(CASE WHEN b.type = 'I' THEN b.backup_finish_date END), GETDATE()) AS diff_age_min, "
        "DATEDIFF(MINUTE, MAX(CASE WHEN b.type = 'L' THEN b.backup_finish_date END), GETDATE()) AS log_age_min "
        "FROM sys.databases AS d "
        "LEFT JOIN msdb.dbo.backupset AS b "
        "ON b.database_name COLLATE DATABASE_DEFAULT = d.name COLLATE DATABASE_DEFAULT "
        "WHERE d.database_id <> 2 "
        "GROUP BY d.name, d.recovery_model_desc"
    ),
    # event_type 1 = 823 / other 824, 2 = bad checksum, 3 = torn page; 4, 5, 7 are restored/repaired/deallocated.
    "suspect_pages": (
        "/* hisguard:suspect_pages */ SELECT DB_NAME(sp.database_id) AS database_name, sp.database_id, "
        "sp.file_id, sp.page_id, sp.event_type, sp.error_count, "
        "DATEDIFF(MINUTE, sp.last_update_date, GETDATE()) AS age_min "
        "FROM msdb.dbo.suspect_pages AS sp WHERE sp.event_type IN (1, 2, 3)"
    ),
    # 825 (read retry succeeded) is only in the error log; reading it needs securityadmin.
    "error_log": "/* hisguard:error_log */ EXEC sys.xp_readerrorlog 0, 1, N'825'",
    # Anomaly rules name tables as the HIS's own queries do (dbo.table), in their database.
    "use": "/* hisguard:use */ USE {db}",
    "columns": (
        "/* hisguard:columns */ SELECT s.name AS schema_name, t.name AS table_name, c.name AS column_name, "
        "ty.name AS type_name, c.max_length, c.precision, c.scale, c.is_nullable "
        "FROM {db}.sys.tables AS t "
        "JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id "
        "JOIN {db}.sys.columns AS c ON c.object_id = t.object_id "
        "JOIN {db}.sys.types AS ty ON ty.user_type_id = c.user_type_id "
        "WHERE t.is_ms_shipped = 0"
    ),
    # Heap (0) or clustered index (1): one partition set per table, no scan.
    "row_counts": (
        "/* hisguard:row_counts */ SELECT s.name AS schema_name, t.name AS table_name, SUM(p.rows) AS row_count "
        "FROM {db}.sys.tables AS t "
        "JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id "
        "JOIN {db}.sys.partitions AS p ON p.object_id = t.object_id AND p.index_id IN (0, 1) "
        "WHERE t.is_ms_shipped = 0 "
        "GROUP BY s.name, t.name"
    ),
}

_STATE_DESC = {0: "ONLINE", 1: "RESTORING", 2: "RECOVERING", 3: "RECOVERY_PENDING", 4: "SUSPECT", 5: "EMERGENCY"}
_STATE_DESC.update({6: "OFFLINE", 7: "COPYING", 10: "OFFLINE_SECONDARY"})
ERROR_LOG = "(error log)"  # 825 read retries are server-wide: the log line does not name the database
_NEVER_MIN = 50 * 365 * 24 * 60  # LastGoodCheckDbTime 1900-01-01: never checked


def _type(row: dict[str, Any]) -> str:
    name = str(row["type_name"])
    if name in ("varchar", "nvarchar", "char", "nchar", "varbinary", "binary"):
        size = int(row["max_length"])
        size_text = "max" if size == -1 else str(size // 2 if name.startswith("n") else size)
        name = f"{name}({size_text})"
    elif name in ("decimal", "numeric"):
        name = f"{name}({row['precision']},{row['scale']})"
    return name + (" null" if row["is_nullable"] else " not null")


class MssqlDialect:
    name = "mssql"
    sqlglot = "tsql"
    default_port = 1433
    default_user = "hisguard"
    maintenance_db = "master"
    per_database = False  # three-part names reach every database from one connection
    statements = STATEMENTS

    def default_schema(self, database: str) -> str:
        return "dbo"

    def connect(
        self, host: str, port: int, user: str, password: str | None, database: str, timeout: float, statement: float
    ) -> Any:
        """A session: `timeout` bounds the login, `statement` each statement (seconds)."""
        import pymssql

        try:
            # login_timeout is not a wall-clock bound (FreeTDS retries): the probe's deadline is.
            return pymssql.connect(
                server=host,
                port=str(port),
                user=user,
                password=password or "",
                database=database,
                login_timeout=max(1, int(timeout)),
                timeout=max(1, round(statement)),  # query timeout
                charset="UTF-8",
                appname="hisguard",
                autocommit=False,
            )
        except Exception as exc:  # driver errors, and encoding errors before any I/O
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> DbError:
        if isinstance(exc, DbError):
            return exc
        text = _message(exc)
        # By text, not number: pymssql can carry a stale number from an earlier failure.
        if re.search(r"Login failed|登录失败", text):
            return DbError("login", f"login failed: {text}")
        if re.search(r"Connection refused|Unable to connect|unavailable or does not exist|\b20009\b", text):
            return DbError("unreachable", text)
        if re.search(r"\b20003\b|timed out|timeout", text, re.I):
            return DbError("timeout", text)
        if re.search(r"\b(20002|20004|20017)\b|connection failed", text, re.I):
            return DbError("unreachable", text)
        return DbError("query", text)

    def setup(self, q: Query, statement_timeout: float) -> None:
        q.rows(STATEMENTS["session"].format(lock_ms=int(statement_timeout * 1000)))

    def use(self, q: Query, database: str) -> None:
        q.rows(STATEMENTS["use"].format(db=quote_brackets(database)))

    def server(self, q: Query) -> ServerFacts:
        row = q.rows(STATEMENTS["server"])[0]
        return ServerFacts(version=str(row["version"]), uptime_s=_num(row["uptime_s"]))

    def databases(self, q: Query) -> dict[str, DbInfo]:
        out: dict[str, DbInfo] = {}
        for row in q.rows(STATEMENTS["databases"]):
            age = _num(row["checkdb_age_min"])
            out[row["name"]] = DbInfo(
                name=row["name"],
                state=str(row["state_desc"] or _STATE_DESC.get(int(row["state"]), f"STATE_{row['state']}")),
                recovery_model=row["recovery_model_desc"],
                collation=row["collation_name"],
                log_reuse_wait=row["log_reuse_wait_desc"],
                checkdb_age_min=age,
                checkdb_never=age is not None and age > _NEVER_MIN,
            )
        for row in q.rows(STATEMENTS["log_space"]):
            db = out.get(str(row["database_name"]).strip())
            if db is not None:
                db.log_used_percent = _num(row["percent_log_used"])
        return out

    def backups(self, q: Query) -> dict[str, BackupAges] | None:
        return {
            row["database_name"]: BackupAges(
                recovery_model=row["recovery_model_desc"],
                full_min=_num(row["full_age_min"]),
                diff_min=_num(row["diff_age_min"]),
                log_min=_num(row["log_age_min"]),
            )
            for row in q.rows(STATEMENTS["backups"])
        }

    def corruption(self, q: Query, read_error_log: bool) -> dict[str, Corruption]:
        out: dict[str, Corruption] = {}
        for row in q.rows(STATEMENTS["suspect_pages"]):
            name = row["database_name"] or f"database_id {row['database_id']}"
            page = {k: row[k] for k in ("file_id", "page_id", "event_type", "error_count", "age_min")}
            out.setdefault(name, Corruption()).suspect_pages.append(page)
        if read_error_log:
            for row in q.rows(STATEMENTS["error_log"]):
                text = str(row.get("Text") or row.get("text") or "")
                # "Error: 825, Severity: 10, State: 2." (the next line names the file, not the database)
                if re.search(r"\b825\b", text):
                    out.setdefault(ERROR_LOG, Corruption()).errors.append(f"{row.get('LogDate')} {text[:300]}")
        return out

    def columns(self, q: Query, database: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for row in q.rows(STATEMENTS["columns"].format(db=quote_brackets(database))):
            out.setdefault(f"{row['schema_name']}.{row['table_name']}", {})[row["column_name"]] = _type(row)
        return out

    def row_counts(self, q: Query, database: str) -> dict[str, int | None]:
        return {
            f"{row['schema_name']}.{row['table_name']}": None if row["row_count"] is None else int(row["row_count"])
            for row in q.rows(STATEMENTS["row_counts"].format(db=quote_brackets(database)))
        }


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _message(exc: BaseException) -> str:
    parts = []
    args = [a for arg in exc.args for a in (arg if isinstance(arg, tuple) else (arg,))]
    texts = [a.decode("utf-8", "replace") if isinstance(a, bytes) else a for a in args if isinstance(a, (bytes, str))]
    client_side = bool(texts) and texts[0].lstrip().startswith("DB-Lib error message")
    for arg in args:
        if isinstance(arg, int) and client_side:
            continue  # the number belongs to an earlier server message, not to this client-side failure
        if isinstance(arg, bytes):
            parts.append(arg.decode("utf-8", "replace"))
        else:
            parts.append(str(arg))
    return " ".join(" ".join(parts).split())[:500] or exc.__class__.__name__


DIALECT = MssqlDialect()
