import asyncio

import pytest

from hisguard.agent.config import load_config
from hisguard.agent.delivery import DeliveryError, Sender
from hisguard.agent.store import StateStore
from tests.support.procs import ServerProc
from tests.support.reports import incident


def test_outbox_survives_reopen_and_keeps_only_the_latest_heartbeat(tmp_path):
    store = StateStore(tmp_path / "agent.sqlite3")
    store.enqueue(incident("k1", id="a"))
    store.enqueue({"type": "heartbeat", "id": "h1"})
    store.enqueue({"type": "heartbeat", "id": "h2"})
    store.enqueue(incident("k1", id="a"))  # same id twice: once
    store.close()
    store = StateStore(tmp_path / "agent.sqlite3")
    assert [p.id for p in store.peek(10)] == ["a", "h2"]
    assert store.backlog() == 1


def test_corrupt_spool_is_set_aside_and_the_agent_starts_clean(tmp_path, caplog):
    path = tmp_path / "agent.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = StateStore(path)
    store.enqueue(incident("k1"))
    assert store.backlog() == 1
    assert list(tmp_path.glob("agent.sqlite3.corrupt-*"))
    assert "unreadable" in caplog.text


@pytest.fixture
def server(tmp_path):
    srv = ServerProc(tmp_path / "server").start()
    yield srv
    srv.stop()


def sender_for(tmp_path, server, token):
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text(
        f'[agent]\nname = "ws-01"\nstate_dir = "s"\n[server]\nurl = "{server.url}"\ntoken = "{token}"\nbatch_size = 8\n'
    )
    cfg = load_config(cfg_path)
    store = StateStore(cfg.agent.state_dir / "agent.sqlite3")
    return Sender(cfg, store, cfg.token), store


def test_a_malformed_item_is_set_aside_and_the_rest_delivered(tmp_path, server):
    sender, store = sender_for(tmp_path, server, server.agent_token("ws-01", "renmin"))
    bad = incident("bad", trigger=9)
    for i in range(12):
        store.enqueue(bad if i == 5 else incident(f"k{i}"))

    async def go():
        try:
            return await sender.flush()
        finally:
            await sender.aclose()

    assert asyncio.run(go()) == 11
    assert store.peek(100) == []
    (reason,) = [r[0] for r in store._db.execute("SELECT reason FROM rejected")]
    assert "trigger" in reason
    assert len(server.incidents()) == 11


def test_wrong_token_keeps_everything_spooled(tmp_path, server):
    sender, store = sender_for(tmp_path, server, "hga_not_a_token")
    store.enqueue(incident("k1"))

    async def go():
        try:
            await sender.flush()
        finally:
            await sender.aclose()

    with pytest.raises(DeliveryError, match="refused the agent token"):
        asyncio.run(go())
    assert store.backlog() == 1
