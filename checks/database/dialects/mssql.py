"""Microsoft SQL Server through pymssql (FreeTDS). Every T-SQL statement the probe sends is here.

Names of databases are inserted with QUOTENAME-style brackets (three-part names), never as
values; everything else is a literal. Ages are computed on the server (GETDATE()) so that the
server's local time zone and clock never meet the agent's.
"""

from __future__ import annotations

import re
from typing import Any

from hisguard.checks.database.dialects.base import (
    Activity,
    BackupAges,
    ConnectionUse,
    Corruption,
    DbError,
    DbInfo,
    LockWait,
    Query,
    ServerFacts,
    Session,
    TableStats,
    id_list,
    quote_brackets,
)

STATEMENTS: dict[str, str] = {
    # Session: never wait long on a lock (catalogue views wait on schema locks), always lose a deadlock.
    "session": "/* hisguard:session */ SET LOCK_TIMEOUT {lock_ms}; SET DEADLOCK_PRIORITY LOW",
    # VIEW SERVER STATE shows every session, request and lock; VIEW ANY DEFINITION every table (without
    # it a table the login has no permission on is missing from sys.tables, not dropped).
    "server": (
        "/* hisguard:server */ SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS version, "
        "DATEDIFF(SECOND, sqlserver_start_time, SYSDATETIME()) AS uptime_s, "
        "HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE') AS sees_all_sessions, "
        "HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW ANY DEFINITION') AS sees_all_definitions "
        "FROM sys.dm_os_sys_info"
    ),
    # User sessions against the 'user connections' setting (0: the engine's maximum, 32,767), and per login
    # and per database (SQL Server has no per-login limit of its own: the configuration gives it).
    "connections": (
        "/* hisguard:connections */ SELECT N'server' AS scope, N'' AS name, "
        "(SELECT COUNT(*) FROM sys.dm_exec_sessions WHERE is_user_process = 1) AS in_use, "
        "(SELECT CAST(value_in_use AS int) FROM sys.configurations WHERE name = N'user connections') AS limit_value "
        "UNION ALL SELECT N'login', s.login_name, COUNT(*), NULL FROM sys.dm_exec_sessions AS s "
        "WHERE s.is_user_process = 1 GROUP BY s.login_name "
        "UNION ALL SELECT N'database', DB_NAME(s.database_id), COUNT(*), NULL FROM sys.dm_exec_sessions AS s "
        "WHERE s.is_user_process = 1 GROUP BY s.database_id"
    ),
    # Blocked requests: whom they wait for, how long (ms), and the locked object (OBJECT locks are named
    # here; KEY/PAGE/RID locks carry a hobt_id, named through the database's sys.partitions).
    "lock_waits": (
        "/* hisguard:lock_waits */ SELECT r.session_id, r.blocking_session_id, r.wait_time AS wait_ms, r.wait_type, "
        "r.wait_resource, DB_NAME(r.database_id) AS database_name, l.resource_type, "
        "DB_NAME(l.resource_database_id) AS resource_database, l.resource_associated_entity_id AS entity_id, "
        "CASE WHEN l.resource_type = N'OBJECT' THEN OBJECT_SCHEMA_NAME(l.resource_associated_entity_id, "
        "l.resource_database_id) + N'.' + OBJECT_NAME(l.resource_associated_entity_id, l.resource_database_id) "
        "END AS object_name "
        "FROM sys.dm_exec_requests AS r "
        "LEFT JOIN sys.dm_tran_locks AS l ON l.request_session_id = r.session_id AND l.request_status = N'WAIT' "
        "WHERE r.blocking_session_id > 0"
    ),
    "hobt_tables": (
        "/* hisguard:hobt_tables */ SELECT p.hobt_id, s.name AS schema_name, t.name AS table_name "
        "FROM {db}.sys.partitions AS p JOIN {db}.sys.tables AS t ON t.object_id = p.object_id "
        "JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id WHERE p.hobt_id IN ({ids})"
    ),
    # The sessions of a lock chain: login, host, program, open transaction age, idle time, last statement.
    "sessions": (
        "/* hisguard:sessions */ SELECT s.session_id, s.login_name, s.host_name, s.program_name, s.status, "
        "DB_NAME(s.database_id) AS database_name, s.open_transaction_count, "
        "DATEDIFF(SECOND, MIN(at.transaction_begin_time), GETDATE()) AS xact_s, "
        "DATEDIFF(SECOND, s.last_request_end_time, GETDATE()) AS idle_s, LEFT(MAX(t.text), 300) AS statement "
        "FROM sys.dm_exec_sessions AS s "
        "LEFT JOIN sys.dm_tran_session_transactions AS st ON st.session_id = s.session_id "
        "LEFT JOIN sys.dm_tran_active_transactions AS at ON at.transaction_id = st.transaction_id "
        "LEFT JOIN sys.dm_exec_connections AS c ON c.session_id = s.session_id "
        "OUTER APPLY sys.dm_exec_sql_text(c.most_recent_sql_handle) AS t "
        "WHERE s.session_id IN ({ids}) "
        "GROUP BY s.session_id, s.login_name, s.host_name, s.program_name, s.status, s.database_id, "
        "s.open_transaction_count, s.last_request_end_time"
    ),
    # User transactions open longer than the threshold, with the locks they hold.
    "long_transactions": (
        "/* hisguard:long_transactions */ SELECT s.session_id, s.login_name, s.host_name, s.program_name, s.status, "
        "DB_NAME(s.database_id) AS database_name, s.open_transaction_count, "
        "DATEDIFF(SECOND, MIN(at.transaction_begin_time), GETDATE()) AS xact_s, "
        "DATEDIFF(SECOND, s.last_request_end_time, GETDATE()) AS idle_s, LEFT(MAX(t.text), 300) AS statement, "
        "(SELECT COUNT(*) FROM sys.dm_tran_locks AS l WHERE l.request_session_id = s.session_id "
        "AND l.request_status = N'GRANT' AND l.resource_type = N'OBJECT') AS locks_held, "
        "(SELECT COUNT(*) FROM sys.dm_tran_locks AS l WHERE l.request_session_id = s.session_id "
        "AND l.request_status = N'GRANT' AND l.request_mode IN (N'X', N'IX', N'SIX', N'U')) AS write_locks "
        "FROM sys.dm_tran_session_transactions AS st "
        "JOIN sys.dm_tran_active_transactions AS at ON at.transaction_id = st.transaction_id "
        "JOIN sys.dm_exec_sessions AS s ON s.session_id = st.session_id "
        "LEFT JOIN sys.dm_exec_connections AS c ON c.session_id = s.session_id "
        "OUTER APPLY sys.dm_exec_sql_text(c.most_recent_sql_handle) AS t "
        "WHERE s.is_user_process = 1 AND s.session_id <> @@SPID "
        "GROUP BY s.session_id, s.login_name, s.host_name, s.program_name, s.status, s.database_id, "
        "s.open_transaction_count, s.last_request_end_time "
        "HAVING MIN(at.transaction_begin_time) < DATEADD(SECOND, -{seconds}, GETDATE())"
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
    # Heap (0) or clustered index (1): one partition set per table, no scan. object_id and create_date
    # change when a table is dropped and re-created.
    "row_counts": (
        "/* hisguard:row_counts */ SELECT s.name AS schema_name, t.name AS table_name, SUM(p.rows) AS row_count, "
        "t.object_id, CONVERT(nvarchar(30), t.create_date, 126) AS create_date "
        "FROM {db}.sys.tables AS t "
        "JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id "
        "JOIN {db}.sys.partitions AS p ON p.object_id = t.object_id AND p.index_id IN (0, 1) "
        "WHERE t.is_ms_shipped = 0 "
        "GROUP BY s.name, t.name, t.object_id, t.create_date"
    ),
    # Only for a table the statistics put in doubt; bounded by the query timeout and LOCK_TIMEOUT.
    "exact_count": "/* hisguard:exact_count */ SELECT COUNT_BIG(*) AS row_count FROM {table}",
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
    locks_per_database = False
    lock_privilege = "VIEW SERVER STATE"
    reconnect_after_timeout = True  # after a query timeout FreeTDS may leave the session mid-result
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
        if re.search(r"\b17809\b|maximum number of '?\d*'? ?user connections", text):
            return DbError("full", text, "server")
        if re.search(r"Login failed|登录失败", text):
            return DbError("login", f"login failed: {text}")
        if re.search(r"\b(229|230|262|297|300|916)\b|permission was denied|not able to access the database", text):
            return DbError("denied", text)
        if re.search(r"\b208\b|Invalid object name", text):
            return DbError("missing", text)
        if re.search(r"\b1222\b|Lock request time out", text):
            return DbError("timeout", text)
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

    def broken(self, q: Query) -> bool:
        return False  # pymssql reconnects nothing; a dead connection fails the next statement as unreachable

    def display(self, database: str, table: str) -> str:
        return f"{database}.{table}"

    def server(self, q: Query) -> ServerFacts:
        row = q.rows(STATEMENTS["server"])[0]
        facts = ServerFacts(version=str(row["version"]), uptime_s=_num(row["uptime_s"]))
        facts.sees_all_sessions = bool(row.get("sees_all_sessions", 1))
        facts.sees_all_definitions = bool(row.get("sees_all_definitions", 1))
        q.sees_all_definitions = facts.sees_all_definitions  # type: ignore[attr-defined]
        if not facts.sees_all_sessions:
            facts.blind_spots.append(
                "会话、锁等待与阻塞者、连接数：需 VIEW SERVER STATE / sessions, lock waits and blockers, "
                "connections: GRANT VIEW SERVER STATE"
            )
        if not facts.sees_all_definitions:
            facts.blind_spots.append(
                "无权限的表在 sys.tables 中不可见：需 VIEW ANY DEFINITION / tables this login has no permission on "
                "are not listed: GRANT VIEW ANY DEFINITION"
            )
        return facts

    def database_gone(self, q: Query, database: str) -> bool | None:
        return True  # VIEW ANY DATABASE (public by default) lists every database

    def activity(
        self, q: Query, databases: list[str], logins: list[str], long_s: float, facts: ServerFacts
    ) -> Activity:
        act = Activity()
        if not facts.sees_all_sessions:
            return act
        for row in q.rows(STATEMENTS["connections"]):
            scope, name = str(row["scope"]), str(row["name"] or "")
            if scope == "server":
                limit = int(row["limit_value"] or 0) or 32767  # 0: the engine's maximum
                act.connections.append(ConnectionUse("server", "", int(row["in_use"]), limit))
            elif (scope == "login" and name in logins) or (scope == "database" and name in databases):
                act.connections.append(ConnectionUse(scope, name, int(row["in_use"]), None))
        seen = {(c.scope, c.name) for c in act.connections}
        act.connections += [ConnectionUse("login", n, 0, None) for n in logins if ("login", n) not in seen]
        for row in q.rows(STATEMENTS["long_transactions"].format(seconds=int(long_s))):
            s = _session(row)
            s.locks_held, s.writes = int(row["locks_held"] or 0), int(row["write_locks"] or 0) > 0
            act.long_transactions.append(s)
        return act

    def lock_waits(self, q: Query, database: str | None) -> list[LockWait]:
        rows = q.rows(STATEMENTS["lock_waits"])
        hobts: dict[str, set[int]] = {}
        for row in rows:
            if row["resource_type"] in ("KEY", "PAGE", "RID", "HOBT") and row["resource_database"]:
                hobts.setdefault(str(row["resource_database"]), set()).add(int(row["entity_id"]))
        names: dict[tuple[str, int], str] = {}
        for db, ids in hobts.items():
            sql = STATEMENTS["hobt_tables"].format(db=quote_brackets(db), ids=", ".join(str(i) for i in sorted(ids)))
            for r in q.rows(sql):
                names[(db, int(r["hobt_id"]))] = f"{r['schema_name']}.{r['table_name']}"
        out: dict[str, LockWait] = {}
        for row in rows:
            table = row["object_name"]
            if table is None and row["entity_id"] is not None and row["resource_database"]:
                table = names.get((str(row["resource_database"]), int(row["entity_id"])))
            w = out.setdefault(
                str(row["session_id"]),
                LockWait(
                    str(row["session_id"]),
                    [],
                    None if row["wait_ms"] is None else float(row["wait_ms"]) / 1000.0,
                    table,
                    "table" if row["resource_type"] == "OBJECT" else "row",
                    row["resource_database"] or row["database_name"],
                ),
            )
            blocker = str(row["blocking_session_id"])
            if blocker not in w.blockers:
                w.blockers.append(blocker)
        return list(out.values())

    def sessions(self, q: Query, ids: list[str], database: str | None) -> dict[str, Session]:
        numbers = id_list(ids)
        if not numbers:
            return {}
        return {str(row["session_id"]): _session(row) for row in q.rows(STATEMENTS["sessions"].format(ids=numbers))}

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

    def table_stats(self, q: Query, database: str) -> dict[str, TableStats]:
        out = {}
        for row in q.rows(STATEMENTS["row_counts"].format(db=quote_brackets(database))):
            rows = None if row["row_count"] is None else int(row["row_count"])
            identity = f"{row.get('object_id')}:{row.get('create_date')}" if row.get("object_id") is not None else None
            out[f"{row['schema_name']}.{row['table_name']}"] = TableStats(
                rows=rows, identity=identity, changes=None if rows is None else str(rows), emptied=rows == 0
            )
        return out

    def exact_count(self, q: Query, database: str, table: str) -> int:
        schema, _, name = table.partition(".")
        target = f"{quote_brackets(database)}.{quote_brackets(schema)}.{quote_brackets(name)}"
        return int(q.rows(STATEMENTS["exact_count"].format(table=target))[0]["row_count"])

    def table_gone(self, q: Query, database: str, table: str) -> bool | None:
        # With VIEW ANY DEFINITION every table is listed: absence is a drop. Without it, it may be hidden.
        return True if getattr(q, "sees_all_definitions", True) else None


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _session(row: dict[str, Any]) -> Session:
    status = str(row["status"] or "")
    open_trx = int(row["open_transaction_count"] or 0)
    idle = status == "sleeping" and open_trx > 0
    return Session(
        id=str(row["session_id"]),
        login=row["login_name"],
        host=row["host_name"],
        program=row["program_name"],
        database=row["database_name"],
        state="idle in transaction" if idle else status,
        xact_s=_num(row["xact_s"]),
        idle_s=_num(row["idle_s"]) if idle else None,
        statement=row["statement"],
    )


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
