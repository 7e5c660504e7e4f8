"""PostgreSQL through psycopg 3. Every statement the probe sends is here.

Row counts start from the catalogue: pg_class.reltuples is what VACUUM / ANALYZE last measured, and
pg_stat_user_tables moves with every committed write even when autovacuum is off (n_live_tup,
n_tup_del, n_mod_since_analyze). They only raise a suspicion; a bounded COUNT(*) of the suspected
table decides. Locks: pg_locks (waitstart, PostgreSQL 14+) and pg_blocking_pids() need no grant;
other logins' client address, transaction age and statement need pg_monitor (pg_read_all_stats).
"""

from __future__ import annotations

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
)

_USER_TABLES = (
    "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
)
# What a session is, as far as this login may see (other logins' rows are blank without pg_monitor).
_SESSION = (
    "a.pid, a.usename AS login, host(a.client_addr) AS client_host, a.application_name AS program, "
    "a.datname AS database_name, a.state, EXTRACT(EPOCH FROM now() - a.xact_start) AS xact_s, "
    "CASE WHEN a.state LIKE 'idle in transaction%%' THEN EXTRACT(EPOCH FROM now() - a.state_change) END AS idle_s, "
    "left(a.query, 300) AS statement, a.wait_event_type = 'Lock' AS waiting"
)
HIDDEN = "<insufficient privilege>"

STATEMENTS: dict[str, str] = {
    "server": (
        "/* hisguard:server */ SELECT version() AS version, "
        "EXTRACT(EPOCH FROM now() - pg_postmaster_start_time()) AS uptime_s, "
        "pg_has_role('pg_read_all_stats', 'USAGE') AS sees_all_sessions, "
        "current_setting('autovacuum') AS autovacuum"
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
    # In use against the server's limit (less the slots reserved for superusers), each monitored
    # database's CONNECTION LIMIT and each watched login's. Every session's row is visible to any login.
    "connections": (
        "/* hisguard:connections */ SELECT 'server' AS scope, '' AS name, "
        "(SELECT count(*) FROM pg_stat_activity WHERE usesysid IS NOT NULL "
        "AND COALESCE(backend_type, 'client backend') = 'client backend') AS in_use, "
        "current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int "
        "- COALESCE(current_setting('reserved_connections', true)::int, 0) AS limit_value "
        "UNION ALL SELECT 'database', d.datname, "
        "(SELECT count(*) FROM pg_stat_activity AS a WHERE a.datid = d.oid), NULLIF(d.datconnlimit, -1) "
        "FROM pg_database AS d WHERE d.datname = ANY(%s) "
        "UNION ALL SELECT 'login', r.rolname, "
        "(SELECT count(*) FROM pg_stat_activity AS a WHERE a.usesysid = r.oid), NULLIF(r.rolconnlimit, -1) "
        "FROM pg_roles AS r WHERE r.rolname = ANY(%s)"
    ),
    # Transactions open longer than the threshold, and whether they hold locks others may need.
    "long_transactions": (
        f"/* hisguard:long_transactions */ SELECT {_SESSION}, "
        "(SELECT count(*) FROM pg_locks AS l WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation' "
        "AND l.database IS NOT NULL) AS locks_held, "
        "EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.pid = a.pid AND l.granted "
        "AND l.locktype = 'transactionid') AS writes "
        "FROM pg_stat_activity AS a "
        "WHERE a.xact_start < now() - make_interval(secs => %s) AND a.pid <> pg_backend_pid()"
    ),
    "columns": (
        "/* hisguard:columns */ SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name, "
        "format_type(a.atttypid, a.atttypmod) AS type_name, NOT a.attnotnull AS is_nullable "
        + _USER_TABLES.replace("WHERE", "JOIN pg_attribute AS a ON a.attrelid = c.oid WHERE", 1)
        + " AND a.attnum > 0 AND NOT a.attisdropped"
    ),
    # reltuples is -1 until the table was first vacuumed or analyzed (PostgreSQL 14+), and again after
    # TRUNCATE; the oid changes when a table is dropped and re-created, relfilenode when TRUNCATE (or
    # VACUUM FULL) gives it new storage — at once, before any statistics move.
    "row_counts": (
        "/* hisguard:row_counts */ SELECT n.nspname AS schema_name, c.relname AS table_name, "
        "c.oid::bigint AS identity, c.relfilenode::bigint AS storage, c.reltuples::bigint AS row_count, "
        "c.relpages AS pages, "
        "s.n_live_tup AS live_rows, s.n_tup_del AS deleted_rows, "
        "s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS changes, s.n_mod_since_analyze AS modified_since_analyze, "
        "array_to_string(c.reloptions, ',') ~ 'autovacuum_enabled=(false|off|no|0)' AS autovacuum_off "
        + _USER_TABLES.replace("WHERE", "LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid WHERE", 1)
    ),
    # Only for a table the statistics put in doubt; bounded by statement_timeout like every statement.
    "exact_count": "/* hisguard:exact_count */ SELECT count(*) AS row_count FROM {table}",
    # Sessions of this database waiting for a lock, whom they wait for, and the tables involved.
    "lock_waits": (
        "/* hisguard:lock_waits */ SELECT l.pid, EXTRACT(EPOCH FROM now() - MIN(l.waitstart)) AS wait_s, "
        "pg_blocking_pids(l.pid) AS blocked_by, "
        "string_agg(DISTINCT n.nspname || '.' || c.relname, ',') AS tables, "
        "bool_or(l.locktype = 'relation') AS table_lock "
        "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
        "LEFT JOIN pg_class AS c ON c.oid = l.relation "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE NOT l.granted AND a.datname = current_database() "
        "GROUP BY l.pid"
    ),
    # The blockers and waiters by pid, with the tables each holds more than a read lock on.
    "sessions": (
        f"/* hisguard:sessions */ SELECT {_SESSION}, "
        "ARRAY(SELECT n.nspname || '.' || c.relname FROM pg_locks AS l "
        "JOIN pg_class AS c ON c.oid = l.relation JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE l.pid = a.pid AND l.granted AND l.mode <> 'AccessShareLock' AND c.relkind IN ('r', 'p')) AS tables "
        "FROM pg_stat_activity AS a WHERE a.pid = ANY(%s)"
    ),
}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _session(row: dict[str, Any]) -> Session:
    statement = row["statement"]
    hidden = statement == HIDDEN
    return Session(
        id=str(row["pid"]),
        login=row["login"],
        host=row["client_host"],
        program=row["program"] or None,
        database=row["database_name"],
        state=row["state"],
        xact_s=_num(row["xact_s"]),
        idle_s=_num(row["idle_s"]),
        statement=None if hidden or not statement else str(statement),
        tables=list(row.get("tables") or []),
        waiting=bool(row["waiting"]),
    )


class PostgresDialect:
    name = "postgresql"
    sqlglot = "postgres"
    default_port = 5432
    default_user = "hisguard"
    maintenance_db = "postgres"
    per_database = True  # the catalogue of a database is only visible from inside it
    locks_per_database = True  # relation names resolve only inside their database
    lock_privilege = "pg_monitor (for the blockers' details)"
    reconnect_after_timeout = False
    statements = STATEMENTS

    def default_schema(self, database: str) -> str:
        return "public"

    def display(self, database: str, table: str) -> str:
        return f"{database}.{table}"

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
        # The server refuses a login because connections are used up (SQLSTATE 53300; libpq gives text only).
        if (
            state == "53300"
            or "too many clients" in text
            or "too many connections" in text
            or ("remaining connection slots are reserved" in text)
        ):
            if "for role" in text:
                return DbError("full", text, "login " + text.split('for role "', 1)[-1].split('"', 1)[0])
            if "for database" in text:
                return DbError("full", text, "database " + text.split('for database "', 1)[-1].split('"', 1)[0])
            return DbError("full", text, "server")
        if state == "42501" or "permission denied for database" in text:
            return DbError("denied", text)
        if state in ("42P01", "3D000") or (not state and "does not exist" in text and "database" in text):
            return DbError("missing", text)
        # libpq reports a refused login as text only (no SQLSTATE on the connection error).
        refused = ("authentication failed", "no pg_hba.conf entry", "does not exist")
        if state in ("28P01", "28000") or (not state and any(r in text for r in refused)):
            return DbError("login", f"login failed: {text}")
        if state in ("57014", "55P03") or "timeout" in text.lower():
            return DbError("timeout", text)
        if state.startswith("08") or "Connection refused" in text or "could not connect" in text or not state:
            if exc.__class__.__name__ == "OperationalError":
                return DbError("unreachable", text)
        return DbError("query", text)

    def broken(self, q: Query) -> bool:
        return bool(getattr(q.conn, "closed", False))

    def setup(self, q: Query, statement_timeout: float) -> None:
        """Set at connection time (options) so that no statement runs before the limits hold."""

    def use(self, q: Query, database: str) -> None:
        """Each database has its own session already."""

    def server(self, q: Query) -> ServerFacts:
        row = q.rows(STATEMENTS["server"])[0]
        facts = ServerFacts(version=str(row["version"]), uptime_s=float(row["uptime_s"]))
        facts.sees_all_sessions = bool(row["sees_all_sessions"])
        if not facts.sees_all_sessions:
            facts.blind_spots.append(
                "其他登录的会话详情（客户端地址、事务时长、语句）：需 pg_monitor / "
                "other logins' sessions (client address, transaction age, statement): GRANT pg_monitor"
            )
        if str(row["autovacuum"]) != "on":
            facts.blind_spots.append(
                "autovacuum 已关闭，统计信息不会自动更新 / autovacuum is off: statistics never refresh by themselves"
            )
        return facts

    def databases(self, q: Query) -> dict[str, DbInfo]:
        out = {}
        for row in q.rows(STATEMENTS["databases"]):
            state = "INVALID" if row["datconnlimit"] == -2 else ("ONLINE" if row["datallowconn"] else "OFFLINE")
            out[row["name"]] = DbInfo(name=row["name"], state=state, collation=row["datcollate"])
        return out

    def database_gone(self, q: Query, database: str) -> bool | None:
        return True  # pg_database lists every database to every login

    def backups(self, q: Query) -> dict[str, BackupAges] | None:
        return None  # base backups are taken outside the server; it keeps no history of them

    def corruption(self, q: Query, read_error_log: bool) -> dict[str, Corruption]:
        return {
            row["database_name"]: Corruption(checksum_failures=int(row["checksum_failures"]))
            for row in q.rows(STATEMENTS["corruption"])
        }

    def activity(
        self, q: Query, databases: list[str], logins: list[str], long_s: float, facts: ServerFacts
    ) -> Activity:
        """Server-wide: connections against their limits, and transactions open longer than `long_s`."""
        act = Activity()
        for row in q.rows(STATEMENTS["connections"], (databases, logins)):
            limit = row["limit_value"]
            act.connections.append(
                ConnectionUse(row["scope"], row["name"], int(row["in_use"]), None if limit is None else int(limit))
            )
        for row in q.rows(STATEMENTS["long_transactions"], (long_s,)):
            s = _session(row)
            s.locks_held, s.writes = int(row["locks_held"]), bool(row["writes"])
            act.long_transactions.append(s)
        return act

    def lock_waits(self, q: Query, database: str | None) -> list[LockWait]:
        return [
            LockWait(
                waiter=str(row["pid"]),
                blockers=[str(p) for p in row["blocked_by"] or []],
                wait_s=_num(row["wait_s"]),
                table=(row["tables"] or "").split(",")[0] or None,
                kind="table" if row["table_lock"] else "row",
            )
            for row in q.rows(STATEMENTS["lock_waits"])
        ]

    def sessions(self, q: Query, ids: list[str], database: str | None) -> dict[str, Session]:
        pids = [int(i) for i in ids if i.isdigit()]
        if not pids:
            return {}
        return {str(row["pid"]): _session(row) for row in q.rows(STATEMENTS["sessions"], (pids,))}

    def columns(self, q: Query, database: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for row in q.rows(STATEMENTS["columns"]):
            kind = row["type_name"] + (" null" if row["is_nullable"] else " not null")
            out.setdefault(f"{row['schema_name']}.{row['table_name']}", {})[row["column_name"]] = kind
        return out

    def table_stats(self, q: Query, database: str) -> dict[str, TableStats]:
        out = {}
        for row in q.rows(STATEMENTS["row_counts"]):
            estimate = int(row["row_count"])
            live = None if row["live_rows"] is None else int(row["live_rows"])
            out[f"{row['schema_name']}.{row['table_name']}"] = TableStats(
                rows=None if estimate < 0 else estimate,
                identity=str(row["identity"]),
                storage=str(row["storage"]),
                live=live,
                deletes=None if row["deleted_rows"] is None else int(row["deleted_rows"]),
                changes=None if row["changes"] is None else str(row["changes"]),
                modified_since_analyze=row["modified_since_analyze"],
                # No pages or no statistics, and no live rows counted: truncated, re-created, or never filled.
                # (A table filled but never analyzed has live rows: its live count is the estimate.)
                emptied=(estimate < 0 or int(row["pages"]) == 0) and not live,
                autovacuum_off=bool(row["autovacuum_off"]),
            )
        return out

    def exact_count(self, q: Query, database: str, table: str) -> int:
        schema, _, name = table.partition(".")
        rows = q.rows(STATEMENTS["exact_count"].format(table=f"{quote(schema)}.{quote(name)}"))
        return int(rows[0]["row_count"])

    def table_gone(self, q: Query, database: str, table: str) -> bool | None:
        return True  # pg_class lists every table to every login, granted or not


DIALECT = PostgresDialect()
