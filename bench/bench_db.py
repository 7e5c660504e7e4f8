"""One full database probe round on PostgreSQL: 500 tables in 10 subsystems (and 50 for comparison).

Prints the round time, the statements the probe sends per round (by tag), and the scans of user
tables during the rounds, to show that the probe's cost is a fixed set of catalogue queries, not a
query per table. pg_stat_statements would show the same, but it needs shared_preload_libraries and
a server restart; when it is not loaded the probe's own statement count is used (and said so).

    .venv/bin/python bench/bench_db.py [--rounds 10] [--tables 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from hisguard.checks.base import Impact, ProbeContext
from hisguard.checks.database import Config, probe
from hisguard.checks.database.dialects import base as dialect_base
from hisguard.checks.database.rebaseline import record

SUBSYSTEMS = [
    "门诊挂号",
    "门诊收费",
    "急诊收费",
    "门诊药房",
    "住院药房",
    "住院登记",
    "护士站",
    "手术室",
    "医技检查",
    "财务",
]


def build(admin: Any, db: str, tables: int) -> None:
    per = tables // len(SUBSYSTEMS)
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=db, autocommit=False) as conn:
        for i in range(tables):
            conn.execute(
                f'CREATE TABLE "t{i:04d}" (id INT PRIMARY KEY, 患者 VARCHAR(40), 项目 VARCHAR(80), 金额 NUMERIC(10,2))'
            )
            rows = 200 + i % per
            conn.execute(
                f"INSERT INTO \"t{i:04d}\" SELECT g, '张三', '挂号费', g % 100 FROM generate_series(1, {rows}) g"
            )
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")


def config(db: str, tables: int) -> Config:
    per = tables // len(SUBSYSTEMS)
    subsystems = [
        {
            "name": name,
            "tables": [f"t{i:04d}" for i in range(k * per, (k + 1) * per)],
            "departments": [name],
            "min_rows": 10,
        }
        for k, name in enumerate(SUBSYSTEMS)
    ]
    anomalies = [
        {"name": "门诊负数收费", "subsystem": "门诊收费", "priority": "patient_fee",
         "query": f'SELECT COUNT(*) FROM "t{per:04d}" WHERE 金额 < 0'},
        {"name": "账目负数", "subsystem": "财务", "priority": "accounting",
         "query": f'SELECT COUNT(*) FROM "t{9 * per:04d}" WHERE 金额 < 0'},
    ]  # fmt: skip
    return Config.model_validate(
        {
            "dialect": "postgresql",
            "user": "postgres",
            "databases": [db],
            "timeout": 20,
            "subsystems": subsystems,
            "anomalies": anomalies,
            "restart_window": 0,
        }
    )


def user_table_scans(db: str) -> int:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=db) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(seq_scan + COALESCE(idx_scan, 0)), 0) FROM pg_stat_user_tables"
        ).fetchone()
        return int(row[0])


def run(db: str, tables: int, rounds: int, state: Path) -> dict[str, Any]:
    cfg = config(db, tables)
    record(cfg, state, "bench")
    ctx = ProbeContext(host="bench", state_dir=state, impact=Impact(hospital_critical=True))
    tags: Counter[str] = Counter()
    original = dialect_base.Query.rows

    def counting(self: Any, sql: str, params: Any = None) -> Any:
        m = dialect_base.TAG.search(sql)
        tags[m.group(1) if m else "anomaly rule"] += 1
        return original(self, sql, params)

    dialect_base.Query.rows = counting  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(probe(cfg, ctx))  # warm: imports, first connection
        tags.clear()
        time.sleep(1.0)
        scans_before = user_table_scans(db)
        times, observations, statements = [], 0, 0
        for _ in range(rounds):
            started = time.perf_counter()
            obs = loop.run_until_complete(probe(cfg, ctx))
            times.append(time.perf_counter() - started)
            assert not [o for o in obs if o.ok is False], [o for o in obs if o.ok is False][:3]
            observations = len(obs)
            statements = next(o for o in obs if o.check == "db.connect").detail["statements"]
        time.sleep(1.0)  # let the probe's sessions report their statistics
        scans = user_table_scans(db) - scans_before
    finally:
        dialect_base.Query.rows = original  # type: ignore[method-assign]
        loop.close()
    return {
        "tables": tables,
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "max_ms": max(times) * 1000,
        "statements": statements,
        "by_tag": {k: v // rounds for k, v in sorted(tags.items())},
        "observations": observations,
        "user_table_scans_per_round": scans / rounds,
        "anomaly_rules": len(cfg.anomalies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tables", type=int, default=500)
    args = parser.parse_args()
    admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
    preload = admin.execute("SHOW shared_preload_libraries").fetchone()[0]
    sizes = [args.tables // 10, args.tables]
    names = [f"hg_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}_{n}" for n in sizes]
    results = []
    try:
        for name, n in zip(names, sizes, strict=True):
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8')
            t = time.perf_counter()
            build(admin, name, n)
            print(f"built {n} tables in 10 subsystems in {time.perf_counter() - t:.1f}s", file=sys.stderr)
            with tempfile.TemporaryDirectory() as state:
                results.append(run(name, n, args.rounds, Path(state)))
    finally:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    print(f"database probe round, PostgreSQL 127.0.0.1, {args.rounds} rounds each (connect + read + evaluate):")
    for r in results:
        print(
            f"  {r['tables']:>4} tables: median {r['median_ms']:.0f} ms "
            f"(min {r['min_ms']:.0f}, max {r['max_ms']:.0f}), "
            f"{r['statements']} statements/round, {r['observations']} observations, "
            f"user-table scans/round {r['user_table_scans_per_round']:.1f} (= {r['anomaly_rules']} anomaly rules)"
        )
        print(f"        statements by tag: {r['by_tag']}")
    if "pg_stat_statements" in preload:
        print("pg_stat_statements is loaded: see it for the same statements")
    else:
        print(
            "pg_stat_statements is not in shared_preload_libraries (loading it needs a server restart):"
            " statements counted by the probe itself"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
