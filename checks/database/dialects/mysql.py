"""MySQL and MariaDB through PyMySQL. Every statement the probe sends is here.

A MySQL "database" is a schema; tables are named database.table. TABLE_ROWS is InnoDB's estimate
(refreshed by ANALYZE TABLE and by InnoDB's own statistics updates, and reset to the stored
statistics on a restart): a suspicion only; a bounded COUNT(*) of the suspected table decides.
Row-lock waits need PROCESS (information_schema.INNODB_LOCK_WAITS / INNODB_TRX on MariaDB and
MySQL 5.7, performance_schema.data_lock_waits on MySQL 8); without it only the server-wide
Innodb_row_lock_current_waits counter is visible. Table (metadata) lock holders: MariaDB's
METADATA_LOCK_INFO plugin, MySQL 8's performance_schema.metadata_locks.
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
)

_TRX_SESSION = (
    "p.ID AS id, p.USER AS login, p.HOST AS client_host, p.DB AS database_name, p.COMMAND AS command, "
    "p.TIME AS time_s, p.STATE AS state, LEFT(p.INFO, 300) AS statement, "
    "TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) AS xact_s, t.trx_tables_locked AS tables_locked, "
    "t.trx_rows_locked AS rows_locked, t.trx_rows_modified AS rows_modified, t.trx_state AS trx_state"
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
    # Uptime, connections and refused logins, and the grant-free count of row-lock waits.
    "status": (
        "/* hisguard:status */ SHOW GLOBAL STATUS WHERE Variable_name IN ('Uptime', 'Threads_connected', "
        "'Connection_errors_max_connections', 'Aborted_connects', 'Innodb_row_lock_current_waits')"
    ),
    # Connection limits, and this login's global privileges (PROCESS shows every session and InnoDB's locks).
    "limits": (
        "/* hisguard:limits */ SELECT @@GLOBAL.max_connections AS max_connections, "
        "@@GLOBAL.max_user_connections AS max_user_connections, "
        "(SELECT GROUP_CONCAT(PRIVILEGE_TYPE) FROM information_schema.USER_PRIVILEGES) AS privileges"
    ),
    "sessions_by_login": (
        "/* hisguard:sessions_by_login */ SELECT USER AS login, COUNT(*) AS sessions "
        "FROM information_schema.PROCESSLIST GROUP BY USER"
    ),
    # Row-lock waits (MariaDB, MySQL 5.7): every waiter with every transaction ahead of it.
    "lock_waits": (
        "/* hisguard:lock_waits */ SELECT r.trx_mysql_thread_id AS waiting_id, b.trx_mysql_thread_id AS blocking_id, "
        "TIMESTAMPDIFF(SECOND, r.trx_wait_started, NOW()) AS wait_s, l.lock_table AS table_name "
        "FROM information_schema.INNODB_LOCK_WAITS AS w "
        "JOIN information_schema.INNODB_TRX AS r ON r.trx_id = w.requesting_trx_id "
        "JOIN information_schema.INNODB_TRX AS b ON b.trx_id = w.blocking_trx_id "
        "LEFT JOIN information_schema.INNODB_LOCKS AS l ON l.lock_id = w.requested_lock_id"
    ),
    # The same on MySQL 8, where the lock views moved to performance_schema.
    "lock_waits_mysql8": (
        "/* hisguard:lock_waits_mysql8 */ SELECT r.trx_mysql_thread_id AS waiting_id, "
        "b.trx_mysql_thread_id AS blocking_id, TIMESTAMPDIFF(SECOND, r.trx_wait_started, NOW()) AS wait_s, "
        "CONCAT(l.OBJECT_SCHEMA, '.', l.OBJECT_NAME) AS table_name "
        "FROM performance_schema.data_lock_waits AS w "
        "JOIN information_schema.INNODB_TRX AS r ON r.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID "
        "JOIN information_schema.INNODB_TRX AS b ON b.trx_id = w.BLOCKING_ENGINE_TRANSACTION_ID "
        "LEFT JOIN performance_schema.data_locks AS l ON l.ENGINE_LOCK_ID = w.REQUESTING_ENGINE_LOCK_ID"
    ),
    # Table locks (LOCK TABLES, DDL behind a long transaction) are metadata-lock waits, not InnoDB's.
    "table_lock_waits": (
        "/* hisguard:table_lock_waits */ SELECT ID AS waiting_id, TIME AS wait_s, DB AS database_name, "
        "STATE AS state, LEFT(INFO, 300) AS statement FROM information_schema.PROCESSLIST "
        "WHERE STATE LIKE 'Waiting for table%'"
    ),
    # Who holds table metadata locks: MariaDB with the metadata_lock_info plugin…
    "table_lock_holders": (
        "/* hisguard:table_lock_holders */ SELECT THREAD_ID AS holder_id, LOCK_MODE AS lock_mode, "
        "TABLE_SCHEMA AS table_schema, TABLE_NAME AS table_name FROM information_schema.METADATA_LOCK_INFO "
        "WHERE LOCK_TYPE = 'Table metadata lock'"
    ),
    # …or MySQL 8's performance_schema.
    "table_lock_holders_mysql8": (
        "/* hisguard:table_lock_holders_mysql8 */ SELECT t.PROCESSLIST_ID AS holder_id, m.LOCK_TYPE AS lock_mode, "
        "m.OBJECT_SCHEMA AS table_schema, m.OBJECT_NAME AS table_name "
        "FROM performance_schema.metadata_locks AS m "
        "JOIN performance_schema.threads AS t ON t.THREAD_ID = m.OWNER_THREAD_ID "
        "WHERE m.OBJECT_TYPE = 'TABLE' AND m.LOCK_STATUS = 'GRANTED'"
    ),
    "sessions": (
        f"/* hisguard:sessions */ SELECT {_TRX_SESSION} FROM information_schema.PROCESSLIST AS p "
        "LEFT JOIN information_schema.INNODB_TRX AS t ON t.trx_mysql_thread_id = p.ID WHERE p.ID IN ({ids})"
    ),
    "long_transactions": (
        f"/* hisguard:long_transactions */ SELECT {_TRX_SESSION} FROM information_schema.INNODB_TRX AS t "
        "JOIN information_schema.PROCESSLIST AS p ON p.ID = t.trx_mysql_thread_id "
        "WHERE t.trx_started < NOW() - INTERVAL %s SECOND"
    ),
    "databases": (
        "/* hisguard:databases */ SELECT SCHEMA_NAME AS name, DEFAULT_COLLATION_NAME AS collation "
        "FROM information_schema.SCHEMATA"
    ),
    # Views' columns too: the probe keeps the base tables that row_counts lists (joining TABLES here costs
    # MariaDB ~6x the time on 500 tables).
    "columns": (
        "/* hisguard:columns */ SELECT TABLE_SCHEMA AS schema_name, TABLE_NAME AS table_name, "
        "COLUMN_NAME AS column_name, COLUMN_TYPE AS type_name, IS_NULLABLE AS is_nullable "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
    ),
    # CREATE_TIME changes when a table is dropped and re-created. TABLE_ROWS moves with every insert and
    # delete in memory (and falls back to the stored statistics on a restart).
    "row_counts": (
        "/* hisguard:row_counts */ SELECT TABLE_SCHEMA AS schema_name, TABLE_NAME AS table_name, "
        "TABLE_ROWS AS row_count, CREATE_TIME AS create_time "
        "FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'"
    ),
    "exact_count": "/* hisguard:exact_count */ SELECT COUNT(*) AS row_count FROM {table}",
    # A table missing from information_schema: gone (1146) or hidden from this login (1142)?
    "table_exists": "/* hisguard:table_exists */ SELECT 1 FROM {table} LIMIT 0",
}

# Errors that mean the server is refusing logins because something is used up.
_FULL = {1040: "server", 1203: "login", 1226: "login", 1129: "host"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _table(table: str) -> str:
    schema, _, name = table.partition(".")
    return f"{quote(schema)}.{quote(name)}"


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _mysql8(version: str) -> bool:
    m = re.match(r"(\d+)\.", version)
    return "mariadb" not in version.lower() and m is not None and int(m.group(1)) >= 8


def _trx_session(row: dict[str, Any]) -> Session:
    host = _text(row["client_host"]) if row["client_host"] else None
    command = _text(row["command"]) if row["command"] else None
    idle = command == "Sleep" and row["xact_s"] is not None
    return Session(
        id=str(row["id"]),
        login=_text(row["login"]) if row["login"] else None,
        host=host.rsplit(":", 1)[0] if host else None,
        program=None,  # not reported without performance_schema's connection attributes
        database=_text(row["database_name"]) if row["database_name"] else None,
        state="idle in transaction" if idle else (_text(row["state"]) if row["state"] else command),
        xact_s=_num(row["xact_s"]),
        idle_s=_num(row["time_s"]) if idle else None,
        statement=_text(row["statement"]) if row["statement"] else None,
        locks_held=None if row["tables_locked"] is None else int(row["tables_locked"]),
        writes=None if row["rows_modified"] is None else int(row["rows_modified"]) > 0,
        waiting=_text(row["trx_state"] or "") == "LOCK WAIT" or "Waiting for" in _text(row["state"] or ""),
    )


class MysqlDialect:
    name = "mysql"
    sqlglot = "mysql"
    default_port = 3306
    default_user = "hisguard"
    maintenance_db = None
    per_database = False
    locks_per_database = False
    lock_privilege = "PROCESS"
    reconnect_after_timeout = False
    statements = STATEMENTS

    def default_schema(self, database: str) -> str:
        return database

    def display(self, database: str, table: str) -> str:
        return table  # already database.table

    def connect(
        self, host: str, port: int, user: str, password: str | None, database: str, timeout: float, statement: float
    ) -> Any:
        """A session: `timeout` bounds the login, `statement` each statement (seconds)."""
        import pymysql

        # Socket reads outlast the server's own statement limit, so that a slow statement is cancelled by
        # the server (the session stays usable) rather than cut off by the socket.
        bound = max(1, round(statement + 2))
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
        if code in _FULL:
            return DbError("full", text, _FULL[code])
        if code in (1045, 1698):
            return DbError("login", f"login failed: {text}")
        if code in (1044, 1142, 1143, 1227):
            return DbError("denied", text)
        if code in (1146, 1049, 1109):  # 1109: an information_schema table this server lacks (a plugin's)
            return DbError("missing", text)
        if code in (1969, 3024, 1205) or "timed out" in text.lower():
            return DbError("timeout", text)
        if code in (2003, 2002, 2005, 2006, 2013, 2055):
            return DbError("unreachable", text)
        return DbError("query", text)

    def broken(self, q: Query) -> bool:
        return not getattr(q.conn, "open", True)

    def setup(self, q: Query, statement_timeout: float) -> None:
        # The server sent its version in its greeting; ask only a connection that does not keep it.
        known = getattr(q.conn, "get_server_info", None)
        version = str(known()) if known else str(q.rows(STATEMENTS["version"])[0]["version"])
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
        q.rows(STATEMENTS["use"].format(db=quote(database)))

    def server(self, q: Query) -> ServerFacts:
        status = {_text(r["Variable_name"]): _text(r["Value"]) for r in q.rows(STATEMENTS["status"])}
        q.status = status  # type: ignore[attr-defined]
        uptime = float(status["Uptime"]) if "Uptime" in status else None
        facts = ServerFacts(version=getattr(q, "version", ""), uptime_s=uptime)
        limits = q.rows(STATEMENTS["limits"])[0]
        q.limits = limits  # type: ignore[attr-defined]
        privileges = {p.strip().upper() for p in _text(limits["privileges"] or "").split(",")}
        facts.sees_all_sessions = bool(privileges & {"PROCESS", "SUPER"})
        facts.sees_all_definitions = False  # information_schema lists only what this login may use
        if not facts.sees_all_sessions:
            facts.blind_spots.append(
                "锁等待与阻塞会话、其他登录的会话和事务：需 PROCESS 权限 / lock waits and blockers, other "
                "logins' sessions and transactions: GRANT PROCESS ON *.*"
            )
        return facts

    def databases(self, q: Query) -> dict[str, DbInfo]:
        return {
            _text(row["name"]): DbInfo(name=_text(row["name"]), collation=row["collation"])
            for row in q.rows(STATEMENTS["databases"])
        }

    def database_gone(self, q: Query, database: str) -> bool | None:
        """A database missing from SCHEMATA: dropped (1049), or only hidden from this login (1044)?"""
        return self._gone(lambda: self.use(q, database))

    def _gone(self, attempt: Any) -> bool | None:
        """Run a statement on something the catalogue does not list: True gone, None hidden, False there."""
        try:
            attempt()
        except Exception as exc:
            err = self.error(exc)
            if err.kind == "missing":
                return True
            if err.kind == "denied":
                return None
            raise err from None
        return False

    def backups(self, q: Query) -> dict[str, BackupAges] | None:
        return None  # mysqldump / mariabackup keep no history in the server

    def corruption(self, q: Query, read_error_log: bool) -> dict[str, Corruption]:
        return {}

    def activity(
        self, q: Query, databases: list[str], logins: list[str], long_s: float, facts: ServerFacts
    ) -> Activity:
        act = Activity()
        status: dict[str, str] = getattr(q, "status", {})
        limits = getattr(q, "limits", None) or q.rows(STATEMENTS["limits"])[0]
        threads = int(status.get("Threads_connected", "0"))
        act.connections.append(ConnectionUse("server", "", threads, int(limits["max_connections"])))
        per_login = int(limits["max_user_connections"] or 0) or None
        for key in ("Connection_errors_max_connections", "Aborted_connects"):
            if key in status:
                act.refused[key] = int(status[key])
        if not facts.sees_all_sessions:
            waits = status.get("Innodb_row_lock_current_waits")
            act.waits_without_detail = None if waits is None else int(waits)
            act.connections += [ConnectionUse("login", name, None, per_login) for name in logins]
            return act
        by_login: dict[str, int] = {}
        for row in q.rows(STATEMENTS["sessions_by_login"]) if logins else []:
            login = _text(row["login"] or "")
            by_login[login] = by_login.get(login, 0) + int(row["sessions"])
        act.connections += [ConnectionUse("login", name, by_login.get(name, 0), per_login) for name in logins]
        # trx_started has whole seconds: fetch a second early, the evaluation applies the threshold.
        for row in q.rows(STATEMENTS["long_transactions"], (max(0, int(long_s) - 1),)):
            act.long_transactions.append(_trx_session(row))
        return act

    def lock_waits(self, q: Query, database: str | None) -> list[LockWait]:
        version = getattr(q, "version", "")
        key = "lock_waits_mysql8" if _mysql8(version) else "lock_waits"
        pairs: dict[str, LockWait] = {}
        for row in q.rows(STATEMENTS[key]):
            waiter = str(row["waiting_id"])
            table = _text(row["table_name"]).replace("`", "") if row["table_name"] else None
            w = pairs.setdefault(waiter, LockWait(waiter, [], _num(row["wait_s"]), table, "row"))
            w.blockers.append(str(row["blocking_id"]))
        waits = list(pairs.values())
        waits += self._table_lock_waits(q, version)
        return waits

    def _table_lock_waits(self, q: Query, version: str) -> list[LockWait]:
        rows = q.rows(STATEMENTS["table_lock_waits"])
        if not rows:
            return []
        holders: list[dict[str, Any]] | None
        try:
            holders = q.rows(STATEMENTS["table_lock_holders_mysql8" if _mysql8(version) else "table_lock_holders"])
        except Exception as exc:
            if self.error(exc).kind not in ("missing", "denied"):
                raise
            holders = None  # no metadata lock view on this server (the plugin is not installed)
        out = []
        for row in rows:
            waiter, db = str(row["waiting_id"]), _text(row["database_name"] or "")
            named = _named_tables(_text(row["statement"] or ""))
            blockers: list[str] = []
            table: str | None = None
            if holders is not None:
                in_db = [h for h in holders if _text(h["table_schema"]) == db and str(h["holder_id"]) != waiter]
                on_named = [h for h in in_db if _text(h["table_name"]).lower() in named]
                chosen = on_named or in_db
                blockers = sorted({str(h["holder_id"]) for h in chosen} - {waiter})
                if chosen:
                    table = f"{_text(chosen[0]['table_schema'])}.{_text(chosen[0]['table_name'])}"
            elif named:
                table = f"{db}.{sorted(named)[0]}" if db else None
            # A holder that is itself waiting is a link of the chain; the head is found by the caller.
            out.append(LockWait(waiter, [b for b in blockers if b != waiter], _num(row["wait_s"]), table, "table"))
        if holders is None:
            # No view of lock owners: the oldest open transaction in the same database that is not itself
            # waiting is the probable holder (a long transaction in front of DDL); otherwise it is unknown.
            open_trx = [_trx_session(r) for r in q.rows(STATEMENTS["long_transactions"], (0,))]
            for w, row in zip(out, rows, strict=True):
                db = _text(row["database_name"] or "")
                candidates = [s for s in open_trx if s.database == db and not s.waiting and s.id != w.waiter]
                candidates.sort(key=lambda s: -(s.xact_s or 0))
                w.blockers = [f"~{candidates[0].id}"] if candidates else ["?"]
        return out

    def sessions(self, q: Query, ids: list[str], database: str | None) -> dict[str, Session]:
        numbers = id_list(ids)
        if not numbers:
            return {}
        return {str(row["id"]): _trx_session(row) for row in q.rows(STATEMENTS["sessions"].format(ids=numbers))}

    def columns(self, q: Query, database: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for row in q.rows(STATEMENTS["columns"], (database,)):
            kind = _text(row["type_name"]) + (" null" if row["is_nullable"] == "YES" else " not null")
            out.setdefault(f"{row['schema_name']}.{row['table_name']}", {})[row["column_name"]] = kind
        return out

    def table_stats(self, q: Query, database: str) -> dict[str, TableStats]:
        out = {}
        for row in q.rows(STATEMENTS["row_counts"], (database,)):
            estimate = None if row["row_count"] is None else int(row["row_count"])
            created = row["create_time"]
            out[f"{row['schema_name']}.{row['table_name']}"] = TableStats(
                rows=estimate, identity=None if created is None else str(created), emptied=estimate == 0
            )
        return out

    def exact_count(self, q: Query, database: str, table: str) -> int:
        return int(q.rows(STATEMENTS["exact_count"].format(table=_table(table)))[0]["row_count"])

    def table_gone(self, q: Query, database: str, table: str) -> bool | None:
        return self._gone(lambda: q.rows(STATEMENTS["table_exists"].format(table=_table(table))))


def _named_tables(statement: str) -> set[str]:
    """Table names a waiting statement mentions (lower case), to tell which metadata lock it waits for."""
    words = re.findall(
        r"(?:FROM|JOIN|UPDATE|INTO|TABLE|TABLES)\s+`?([\w$]+)`?(?:\s*\.\s*`?([\w$]+)`?)?", statement, re.I
    )
    return {(b or a).lower() for a, b in words}


DIALECT = MysqlDialect()
