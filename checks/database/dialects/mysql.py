"""MySQL and MariaDB through PyMySQL. Every statement the probe sends is here.

A MySQL "database" is a schema; tables are named database.table. TABLE_ROWS is InnoDB's
estimate (refreshed by ANALYZE TABLE and by InnoDB's own statistics updates), never a scan.
"""

from __future__ import annotations

from typing import Any

from hisguard.checks.database.dialects.base import (
    BackupAges,
    Corruption,
    DbError,
    DbInfo,
    Query,
    ServerFacts,
)

STATEMENTS: dict[str, str] = {
    "version": "/* hisguard:version */ SELECT VERSION() AS version",
    # MariaDB bounds every statement (seconds); MySQL only SELECTs (milliseconds).
    "session_mariadb": "/* hisguard:session */ SET SESSION max_statement_time = {seconds}",
    "session_mysql": "/* hisguard:session */ SET SESSION max_execution_time = {ms}",
    # MySQL 8 caches TABLE_ROWS for a day by default; 5.7 has no such variable (error 1193, ignored).
    "stats_expiry": "/* hisguard:stats_expiry */ SET SESSION information_schema_stats_expiry = 0",
    "read_only": "/* hisguard:read_only */ SET SESSION TRANSACTION READ ONLY",
    # Anomaly rules name tables without their database, as the HIS's own queries do.
    "use": "/* hisguard:use */ USE {db}",
    "uptime": "/* hisguard:uptime */ SHOW GLOBAL STATUS LIKE 'Uptime'",
    "databases": (
        "/* hisguard:databases */ SELECT SCHEMA_NAME AS name, DEFAULT_COLLATION_NAME AS collation "
        "FROM information_schema.SCHEMATA"
    ),
    "columns": (
        "/* hisguard:columns */ SELECT c.TABLE_SCHEMA AS schema_name, c.TABLE_NAME AS table_name, "
        "c.COLUMN_NAME AS column_name, c.COLUMN_TYPE AS type_name, c.IS_NULLABLE AS is_nullable "
        "FROM information_schema.COLUMNS AS c JOIN information_schema.TABLES AS t "
        "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
        "WHERE c.TABLE_SCHEMA = %s AND t.TABLE_TYPE = 'BASE TABLE'"
    ),
    "row_counts": (
        "/* hisguard:row_counts */ SELECT TABLE_SCHEMA AS schema_name, TABLE_NAME AS table_name, "
        "TABLE_ROWS AS row_count FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'"
    ),
}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


class MysqlDialect:
    name = "mysql"
    sqlglot = "mysql"
    default_port = 3306
    default_user = "hisguard"
    maintenance_db = None
    per_database = False
    statements = STATEMENTS

    def default_schema(self, database: str) -> str:
        return database

    def connect(
        self, host: str, port: int, user: str, password: str | None, database: str, timeout: float, statement: float
    ) -> Any:
        """A session: `timeout` bounds the login, `statement` each statement (seconds)."""
        import pymysql

        bound = max(1, round(statement))  # socket reads: a statement that outlives its own limit
        try:
            return pymysql.connect(
                host=host,
                port=port,
                user=user,
                password=(password or "").encode("utf-8"),  # PyMySQL would encode str as latin-1
                database=database or None,
                charset="utf8mb4",
                connect_timeout=max(1, round(timeout)),
                read_timeout=bound,
                write_timeout=bound,
                autocommit=True,
                program_name="hisguard",
            )
        except Exception as exc:  # driver errors, and encoding errors before any I/O
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> DbError:
        if isinstance(exc, DbError):
            return exc
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        text = " ".join(" ".join(_text(a) for a in exc.args).split())[:500] or exc.__class__.__name__
        if code in (1045, 1044, 1698):
            return DbError("login", f"login failed: {text}")
        if code in (1969, 3024) or "timed out" in text.lower():
            return DbError("timeout", text)
        if code in (2003, 2002, 2005, 2006, 2013):
            return DbError("unreachable", text)
        return DbError("query", text)

    def setup(self, q: Query, statement_timeout: float) -> None:
        version = str(q.rows(STATEMENTS["version"])[0]["version"])
        if "mariadb" in version.lower():
            q.rows(STATEMENTS["session_mariadb"].format(seconds=round(statement_timeout, 3)))
        else:
            q.rows(STATEMENTS["session_mysql"].format(ms=int(statement_timeout * 1000)))
            try:
                q.rows(STATEMENTS["stats_expiry"])
            except Exception as exc:
                if not (exc.args and exc.args[0] == 1193):
                    raise
        q.rows(STATEMENTS["read_only"])
        q.version = version  # type: ignore[attr-defined]

    def use(self, q: Query, database: str) -> None:
        q.rows(STATEMENTS["use"].format(db="`" + database.replace("`", "``") + "`"))

    def server(self, q: Query) -> ServerFacts:
        rows = q.rows(STATEMENTS["uptime"])
        uptime = float(_text(rows[0]["Value"])) if rows else None
        return ServerFacts(version=getattr(q, "version", ""), uptime_s=uptime)

    def databases(self, q: Query) -> dict[str, DbInfo]:
        return {
            _text(row["name"]): DbInfo(name=_text(row["name"]), collation=row["collation"])
            for row in q.rows(STATEMENTS["databases"])
        }

    def backups(self, q: Query) -> dict[str, BackupAges] | None:
        return None  # mysqldump / mariabackup keep no history in the server

    def corruption(self, q: Query, read_error_log: bool) -> dict[str, Corruption]:
        return {}

    def columns(self, q: Query, database: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for row in q.rows(STATEMENTS["columns"], (database,)):
            kind = _text(row["type_name"]) + (" null" if row["is_nullable"] == "YES" else " not null")
            out.setdefault(f"{row['schema_name']}.{row['table_name']}", {})[row["column_name"]] = kind
        return out

    def row_counts(self, q: Query, database: str) -> dict[str, int | None]:
        return {
            f"{row['schema_name']}.{row['table_name']}": None if row["row_count"] is None else int(row["row_count"])
            for row in q.rows(STATEMENTS["row_counts"], (database,))
        }


DIALECT = MysqlDialect()
