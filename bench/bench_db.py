"""One full database probe round on PostgreSQL and on MariaDB: 500 tables in 10 subsystems.

For each server (the machine's own, on 127.0.0.1; a database of the benchmark's own is created and
dropped): the round time (connect + read + evaluate, warm), the statements the probe sends a round
(by tag), and the exact COUNT(*)s among them — none while the statistics vouch for every table,
one when a single table is suspected (60 % of the outpatient fee table deleted). The tables hold
200-250 rows each, the fee table 1,000,000 (--fee-rows), as fee detail tables dwarf the rest of a
HIS. Side by side, like for like on the same tables: the naive check a probe without statistics
would make, an exact COUNT(*) of every watched table, timed the same way.

    .venv/bin/python bench/bench_db.py [--rounds 10] [--tables 500] [--fee-rows 1000000] [--only postgresql|mariadb]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hisguard.checks.base import Impact, ProbeContext
from hisguard.checks.database import Config, probe
from hisguard.checks.database.dialects import base as dialect_base
from hisguard.checks.database.rebaseline import record

SUBSYSTEMS = ["门诊挂号", "门诊收费", "急诊收费", "门诊药房", "住院药房", "住院登记", "护士站", "手术室", "医技检查"]
SUBSYSTEMS.append("财务")


class Server:
    """One server kind: how to reach it as an administrator, and how it spells things."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dialect = "postgresql" if kind == "postgresql" else "mysql"
        self.port = 5432 if kind == "postgresql" else 3306
        self.user = "postgres" if kind == "postgresql" else "root"

    def connect(self, database: str | None = None) -> Any:
        if self.kind == "postgresql":
            import psycopg

            return psycopg.connect(
                host="127.0.0.1", port=self.port, user=self.user, dbname=database or "postgres", autocommit=True
            )
        import pymysql

        return pymysql.connect(
            host="127.0.0.1", port=self.port, user=self.user, password="", database=database, autocommit=True
        )

    def run(self, conn: Any, sql: str) -> list[Any]:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def q(self, name: str) -> str:
        return f'"{name}"' if self.kind == "postgresql" else f"`{name}`"

    def build(self, db: str, tables: int, fee_rows: int) -> None:
        per = tables // len(SUBSYSTEMS)
        admin = self.connect()
        self.run(admin, f"CREATE DATABASE {self.q(db)}")
        admin.close()
        conn = self.connect(db)
        for i in range(tables):
            t = self.q(f"t{i:04d}")
            columns = "id INT PRIMARY KEY, 患者 VARCHAR(40), 项目 VARCHAR(80), 金额 NUMERIC(10,2)"
            self.run(conn, f"CREATE TABLE {t} ({columns})")
            rows = fee_rows if i == per else 200 + i % per  # t0050: the outpatient fee detail table
            if self.kind == "postgresql":
                self.run(conn, f"INSERT INTO {t} SELECT g, '张三', '挂号费', g % 100 FROM generate_series(1, {rows}) g")
            else:
                self.run(conn, f"INSERT INTO {t} SELECT seq, '张三', '挂号费', seq % 100 FROM seq_1_to_{rows}")
        if self.kind == "postgresql":
            self.run(conn, "ANALYZE")
        else:
            for i in range(tables):
                self.run(conn, f"ANALYZE TABLE {self.q(f't{i:04d}')}")
        conn.close()

    def drop(self, db: str) -> None:
        admin = self.connect()
        force = " WITH (FORCE)" if self.kind == "postgresql" else ""
        self.run(admin, f"DROP DATABASE IF EXISTS {self.q(db)}{force}")
        admin.close()

    def version(self) -> str:
        conn = self.connect()
        try:
            return str(self.run(conn, "SELECT version()")[0][0]).split(" on ")[0].split(",")[0]
        finally:
            conn.close()


def config(server: Server, db: str, tables: int) -> Config:
    per = tables // len(SUBSYSTEMS)
    subsystems = [
        {"name": name, "tables": [f"t{i:04d}" for i in range(k * per, (k + 1) * per)], "departments": [name],
         "min_rows": 10}
        for k, name in enumerate(SUBSYSTEMS)
    ]  # fmt: skip
    # The rules read small tables: a rule's own cost is its query's (on a fee table it wants an index).
    anomalies = [
        {"name": "门诊负数收费", "subsystem": "门诊收费", "priority": "patient_fee",
         "query": f"SELECT COUNT(*) FROM {server.q(f't{per + 1:04d}')} WHERE 金额 < 0"},
        {"name": "账目负数", "subsystem": "财务", "priority": "accounting",
         "query": f"SELECT COUNT(*) FROM {server.q(f't{9 * per:04d}')} WHERE 金额 < 0"},
    ]  # fmt: skip
    return Config.model_validate(
        {
            "dialect": server.dialect,
            "port": server.port,
            "user": server.user,
            "databases": [db],
            "timeout": 20,
            "subsystems": subsystems,
            "anomalies": anomalies,
            "restart_window": 0,
            "backups": {"enabled": False},
        }
    )


def timed_rounds(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        loop.run_until_complete(fn())
        times.append((time.perf_counter() - started) * 1000)
    return times


def run(server: Server, db: str, tables: int, rounds: int, state: Path) -> dict[str, Any]:
    cfg = config(server, db, tables)
    record(cfg, state, "bench")
    ctx = ProbeContext(host="bench", state_dir=state, impact=Impact(hospital_critical=True))
    tags: Counter[str] = Counter()
    original = dialect_base.Query.rows

    def counting(self: Any, sql: str, params: Any = None) -> Any:
        m = dialect_base.TAG.search(sql)
        tags[m.group(1) if m else "(untagged)"] += 1
        return original(self, sql, params)

    async def one_round() -> list[Any]:
        obs = await probe(cfg, ctx)
        failing = [o for o in obs if o.ok is False]
        assert failing == [] or all(o.check == "db.rows" for o in failing), failing[:3]
        return obs

    dialect_base.Query.rows = counting  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(one_round())  # warm: imports, first connection, references recorded
        tags.clear()
        times = timed_rounds(loop, one_round, rounds)
        quiet = {k: v // rounds for k, v in sorted(tags.items())}
        # One table suspected: 60 % of it deleted. Exactly one exact count, of that table.
        admin = server.connect(db)
        victim = server.q(f"t{tables // len(SUBSYSTEMS):04d}")
        server.run(admin, f"DELETE FROM {victim} WHERE MOD(id, 5) IN (0, 1, 2)")
        if server.kind == "postgresql":
            time.sleep(1.5)  # the deleting session reports its counters when idle
        else:
            server.run(admin, f"ANALYZE TABLE {victim}")
        admin.close()
        tags.clear()
        started = time.perf_counter()
        obs = loop.run_until_complete(one_round())
        suspect_ms = (time.perf_counter() - started) * 1000
        suspect_counts = tags.get("exact_count", 0)
        lost = [o for o in obs if o.check == "db.rows" and o.ok is False]
        # The naive check, like for like: an exact COUNT(*) of every watched table, on one warm session.
        conn = server.connect(db)
        names = [server.q(f"t{i:04d}") for i in range((tables // len(SUBSYSTEMS)) * len(SUBSYSTEMS))]

        async def naive() -> None:
            for n in names:
                server.run(conn, f"SELECT COUNT(*) FROM {n}")

        naive_times = timed_rounds(loop, naive, max(3, rounds // 3))
        conn.close()
    finally:
        dialect_base.Query.rows = original  # type: ignore[method-assign]
        loop.close()
    return {
        "server": server.kind,
        "tables": tables,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "statements": sum(quiet.values()),
        "by_tag": quiet,
        "exact_counts_quiet": quiet.get("exact_count", 0),
        "suspect_round_ms": suspect_ms,
        "suspect_exact_counts": suspect_counts,
        "suspect_lost": [t["table"] for o in lost for t in o.detail["tables_lost"]],
        "naive_median_ms": statistics.median(naive_times),
        "naive_statements": len(names),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tables", type=int, default=500)
    parser.add_argument("--fee-rows", type=int, default=1_000_000, help="rows of the outpatient fee table")
    parser.add_argument("--only", choices=["postgresql", "mariadb"])
    args = parser.parse_args()
    results = []
    for kind in ("postgresql", "mariadb"):
        if args.only and kind != args.only:
            continue
        server = Server(kind)
        try:
            version = server.version()
        except Exception as exc:
            print(f"{kind}: not reachable on 127.0.0.1:{server.port} ({exc}); skipped", file=sys.stderr)
            continue
        db = f"hg_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        try:
            started = time.perf_counter()
            server.build(db, args.tables, args.fee_rows)
            print(f"{kind}: built {args.tables} tables in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            with tempfile.TemporaryDirectory() as state:
                r = run(server, db, args.tables, args.rounds, Path(state))
                r["version"] = version
                results.append(r)
        finally:
            server.drop(db)
    print(f"database probe round, {args.rounds} rounds each, warm (connect + read + evaluate), 127.0.0.1:")
    for r in results:
        print(
            f"  {r['version']}: {r['tables']} tables in 10 subsystems ({args.fee_rows:,} rows in the fee table): "
            f"median {r['median_ms']:.0f} ms "
            f"(min {r['min_ms']:.0f}, max {r['max_ms']:.0f}), {r['statements']} statements a round, "
            f"{r['exact_counts_quiet']} exact counts"
        )
        print(f"        statements by tag: {r['by_tag']}")
        print(
            f"        one table 60 % deleted: {r['suspect_round_ms']:.0f} ms, {r['suspect_exact_counts']} exact count "
            f"(lost: {', '.join(r['suspect_lost']) or 'none'})"
        )
        print(
            f"        naive check, COUNT(*) of all {r['naive_statements']} watched tables: "
            f"median {r['naive_median_ms']:.0f} ms"
        )
        row = {
            "metric": f"database probe round, {r['tables']} tables ({r['server']})",
            "hisguard": f"median {r['median_ms']:.0f} ms, {r['statements']} statements, "
            f"{r['exact_counts_quiet']} exact counts (1 when one table is suspected)",
            "peer": f"COUNT(*) of every table: {r['naive_median_ms']:.0f} ms, {r['naive_statements']} statements",
        }
        print("RESULT " + json.dumps(row, ensure_ascii=False))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
