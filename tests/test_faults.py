"""Faults: nothing is lost and nothing is claimed stored that is not.

- the server's SQLite is locked by another process → ingest answers 503, then 200 once it is free;
- kill -9 of the server under load → every report that got a 2xx is there after the restart;
- kill -9 of the agent 20 times while it spools → no incident lost, the spool opens cleanly;
- server down while 200 incidents are detected → exactly 200 stored once it is back;
- the agent's disk full (a small tmpfs) → it goes on (reports held in memory and still delivered),
  says so loudly, and writes everything to disk once the disk accepts it again.
(A spool found corrupt at start is set aside: tests/test_outbox.py.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from hisguard.agent.store import StateStore
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Incident, Receipt
from tests.support.peers import need_binary, need_root
from tests.support.procs import AgentProc, ServerProc, wait_until
from tests.support.reports import incident


def post(url: str, token: str, items: list[dict], agent: str = "ws-01") -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/reports",
        json={"agent": agent, "version": "t", "items": items},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


# -- server side ------------------------------------------------------------------------------
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def test_locked_sqlite_answers_503_and_stores_nothing_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "srv" / "hisguard.sqlite3"
    srv = ServerProc(tmp_path / "srv", db_url=f"sqlite:///{path}?timeout=1").start()
    try:
        token = srv.agent_token("ws-01", "renmin")
        assert post(srv.url, token, [incident("k0")]).status_code == 200
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            late = [incident("k1"), incident("k2")]
            r = post(srv.url, token, late)
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0
        finally:
            assert locker.stdin is not None
            locker.stdin.write("\n")
            locker.stdin.flush()
            locker.wait(10)
        db = Database(f"sqlite:///{path}")
        with db.session() as s:
            assert not set(s.scalars(select(Receipt.id))) & {i["id"] for i in late}  # nothing half-stored
        r = post(srv.url, token, late)  # the agent's retry
        assert r.status_code == 200 and r.json()["duplicates"] == 0
        with db.session() as s:
            assert sorted(s.scalars(select(Incident.key))) == ["k0", "k1", "k2"]
        db.dispose()
    finally:
        srv.stop()


def test_kill_9_server_under_load_keeps_every_acknowledged_report(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "srv").start()
    tokens = [srv.agent_token(f"ws-{i}", "renmin") for i in range(4)]
    acked: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def load(i: int) -> None:
        n = 0
        while not stop.is_set():
            items = [incident(f"ws-{i}/k{n + j}", host=f"ws-{i}") for j in range(20)]
            n += 20
            try:
                r = post(srv.url, tokens[i], items, agent=f"ws-{i}")
            except httpx.HTTPError:
                continue  # killed mid-request: not acknowledged, the agent would send it again
            if r.status_code == 200:
                with lock:
                    acked.update(r.json()["stored"])

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 400, 30, what="load acknowledged")
        time.sleep(random.uniform(0.1, 0.4))
        srv.stop(signal.SIGKILL)
    finally:
        stop.set()
        for t in threads:
            t.join()
    srv.start()  # same data directory and database
    try:
        db = Database(f"sqlite:///{srv.data_dir / 'hisguard.sqlite3'}")
        with db.session() as s:
            stored = set(s.scalars(select(Receipt.id)))
            n_incidents = len(s.scalars(select(Incident.id)).all())
        db.dispose()
        assert acked <= stored, f"{len(acked - stored)} acknowledged reports missing"
        assert n_incidents == len(stored)  # one incident per stored event (every key distinct)
    finally:
        srv.stop()


# -- agent side -------------------------------------------------------------------------------
def host_agent_config(server: ServerProc, token: str, processes: list[str]) -> str:
    names = ", ".join(f'"{p}"' for p in processes)
    return f"""
[agent]
name = "his-app-01"
state_dir = "state"
heartbeat_interval = 1

[server]
url = "{server.url}"
token = "{token}"
timeout = 2
retry_max = 1

[[probe.host]]
name = "host"
interval = 0.3
timeout = 0.3
fail_after = 1
fail_window = 1
clear_after = 1
cpu_percent_max = 100
memory_percent_max = 100
disk_percent_max = 100
mounts = ["/"]
processes = [{names}]
"""


PROC_TITLE = re.compile(r"required process (hgmissing-\d+) is not running")


def spooled(state: Path) -> set[str]:
    """Process names of incident events in the agent's outbox (read as another process would)."""
    if not state.exists():
        return set()
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT body FROM outbox WHERE kind = 'incident'").fetchall()
    except sqlite3.OperationalError:  # the agent is still creating it
        return set()
    finally:
        db.close()
    return {m.group(1) for (body,) in rows for m in [PROC_TITLE.search(body)] if m}


def stored_names(srv: ServerProc) -> list[str]:
    return [m.group(1) for i in srv.incidents() for m in [PROC_TITLE.search(i["title_en"])] if m]


def test_server_down_while_200_incidents_are_detected_stores_exactly_200(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "srv")  # its port is chosen; it does not run yet
    token = srv.agent_token("his-app-01", "renmin")
    names = [f"hgmissing-{i:03d}" for i in range(200)]
    agent = AgentProc(tmp_path / "agent", host_agent_config(srv, token, names)).start()
    try:
        state = agent.workdir / "state" / "agent.sqlite3"
        wait_until(lambda: len(spooled(state)) == 200, 30, interval=0.3, what="200 incidents spooled")
        time.sleep(1.0)  # more rounds while the server is down: nothing new to spool
        assert len(spooled(state)) == 200
        srv.start()
        wait_until(lambda: len(stored_names(srv)) >= 200, 30, interval=0.3, what="200 incidents stored")
        time.sleep(1.0)
        got = stored_names(srv)
        assert len(got) == 200 and set(got) == set(names)
        assert "delivery failed" in agent.output()  # it did try while the server was down
    finally:
        agent.stop()
        srv.stop()


def test_kill_9_agent_20_times_while_spooling_loses_no_incident(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "srv")  # down while the agent is killed: everything stays spooled
    token = srv.agent_token("his-app-01", "renmin")
    workdir = tmp_path / "agent"
    state = workdir / "state" / "agent.sqlite3"
    rng = random.Random(9)
    for life in range(20):
        names = [f"hgmissing-{life * 15 + i:03d}" for i in range(60)]  # each life: new faults, old ones clear
        agent = AgentProc(workdir, host_agent_config(srv, token, names)).start()
        start = len(re.findall("incident open", agent.output()))
        wait_until(lambda: len(re.findall("incident open", agent.output())) > start, 20, what="spooling")  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.15))
        agent.stop(signal.SIGKILL)
        check = sqlite3.connect(state)
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
    assert not list(state.parent.glob("*.corrupt-*"))  # opened cleanly every time
    logged = set(PROC_TITLE.findall("\n".join(ln for ln in agent.output().splitlines() if "incident open" in ln)))
    assert len(logged) > 100
    assert logged <= spooled(state)  # every incident the agent announced is in its spool
    srv.start()
    agent = AgentProc(workdir, host_agent_config(srv, token, [])).start()
    try:
        wait_until(lambda: logged <= set(stored_names(srv)), 30, interval=0.5, what="every incident stored")
        assert len(stored_names(srv)) == len(set(stored_names(srv)))
    finally:
        agent.stop()
        srv.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    need_root()
    need_binary("mount")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    with path.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_disk_full_keeps_reports_in_memory_says_so_and_writes_them_when_space_returns(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    store = StateStore(tiny_disk / "agent.sqlite3")
    store.enqueue(incident("before"))
    filler = tiny_disk / "filler"
    fill(filler)
    caplog.set_level(logging.WARNING, "hisguard.agent.store")
    big = "x" * 4000  # each event needs new pages: the full disk refuses them
    events = [incident(f"full-{i}", evidence={"pad": big}) for i in range(40)]
    for ev in events[:20]:
        store.enqueue(ev)
    store.open_incident("full-open", "sig", [["host", "host.process", "p"]], incident("full-open", evidence={"p": big}))
    assert store.fault and "full" in store.fault
    assert any(r.levelno == logging.CRITICAL and "cannot be written" in r.message for r in caplog.records)
    assert store.backlog() == 22
    assert "full-open" in store.active()
    pending = store.peek(500)
    assert {p.body["key"] for p in pending} >= {"before", "full-open"} | {e["key"] for e in events[:20]}
    # Delivery goes on from memory: the server gets them while the disk is still full.
    srv = ServerProc(tmp_path / "srv").start()
    try:
        cfg_path = tmp_path / "agent.toml"
        token = srv.agent_token("ws-01", "renmin")
        cfg_path.write_text(f'[agent]\nname = "ws-01"\n[server]\nurl = "{srv.url}"\ntoken = "{token}"\n')
        from hisguard.agent.config import load_config
        from hisguard.agent.delivery import Sender

        sender = Sender(load_config(cfg_path), store, token)
        for ev in events[20:30]:
            store.enqueue(ev)

        async def go() -> int:
            try:
                return await sender.flush()
            finally:
                await sender.aclose()

        assert asyncio.run(go()) == 32
        assert len(srv.incidents()) == 32
    finally:
        srv.stop()
    for ev in events[30:]:
        store.enqueue(ev)
    assert store.backlog() == 10
    filler.unlink()  # space again
    store._retry_at = 0  # the next write tries the disk at once (normally within 5 s)
    store.enqueue(incident("after"))
    assert store.fault is None
    assert "writable again" in caplog.text
    store.close()
    reopened = StateStore(tiny_disk / "agent.sqlite3")
    assert {p.body["key"] for p in reopened.peek(500)} == {e["key"] for e in events[30:]} | {"after"}
    assert "full-open" in reopened.active()
    reopened.close()
