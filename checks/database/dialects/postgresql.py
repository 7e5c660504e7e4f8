"""PostgreSQL through psycopg 3. Every statement the probe sends is here.

Catalogue figures only: pg_class.reltuples is what VACUUM / ANALYZE (and autovacuum's
auto-analyze) last measured, so row counts cost nothing and lag by one autovacuum cycle.
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

_USER_TABLES = (
    "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
)

STATEMENTS: dict[str, str] = {
    "server": (
        "/* hisguard:server */ SELECT version() AS version, "
        "EXTRACT(EPOCH FROM now() - pg_postmaster_start_time()) AS uptime_s"
    ),
    # datconnlimit -2: a database left invalid by an interrupted DROP DATABASE (PostgreSQL 16+).
    "databases": (
        "/* hisguard:databases */ SELECT datname AS name, datallowconn, datconnlimit, datcollate "
        "FROM pg_database WHERE NOT datistemplate"
    ),
    # Data checksum failures per database (PostgreSQL 12+, counted when checksums are on).
    "corruption": (
        "/* hisguard:corruption */ SELECT datname AS database_name, checksum_failures "
        "FROM pg_stat_database WHERE datname IS NOT NULL AND checksum_failures > 0"
    ),
    "columns": (
        "/* hisguard:columns */ SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name, "
        "format_type(a.atttypid, a.atttypmod) AS type_name, NOT a.attnotnull AS is_nullable "
        + _USER_TABLES.replace("WHERE", "JOIN pg_attribute AS a ON a.attrelid = c.oid WHERE", 1)
        + " AND a.attnum > 0 AND NOT a.attisdropped"
    ),
    # reltuples is -1 until the table was first vacuumed or analyzed (PostgreSQL 14+; 0 before).
    "row_counts": (
        "/* hisguard:row_counts */ SELECT n.nspname AS schema_name, c.relname AS table_name, "
        "c.reltuples::bigint AS row_count " + _USER_TABLES
    ),
}


class PostgresDialect:
    name = "postgresql"
    sqlglot = "postgres"
    default_port = 5432
    default_user = "hisguard"
    maintenance_db = "postgres"
    per_database = True  # the catalogue of a database is only visible from inside it
    statements = STATEMENTS

    def default_schema(self, database: str) -> str:
        return "public"

    def connect(
        self, host: str, port: int, user: str, password: str | None, database: str, timeout: float, statement: float
    ) -> Any:
        """A session: `timeout` bounds the login, `statement` each statement (seconds)."""
        import psycopg

        ms = max(100, int(statement * 1000))
        try:
            return psycopg.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                dbname=database,
                connect_timeout=max(1, int(timeout)),
                application_name="hisguard",
                autocommit=True,
                # Every transaction of this session is read-only and bounded.
                options=f"-c default_transaction_read_only=on -c statement_timeout={ms} -c lock_timeout={ms}",
            )
        except Exception as exc:  # driver errors, and encoding errors before any I/O
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> DbError:
        if isinstance(exc, DbError):
            return exc
        text = " ".join(str(exc).split())[:500] or exc.__class__.__name__
        state = getattr(exc, "sqlstate", None) or ""
        # libpq reports a refused login as text only (no SQLSTATE on the connection error).
        refused = ("authentication failed", "no pg_hba.conf entry", "does not exist", "permission denied for database")
        if state in ("28P01", "28000") or (not state and any(r in text for r in refused)):
            return DbError("login", f"login failed: {text}")
        if state == "57014" or "timeout" in text.lower():
            return DbError("timeout", text)
        if state.startswith("08") or "Connection refused" in text or "could not connect" in text or not state:
            if exc.__class__.__name__ == "OperationalError":
                return DbError("unreachable", text)
        return DbError("query", text)

    def setup(self, q: Query, statement_timeout: float) -> None:
        """Set at connection time (options) so that no statement runs before the limits hold."""

    def use(self, q: Query, database: str) -> None:
        """Each database has its own session already."""

    def server(self, q: Query) -> ServerFacts:
        row = q.rows(STATEMENTS["server"])[0]
        return ServerFacts(version=str(row["version"]), uptime_s=float(row["uptime_s"]))

    def databases(self, q: Query) -> dict[str, DbInfo]:
        out = {}
        for row in q.rows(STATEMENTS["databases"]):
            state = "INVALID" if row["datconnlimit"] == -2 else ("ONLINE" if row["datallowconn"] else "OFFLINE")
            out[row["name"]] = DbInfo(name=row["name"], state=state, collation=row["datcollate"])
        return out

    def backups(self, q: Query) -> dict[str, BackupAges] | None:
        return None  # base backups are taken outside the server; it keeps no history of them

    def corruption(self, q: Query, read_error_log: bool) -> dict[str, Corruption]:
        return {
            row["database_name"]: Corruption(checksum_failures=int(row["checksum_failures"]))
            for row in q.rows(STATEMENTS["corruption"])
        }

    def columns(self, q: Query, database: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for row in q.rows(STATEMENTS["columns"]):
            kind = row["type_name"] + (" null" if row["is_nullable"] else " not null")
            out.setdefault(f"{row['schema_name']}.{row['table_name']}", {})[row["column_name"]] = kind
        return out

    def row_counts(self, q: Query, database: str) -> dict[str, int | None]:
        return {
            f"{row['schema_name']}.{row['table_name']}": None if row["row_count"] < 0 else int(row["row_count"])
            for row in q.rows(STATEMENTS["row_counts"])
        }


DIALECT = PostgresDialect()
