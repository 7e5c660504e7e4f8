"""Dialect details that the servers here cannot show: MySQL 8 / 5.7 session set-up."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hisguard.checks.database.dialects.base import Query
from hisguard.checks.database.dialects.mysql import DIALECT
from tests.test_db_live import driver


class Server:
    def __init__(self, version: str, refuse: dict[str, int]) -> None:
        self.version, self.refuse, self.sent = version, refuse, []

    def cursor(self) -> Any:
        server = self

        class Cursor:
            description: Any = None

            def execute(self, sql: str, params: Any = None) -> None:
                pymysql = driver("pymysql")
                server.sent.append(sql)
                for word, code in server.refuse.items():
                    if word in sql:
                        raise pymysql.err.InternalError(code, f"Unknown system variable '{word}'")
                self.description = [("version",)] if "VERSION()" in sql else None

            def fetchall(self) -> list[tuple[str]]:
                return [(server.version,)]

            def close(self) -> None:
                pass

        return Cursor()


def test_mysql8_session_is_bounded_read_only_and_reads_fresh_statistics() -> None:
    server = Server("8.0.36", {})
    DIALECT.setup(Query(server, time.monotonic() + 5, [0]), 2.5)
    assert any("max_execution_time = 2500" in s for s in server.sent)
    assert any("information_schema_stats_expiry = 0" in s for s in server.sent)
    assert any("TRANSACTION READ ONLY" in s for s in server.sent)


def test_mysql57_without_stats_expiry_still_works_but_other_errors_do_not_pass() -> None:
    server = Server("5.7.44-log", {"information_schema_stats_expiry": 1193})
    DIALECT.setup(Query(server, time.monotonic() + 5, [0]), 5)
    assert any("TRANSACTION READ ONLY" in s for s in server.sent)
    broken = Server("5.7.44-log", {"information_schema_stats_expiry": 1227})  # access denied: not ignored
    with pytest.raises(Exception, match="information_schema_stats_expiry"):
        DIALECT.setup(Query(broken, time.monotonic() + 5, [0]), 5)


def test_mariadb_uses_max_statement_time_in_seconds() -> None:
    server = Server("10.11.19-MariaDB-0+deb12u1", {})
    DIALECT.setup(Query(server, time.monotonic() + 5, [0]), 2.5)
    assert any("max_statement_time = 2.5" in s for s in server.sent)
    assert not any("max_execution_time" in s for s in server.sent)
