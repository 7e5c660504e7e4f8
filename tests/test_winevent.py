"""Windows event-log probe on recorded wevtutil outputs from an English and a Chinese Windows Server."""

from __future__ import annotations

import asyncio
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hisguard.agent.classify import Failing, classify
from hisguard.checks import winevent
from hisguard.checks.base import Impact, ProbeContext
from hisguard.plan import Scope, Severity, Trigger

DATA = Path(__file__).parent / "data" / "winevent"
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
EVENT_RE = re.compile(r"<Event[\s>].*?</Event>", re.S)


class RecordedWevtutil:
    """Replays a recorded channel dump the way wevtutil answers the probe's queries.

    It honours what the probe asks for — the event IDs and `EventRecordID > N` of /q, /c and
    /rd:true — so a wrong query gives a wrong answer. `visible` hides records above it, as if
    they had not been written yet.
    """

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.visible = 10**9
        self.calls: list[list[str]] = []
        self.cleared_below: int | None = None

    def events(self, channel: str) -> list[tuple[int, int, str]]:
        text = winevent.decode((DATA / self.lang / f"{channel}.xml").read_bytes())
        out = []
        for chunk in EVENT_RE.findall(text):
            rid = int(re.search(r"<EventRecordID>(\d+)<", chunk).group(1))
            eid = int(re.search(r"<EventID[^>]*>(\d+)<", chunk).group(1))
            if rid <= self.visible and (self.cleared_below is None or rid >= self.cleared_below):
                out.append((rid, eid, chunk))
        return out

    def __call__(self, argv: list[str], timeout: float) -> str:
        self.calls.append(argv)
        assert argv[:2] == ["wevtutil", "qe"] and timeout > 0
        channel = argv[2]
        opts = dict(a[1:].split(":", 1) for a in argv[3:])
        assert opts["f"] == "xml"
        events = self.events(channel)
        if "q" in opts:
            ids = {int(i) for i in re.findall(r"EventID=(\d+)", opts["q"])}
            events = [e for e in events if e[1] in ids]
            if m := re.search(r"EventRecordID > (\d+)", opts["q"]):
                events = [e for e in events if e[0] > int(m.group(1))]
        if opts.get("rd") == "true":
            events = events[::-1]
        events = events[: int(opts.get("c", 10**9))]
        return "\r\n".join(e[2] for e in events)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    now = [NOW]
    monkeypatch.setattr(winevent, "CLOCK", lambda: now[0])
    return now


def run(cfg: winevent.Config, ctx: ProbeContext, wevtutil: RecordedWevtutil, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(winevent, "RUNNER", wevtutil)
    return asyncio.run(winevent.probe(cfg, ctx))


def ctx_in(tmp_path: Path, impact: Impact | None = None) -> ProbeContext:
    return ProbeContext(host="HIS-DB01", state_dir=tmp_path, impact=impact or Impact())


def by_key(obs):
    return {(o.check, o.subject): o for o in obs}


def test_chinese_recording_is_really_cp936_and_differs_in_text() -> None:
    zh = (DATA / "zh" / "System.xml").read_bytes()
    en = (DATA / "en" / "System.xml").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        zh.decode("utf-8")
    assert "服务意外终止" in winevent.decode(zh) and "服务意外终止" not in en.decode()
    assert "terminated unexpectedly" in en.decode()


def test_english_and_chinese_servers_give_the_same_observations(
    tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = winevent.Config()
    results = {}
    for lang in ("en", "zh"):
        results[lang] = run(cfg, ctx_in(tmp_path / lang), RecordedWevtutil(lang), monkeypatch)
    assert results["en"] == results["zh"]
    obs = by_key(results["en"])
    failed = {k: o.value for k, o in obs.items() if o.ok is False}
    assert failed == {
        ("winevent.disk", r"\Device\Harddisk1\DR1"): 2.0,  # 153 retry + 7 bad block
        ("winevent.disk", r"\Device\RaidPort0"): 1.0,  # storahci 129 (the Time-Service 129 is not a disk)
        ("winevent.hardware", "whea"): 1.0,  # WHEA 18 fatal processor error
        ("winevent.unexpected_shutdown", "boot"): 2.0,  # Kernel-Power 41 + EventLog 6008
        ("winevent.service_crash", "MSSQLSERVER"): 1.0,  # 7031, name from <Binary>, not the display name
        ("winevent.service_crash", "HisAppSrv"): 1.0,  # 7034
        ("winevent.filesystem", "D:"): 2.0,  # Ntfs 98 at level Error + 55; healthy C: (98, level 4) ignored
        ("winevent.sql_io", "MSSQLSERVER"): 2.0,  # 825 + 823
        ("winevent.sql_suspect", "MSSQLSERVER"): 1.0,  # 824
        ("winevent.sql_log_full", "MSSQL$HIS/HISDB"): 1.0,  # 9002
    }
    # Two corrected memory errors are below the default threshold of 10: watched, not failed.
    assert obs[("winevent.hardware_corrected", "whea")].ok is True
    assert obs[("winevent.hardware_corrected", "whea")].value == 2.0
    shutdown = obs[("winevent.unexpected_shutdown", "boot")].detail
    assert shutdown["bugcheck_code"] == 0 and shutdown["power_loss_suspected"] is True
    assert obs[("winevent.sql_log_full", "MSSQL$HIS/HISDB")].detail["log_reuse_wait"] == "LOG_BACKUP"


def test_observations_become_triggers_1_2_3(tmp_path: Path, clock: list[datetime], monkeypatch) -> None:
    impact = Impact(hospital_critical=True)
    obs = run(winevent.Config(), ctx_in(tmp_path, impact), RecordedWevtutil("zh"), monkeypatch)
    incidents = {i.key: i for i in classify("HIS-DB01", [Failing("winevent", o) for o in obs if o.ok is False])}
    trig = {k.split("/", 1)[1]: i.trigger for k, i in incidents.items()}
    assert trig["winevent.disk/\\Device\\Harddisk1\\DR1"] is Trigger.HARDWARE
    assert trig["winevent.hardware/whea"] is Trigger.HARDWARE
    assert trig["winevent.sql_io/MSSQLSERVER"] is Trigger.HARDWARE
    assert trig["winevent.unexpected_shutdown/boot"] is Trigger.SOFTWARE
    assert trig["winevent.service_crash/HisAppSrv"] is Trigger.SOFTWARE
    assert trig["winevent.filesystem/D:"] is Trigger.SOFTWARE
    assert trig["winevent.sql_suspect/MSSQLSERVER"] is Trigger.DATABASE
    assert trig["winevent.sql_log_full/MSSQL$HIS/HISDB"] is Trigger.DATABASE
    inc = incidents["HIS-DB01/winevent.service_crash/MSSQLSERVER"]
    assert inc.scope is Scope.HOSPITAL and inc.severity is Severity.CRITICAL
    assert inc.title.zh == "HIS-DB01 服务 MSSQLSERVER 意外终止"
    assert inc.title.en == "HIS-DB01: service MSSQLSERVER terminated unexpectedly"


def test_commands_are_exact(tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch) -> None:
    wev = RecordedWevtutil("en")
    cfg = winevent.Config(channels=["Application"], max_events=50, first_lookback=3600)
    run(cfg, ctx_in(tmp_path), wev, monkeypatch)
    run(cfg, ctx_in(tmp_path), wev, monkeypatch)
    ids = "EventID=823 or EventID=825 or EventID=824 or EventID=9002"
    assert wev.calls == [
        ["wevtutil", "qe", "Application", "/c:1", "/rd:true", "/f:xml"],
        [
            "wevtutil",
            "qe",
            "Application",
            f"/q:*[System[({ids}) and TimeCreated[timediff(@SystemTime) <= 3600000]]]",
            "/f:xml",
            "/c:50",
            "/rd:true",
        ],
        ["wevtutil", "qe", "Application", "/c:1", "/rd:true", "/f:xml"],
        ["wevtutil", "qe", "Application", f"/q:*[System[({ids}) and (EventRecordID > 91312)]]", "/f:xml", "/c:50"],
    ]


def test_command_line_as_windows_receives_it() -> None:
    # CreateProcess gets one string; the XPath with its spaces must stay one argument.
    line = subprocess.list2cmdline(winevent.query_command("System", winevent.xpath_after((41, 6008), 7), 5))
    assert line == 'wevtutil qe System "/q:*[System[(EventID=41 or EventID=6008) and (EventRecordID > 7)]]" /f:xml /c:5'


def test_bookmark_survives_a_restart_neither_losing_nor_repeating(
    tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = winevent.Config()
    wev = RecordedWevtutil("en")
    wev.visible = 48231  # System written up to the 6008; no Application record yet (those are 91xxx)
    first = by_key(run(cfg, ctx_in(tmp_path), wev, monkeypatch))
    assert first[("winevent.unexpected_shutdown", "boot")].value == 2.0
    assert ("winevent.service_crash", "MSSQLSERVER") not in first
    state = winevent.load_state(winevent.state_path(cfg, ctx_in(tmp_path)))
    assert state["bookmarks"]["System"] == 48231

    # The agent restarts (fresh context, nothing in memory); the log has grown meanwhile.
    wev.visible = 10**9
    clock[0] = NOW.replace(minute=30)
    second = by_key(run(cfg, ctx_in(tmp_path), wev, monkeypatch))
    # Events before the bookmark are not counted twice, events after it are all there.
    assert second[("winevent.unexpected_shutdown", "boot")].value == 2.0
    assert second[("winevent.disk", r"\Device\Harddisk1\DR1")].value == 2.0
    assert second[("winevent.service_crash", "MSSQLSERVER")].ok is False
    assert second[("winevent.filesystem", "D:")].value == 2.0
    system_queries = [c for c in wev.calls if c[2] == "System" and c[3].startswith("/q:")]
    assert "EventRecordID > 48231" in system_queries[-1][3]

    # A third run finds nothing new and changes nothing.
    third = by_key(run(cfg, ctx_in(tmp_path), wev, monkeypatch))
    assert {k: o.value for k, o in third.items()} == {k: o.value for k, o in second.items()}


def test_held_condition_clears_after_hold_then_is_forgotten(
    tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = winevent.Config(hold=3600, first_lookback=86400)
    wev = RecordedWevtutil("en")
    obs = by_key(run(cfg, ctx_in(tmp_path), wev, monkeypatch))
    assert obs[("winevent.sql_io", "MSSQLSERVER")].ok is False  # last 823 at 07:25, now 08:00
    assert obs[("winevent.disk", r"\Device\Harddisk1\DR1")].ok is True  # 06:12, more than an hour ago
    clock[0] = NOW.replace(hour=9)
    later = by_key(run(cfg, ctx_in(tmp_path), wev, monkeypatch))
    assert later[("winevent.sql_io", "MSSQLSERVER")].ok is True
    clock[0] = NOW.replace(hour=10)
    assert run(cfg, ctx_in(tmp_path), wev, monkeypatch) == []


def test_cleared_log_restarts_from_the_beginning(
    tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = winevent.Config(channels=["System"])
    wev = RecordedWevtutil("en")
    wev.visible = 48231
    run(cfg, ctx_in(tmp_path), wev, monkeypatch)
    # Someone clears the System log: record IDs restart far below the bookmark.
    path = winevent.state_path(cfg, ctx_in(tmp_path))
    state = winevent.load_state(path)
    state["bookmarks"]["System"] = 99999
    winevent.save_state(path, state)
    wev.visible = 10**9
    obs = by_key(run(cfg, ctx_in(tmp_path), wev, monkeypatch))
    assert obs[("winevent.service_crash", "HisAppSrv")].ok is False
    assert winevent.load_state(path)["bookmarks"]["System"] == 48270


def test_busy_log_is_read_in_pages_and_asks_for_the_next_round(
    tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = winevent.Config(channels=["System"], max_events=3)
    wev = RecordedWevtutil("en")
    ctx = ctx_in(tmp_path)
    path = winevent.state_path(cfg, ctx)
    winevent.save_state(path, {"bookmarks": {"System": 0}, "held": {}})
    asked = []
    ctx.poll_now = lambda: asked.append(True)
    for _ in range(10):
        obs = run(cfg, ctx, wev, monkeypatch)
        if not asked:
            break
        asked.clear()
    assert by_key(obs)[("winevent.filesystem", "D:")].value == 2.0
    assert winevent.load_state(path)["bookmarks"]["System"] == 48270


def test_corrupt_event_is_skipped_not_fatal() -> None:
    text = winevent.decode((DATA / "en" / "System.xml").read_bytes())
    broken = text.replace("<EventRecordID>48213</EventRecordID>", "<EventRecordID>x</EventRecordID>", 1)
    events = winevent.parse_events(broken + "\r\n<Event xmlns='x'><System>")
    assert 48213 not in [e.record_id for e in events]
    assert len(events) == len(winevent.parse_events(text)) - 1


def test_off_windows_it_is_a_probe_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(winevent.ProbeError, match="not Windows"):
        winevent.run_wevtutil(winevent.latest_command("System"), 5)


def test_config_rejects_unknown_channel() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        winevent.Config(channels=["Security"])


def test_agent_restart_neither_reopens_nor_loses_incidents(
    tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hisguard.agent.config import load_config
    from hisguard.agent.runtime import Agent

    conf = tmp_path / "agent.toml"
    conf.write_text(
        '[agent]\nname = "HIS-DB01"\nhospital_critical = true\nstate_dir = "state"\n'
        '[server]\nurl = "http://127.0.0.1:9"\ntoken = "x"\n'
        "[[probe.winevent]]\ninterval = 60\n",
        encoding="utf-8",
    )
    wev = RecordedWevtutil("zh")
    wev.visible = 48231
    monkeypatch.setattr(winevent, "RUNNER", wev)

    def one_life() -> tuple[set[str], list[str]]:
        agent = Agent(load_config(conf))
        asyncio.run(agent.once())
        events = [p.body for p in agent.store.peek(1000) if p.kind == "incident"]
        active = set(agent.store.active())
        agent.store.close()
        return active, [f"{e['state']}:{e['key']}" for e in events]

    active1, sent1 = one_life()
    assert "HIS-DB01/winevent.unexpected_shutdown/boot" in active1
    assert len(sent1) == len(active1)
    wev.visible = 10**9  # the log grows while the agent is down
    active2, sent2 = one_life()
    new = sorted(set(sent2) - set(sent1))
    # Only the incidents from events written after the bookmark are new; none resolved, none repeated.
    assert new == [
        f"open:HIS-DB01/{k}"
        for k in sorted(
            [
                "winevent.filesystem/D:",
                "winevent.hardware/whea",
                "winevent.service_crash/HisAppSrv",
                "winevent.service_crash/MSSQLSERVER",
                "winevent.sql_io/MSSQLSERVER",
                "winevent.sql_log_full/MSSQL$HIS/HISDB",
                "winevent.sql_suspect/MSSQLSERVER",
            ]
        )
    ]
    assert active1 < active2
