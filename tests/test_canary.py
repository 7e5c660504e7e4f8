"""Ransomware canaries: every kind of tampering trips at once (inotify and polling), neighbours never do."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from hisguard.agent.classify import Failing, incident_for
from hisguard.checks import canary
from hisguard.checks.base import Impact, ProbeContext
from hisguard.plan import Scope, Severity, Trigger

LIMIT_S = 1.0  # the bound from change to incident


class Watcher:
    """The canary watcher on this loop, recording when each observation reached the agent."""

    def __init__(self, tmp_path: Path, mode: str, role: str = "workstation", **extra) -> None:
        self.folder = tmp_path / "共享" / "财务科"
        self.folder.mkdir(parents=True)
        (tmp_path / "state").mkdir()
        self.cfg = canary.Config(name="bait", folders=[self.folder], mode=mode, role=role, **extra)
        self.polls = 0
        self.ctx = ProbeContext(host="his-db-01" if role != "workstation" else "mzsf-01", state_dir=tmp_path / "state")
        self.ctx.poll_now = self._poll
        self.got: list[tuple[float, object]] = []
        self.task: asyncio.Task | None = None
        self.changed = asyncio.Event()

    def _poll(self) -> None:
        self.polls += 1

    def emit(self, obs) -> None:
        now = time.monotonic()
        self.got.extend((now, o) for o in obs)
        self.changed.set()

    async def until(self, predicate, timeout: float = 3.0):
        async def wait():
            while not (found := predicate()):
                self.changed.clear()
                await self.changed.wait()
            return found

        return await asyncio.wait_for(wait(), timeout)

    async def __aenter__(self) -> Watcher:
        await canary.probe(self.cfg, self.ctx)  # first round plants
        self.task = asyncio.create_task(canary.watch(self.cfg, self.ctx, self.emit))
        await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def canaries(self) -> list[Path]:
        return sorted(self.folder / n for n in self.cfg.names)

    async def wait_trip(self, since: float):
        at, obs = await self.until(lambda: next(((a, o) for a, o in self.got if o.ok is False), None))
        return at - since, obs


def _incident(host: str, obs):
    inc = incident_for(host, Failing("bait", obs))
    assert inc is not None
    return inc


def _rewrite(path: Path, data: bytes) -> None:
    with path.open("r+b") as f:  # in place, as ransomware that encrypts files where they are does
        f.seek(0)
        f.write(data)
        f.truncate()


TAMPER = {
    "modify": lambda p: _rewrite(p, p.read_bytes().replace(b",", b";", 3)),
    "append": lambda p: p.open("ab").write("合计,0\r\n".encode("gbk")),
    "rename": lambda p: os.rename(p, p.with_name(p.name + ".lockbit")),
    "delete": lambda p: p.unlink(),
    "encrypt": lambda p: _rewrite(p, os.urandom(p.stat().st_size)),
}


@pytest.mark.parametrize("mode", ["inotify", "poll"])
@pytest.mark.parametrize("how", list(TAMPER))
async def test_tampering_trips_a_critical_trigger5_incident_within_a_second(tmp_path, mode, how):
    async with Watcher(tmp_path, mode) as w:
        target = w.canaries()[0]
        assert target.exists() and target.suffix in (".csv", ".txt")
        since = time.monotonic()
        TAMPER[how](target)
        latency, obs = await w.wait_trip(since)
        assert latency < LIMIT_S, f"{how} seen after {latency:.3f}s"
        assert obs.subject == str(target)
        expected = {"modify": "modified", "append": "modified", "rename": "renamed", "delete": "deleted"}
        expected["encrypt"] = "encrypted"
        assert obs.detail["how"] == expected[how]
        if how == "rename" and mode == "inotify":
            await asyncio.sleep(0.05)
            assert w.got[-1][1].detail.get("renamed_to") == target.name + ".lockbit"
        inc = _incident(w.ctx.host, obs)
        assert (inc.trigger, inc.severity) == (Trigger.VIRUS, Severity.CRITICAL)
        assert w.polls >= 1  # the scheduled round is asked for too: it reports the same saved trip
        print(f"\n  canary {how} ({mode}): reported after {latency * 1000:.0f} ms")
    # The trip is kept (evidence): a fresh agent reports it again, and does not re-plant over it.
    ctx = ProbeContext(host=w.ctx.host, state_dir=w.ctx.state_dir)
    after = {o.subject: o for o in await canary.probe(w.cfg, ctx) if o.check == "canary.tripped"}
    assert after[str(target)].ok is False
    assert [o.ok for s, o in after.items() if s != str(target)] == [True, True]


@pytest.mark.parametrize("mode", ["inotify", "poll"])
async def test_neighbour_files_and_reading_canaries_raise_nothing(tmp_path, mode):
    async with Watcher(tmp_path, mode) as w:
        folder = w.folder
        for i in range(5):
            (folder / f"日报{i}.xlsx").write_bytes(os.urandom(2048))  # new files, even high-entropy ones
        (folder / "日报0.xlsx").write_bytes(os.urandom(4096))  # rewritten neighbour
        os.rename(folder / "日报1.xlsx", folder / "日报1_备份.xlsx")  # renamed neighbour, ordinary extension
        (folder / "日报2.xlsx").unlink()
        os.utime(folder / "日报3.xlsx")  # touched
        for c in w.canaries():
            c.read_bytes()  # read, as a backup or an indexer would
            os.utime(c, (time.time(), c.stat().st_mtime))  # atime only
        (folder / "子目录").mkdir()
        await asyncio.sleep(1.0)
        assert [o for _, o in w.got if o.ok is False] == []
        obs = await canary.probe(w.cfg, w.ctx)
        assert {o.subject: o.ok for o in obs if o.check == "canary.tripped"} == {str(c): True for c in w.canaries()}


@pytest.mark.parametrize("mode", ["inotify", "poll"])
async def test_burst_of_renames_to_unusual_extensions_is_a_second_signal(tmp_path, mode):
    async with Watcher(tmp_path, mode, role="db_server", rename_burst=6, rename_window=5) as w:
        files = []
        for i in range(8):
            f = w.folder / f"病历{i}.docx"
            f.write_bytes(b"x" * 100)
            files.append(f)
        await asyncio.sleep(0.5)
        since = time.monotonic()
        for f in files:
            os.rename(f, f.with_name(f.name + ".8fk2a"))
            if mode == "poll":
                await asyncio.sleep(0.3)  # polling sees a rename as one name gone, one come: one per look
        at, burst = await w.until(
            lambda: next(((a, o) for a, o in w.got if o.check == "canary.rename_burst.server"), None)
        )
        assert burst.detail["count"] >= 6 and burst.detail["samples"][-1].endswith(".8fk2a")
        inc = _incident(w.ctx.host, burst)
        assert (inc.trigger, inc.severity) == (Trigger.VIRUS, Severity.CRITICAL)
        print(f"\n  rename burst ({mode}): reported {at - since:.2f}s after the first rename")
        # The canaries themselves were not touched: only the second signal.
        assert all(o.ok for _, o in w.got if o.check.startswith("canary.tripped"))


async def test_renames_to_ordinary_extensions_are_no_burst(tmp_path):
    async with Watcher(tmp_path, "inotify", rename_burst=4) as w:
        for i in range(10):
            f = w.folder / f"报表{i}.tmp"
            f.write_bytes(b"x")
            os.rename(f, f.with_suffix(".xlsx"))  # what office software does on every save
        await asyncio.sleep(0.5)
        assert w.got == []


async def test_never_overwrites_a_file_that_is_not_ours_and_server_role_titles(tmp_path):
    folder = tmp_path / "备份"
    folder.mkdir()
    (tmp_path / "state").mkdir()
    (folder / "医保结算对账单.txt").write_text("真实数据", encoding="utf-8")
    cfg = canary.Config(name="bait", folders=[folder], role="app_server")
    ctx = ProbeContext(host="his-app-01", state_dir=tmp_path / "state", impact=Impact(hospital_critical=True))
    obs = await canary.probe(cfg, ctx)
    assert (folder / "医保结算对账单.txt").read_text(encoding="utf-8") == "真实数据"
    (problem,) = [o for o in obs if o.check == "canary.plant"]
    assert "not a canary" in problem.detail["problems"][0]
    tripped = [o for o in obs if o.check == "canary.tripped.server"]
    assert len(tripped) == 2 and all(o.ok for o in tripped)
    # Other probes' scans skip exactly the planted canaries.
    assert canary.canary_paths(tmp_path / "state") == {o.subject for o in tripped}
    os.unlink(tripped[0].subject)
    obs = await canary.probe(cfg, ctx)
    (bad,) = [o for o in obs if o.check == "canary.tripped.server" and o.ok is False]
    inc = _incident("his-app-01", bad)
    assert (inc.severity, inc.scope) == (Severity.CRITICAL, Scope.HOSPITAL)
    assert "勒索" in inc.title.zh and "canary" in inc.title.en


def test_bait_looks_like_a_fee_report_and_is_low_entropy():
    data = canary.bait_content("门诊收费日报表.csv")
    text = data.decode("gbk")
    assert text.startswith("日期,科室,病人编号") and "门诊" in text
    assert canary.entropy(data) < 6.0 < canary.ENCRYPTED_ENTROPY < canary.entropy(os.urandom(len(data)))
