import asyncio
import contextlib
import threading

import pytest

from hisguard import checks
from hisguard.agent.config import load_config
from hisguard.agent.runtime import Agent
from tests.support import testprobes


@pytest.fixture
def agent_cfg(tmp_path, monkeypatch):
    monkeypatch.setitem(checks.PROBES, "testprobe", "tests.support.testprobes")
    testprobes.RUNS.clear()
    testprobes.RELEASE.clear()
    path = tmp_path / "agent.toml"
    path.write_text(
        """
[agent]
name = "sched"
state_dir = "state"
[server]
url = "http://127.0.0.1:9"
token = "x"
[[probe.testprobe]]
name = "tick"
interval = 0.2
timeout = 0.2
[[probe.testprobe]]
name = "hang"
mode = "hang"
interval = 0.5
timeout = 0.3
[[probe.testprobe]]
name = "stuck"
mode = "hang_thread"
interval = 0.3
timeout = 0.2
[[probe.testprobe]]
name = "crash"
mode = "crash"
interval = 0.3
timeout = 0.2
"""
    )
    yield load_config(path)
    testprobes.RELEASE.set()


async def test_hung_probe_is_a_probe_failure_and_others_keep_their_schedule(agent_cfg):
    agent = Agent(agent_cfg)
    threads_before = threading.active_count()
    tasks = [asyncio.create_task(agent._job_loop(job)) for job in agent_cfg.jobs]
    await asyncio.sleep(2.05)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    # The ticking job ran on its 0.2 s cadence despite its neighbours hanging and crashing.
    assert len(testprobes.RUNS) >= 8, testprobes.RUNS
    gaps = [b - a for a, b in zip(testprobes.RUNS, testprobes.RUNS[1:], strict=False)]
    assert max(gaps) < 0.5
    hang, stuck, crash = agent.status["hang"], agent.status["stuck"], agent.status["crash"]
    assert hang.ok is False and "timed out after 0.3s" in hang.error and hang.failures >= 3
    assert crash.ok is False and "RuntimeError: probe bug" in crash.error
    # A call stuck in a thread is not started again while it holds its thread: no pile-up.
    assert stuck.failures >= 5 and "has not returned" in stuck.error
    assert threading.active_count() - threads_before <= 1
    testprobes.RELEASE.set()
    snap = agent.snapshot()["probes"]
    assert snap["hang"]["ok"] is False and snap["tick"]["ok"] is True
    agent.store.close()


def ping_agent(tmp_path, name):
    """An agent with one ping job (loopback, confirmed after one round) and the job."""
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[agent]\nname = "{name}"\nstate_dir = "s"\n[server]\nurl = "http://127.0.0.1:9"\ntoken = "x"\n'
        "[[probe.ping]]\ninterval = 1\ntimeout = 1\nfail_after = 1\nfail_window = 1\n"
        'targets = [{ address = "127.0.0.1" }]\n'
    )
    agent = Agent(load_config(path))
    (job,) = agent.cfg.jobs
    return agent, job


async def test_watcher_observations_are_classified_at_once_and_survive_rounds(tmp_path):
    from hisguard.checks.base import Observation

    agent, job = ping_agent(tmp_path, "w")
    agent.emit(job, [Observation("ping.reachable", "198.18.9.9", False, name="陷阱报告的设备")])
    (inc,) = agent.current_incidents()
    assert inc.key == "w/ping.reachable/198.18.9.9" and list(agent.store.active()) == [inc.key]
    await agent.run_round(job)  # the scheduled round does not report it, but a watched condition persists
    assert [i.key for i in agent.current_incidents()] == ["w/ping.reachable/198.18.9.9"]
    agent.emit(job, [Observation("ping.reachable", "198.18.9.9", True)])
    assert len(agent.current_incidents()) == 1  # ping clears after two good observations (clear_after)
    agent.emit(job, [Observation("ping.reachable", "198.18.9.9", True)])
    assert agent.current_incidents() == [] and agent.store.active() == {}
    agent.store.close()


async def test_a_partial_round_keeps_what_it_could_not_see(tmp_path, monkeypatch):
    monkeypatch.setitem(checks.PROBES, "testprobe", "tests.support.testprobes")
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\nname = "p"\nstate_dir = "s"\n[server]\nurl = "http://127.0.0.1:9"\ntoken = "x"\n'
        '[[probe.testprobe]]\nmode = "partial"\ninterval = 1\ntimeout = 1\n'
    )
    agent = Agent(load_config(path))
    (job,) = agent.cfg.jobs
    await agent.run_round(job)
    assert [i.key for i in agent.current_incidents()] == ["p/host.process/his-appserver"]
    await agent.run_round(job)  # partial: unknown is not healthy, the incident stays open
    assert list(agent.store.active()) == ["p/host.process/his-appserver"]
    await agent.run_round(job)  # a complete round without it: the condition no longer exists
    assert agent.store.active() == {}
    agent.store.close()


def test_control_characters_in_a_subject_do_not_make_the_event_unsendable(tmp_path):
    from hisguard.checks.base import Observation
    from hisguard.report import IncidentEvent

    agent, job = ping_agent(tmp_path, "c")
    agent.emit(job, [Observation("ping.reachable", "GigabitEthernet0/1\x00\x1e", False)])
    (event,) = [p.body for p in agent.store.peek(10)]
    assert event["key"] == "c/ping.reachable/GigabitEthernet0/1??"
    IncidentEvent.model_validate(event)  # the server's schema accepts it
    agent.store.close()


def script_agent(tmp_path, monkeypatch, confirm_after: str, script: list[bool]):
    """An agent whose one job reports `script` round by round, every 30 s unless it asks to confirm sooner."""
    monkeypatch.setitem(checks.PROBES, "scripted", "tests.support.scriptprobe")
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\nname = "c"\nstate_dir = "s"\n[server]\nurl = "http://127.0.0.1:9"\ntoken = "x"\n'
        "[[probe.scripted]]\ninterval = 30\ntimeout = 1\nfail_after = 2\nfail_window = 3\nclear_after = 2\n"
        f"{confirm_after}\n"
    )
    agent = Agent(load_config(path))
    (job,) = agent.cfg.jobs
    agent.contexts[job.name].memory["script"] = script
    return agent, job


async def _until(predicate, seconds: float) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)


async def test_a_failed_round_is_confirmed_seconds_later_and_so_is_recovery(tmp_path, monkeypatch):
    agent, job = script_agent(tmp_path, monkeypatch, "confirm_after = 0.2", [False, False, True, True, True])
    runs = agent.contexts[job.name].memory.setdefault("runs", [])
    loop = asyncio.create_task(agent._job_loop(job))
    try:
        # Round 1 fails (unconfirmed): a confirming round follows instead of waiting 30 s; it fails too: incident.
        await _until(lambda: agent.current_incidents(), 5)
        assert len(runs) == 2 and [i.key for i in agent.current_incidents()] == ["c/host.process/his-appserver"]
        await asyncio.sleep(0.6)
        assert len(runs) == 2  # confirmed: back to the 30-s cadence
        agent._poll_now[job.name].set()  # the next round (as a watcher would ask for it) is healthy …
        await _until(lambda: not agent.current_incidents(), 5)
        assert len(runs) == 4 and agent.store.active() == {}  # … and its confirming round clears the incident
        await asyncio.sleep(0.6)
        assert len(runs) == 4
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        agent.store.close()


async def test_without_confirm_after_the_job_keeps_its_interval(tmp_path, monkeypatch):
    agent, job = script_agent(tmp_path, monkeypatch, "", [False])
    loop = asyncio.create_task(agent._job_loop(job))
    try:
        await asyncio.sleep(1.0)
        assert agent.contexts[job.name].memory["runs"][1:] == [] and agent.current_incidents() == []
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        agent.store.close()
