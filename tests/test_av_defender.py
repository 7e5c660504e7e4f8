"""The Defender source of the antivirus probe, replaying recorded outputs of its exact commands, and how
trigger-5 observations are classified by role (workstation routine, server urgent, canary critical)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hisguard.agent.classify import Failing, incident_for
from hisguard.checks import antivirus
from hisguard.checks import av_parsers as avp
from hisguard.checks.base import Impact, Observation, ProbeContext
from hisguard.plan import Scope, Severity, Trigger

DEF = Path(__file__).parent / "data" / "defender"
FOREVER = 10 * 365 * 86400.0  # recordings are dated; hold long enough that they count as recent


class Replay:
    """Stands in for the Windows console: answers only the commands av_parsers defines, with recordings."""

    def __init__(self, report: str, events: str) -> None:
        self.answers = {"powershell": (DEF / report).read_bytes(), "wevtutil": (DEF / events).read_bytes()}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float) -> bytes:
        self.calls.append(argv)
        assert timeout > 0
        if argv == avp.defender_status_argv("powershell.exe"):
            return self.answers["powershell"]
        if argv == avp.defender_events_argv(FOREVER, wevtutil="wevtutil.exe"):
            return self.answers["wevtutil"]
        raise AssertionError(f"unexpected command {argv}")


def _run(tmp_path: Path, replay: Replay, role: str = "workstation", impact: Impact | None = None) -> list[Observation]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    cfg = antivirus.Config(name="av", role=role, detection_hold=FOREVER, defender=antivirus.DefenderSource())
    ctx = ProbeContext(host="mzsf-01", state_dir=state, impact=impact or Impact(), memory={"run_command": replay})
    return antivirus._round(cfg, ctx)


def test_chinese_workstation_with_protection_off_and_a_ransomware_hit(tmp_path):
    replay = Replay("report_zh_gbk.json", "events_zh_gbk.xml")
    obs = _run(tmp_path, replay, impact=Impact(department="门诊收费"))
    assert len(replay.calls) == 2
    (prot,) = [o for o in obs if o.check == "av.protection"]
    assert prot.ok is False
    assert set(prot.detail["switches_off"]) >= {"RealTimeProtectionEnabled"}
    assert prot.detail["disabled_event"] == 5001
    dets = {o.detail["file"]: o for o in obs if o.check == "av.detection"}
    # The cmdlet's history and the event log name the same ransomware file: one detection, not two.
    phobos = dets[r"C:\Users\张医生\Desktop\门诊收费日报表.xlsx.exe"]
    assert phobos.detail["threat"] == "Ransom:Win32/Phobos.PA!MTB"
    assert len(dets) == 4
    # Classified: a workstation in a department — still routine for one hit; protection off is routine too.
    inc = incident_for("mzsf-01", Failing("av", phobos))
    assert (inc.trigger, inc.severity, inc.scope) == (Trigger.VIRUS, Severity.ROUTINE, Scope.DEPARTMENT)
    assert "Phobos" in inc.title.en and "检出病毒" in inc.title.zh
    assert incident_for("mzsf-01", Failing("av", prot)).severity is Severity.ROUTINE


def test_english_server_protection_on_signatures_fresh_detection_urgent(tmp_path):
    obs = _run(
        tmp_path, Replay("report_en.json", "events_en.xml"), role="db_server", impact=Impact(hospital_critical=True)
    )
    (prot,) = [o for o in obs if o.check == "av.protection.server"]
    assert prot.ok is True  # 5001 was followed by 5000, and the status says every switch is on
    (sig,) = [o for o in obs if o.check == "av.signatures"]
    assert sig.ok is True and sig.value is not None
    dets = [o for o in obs if o.check == "av.detection.server"]
    assert {o.detail["action"] for o in dets} >= {"quarantined", "failed"}
    inc = incident_for("his-db-01", Failing("av", dets[0]))
    # A hit on the (hospital-critical) database server: urgent, engineers on site; one hit is not an outbreak.
    assert (inc.severity, inc.scope) == (Severity.URGENT, Scope.HOSPITAL)
    assert inc.title.en.startswith("Server his-db-01")


def test_defender_service_stopped_on_a_server_is_urgent_protection_loss(tmp_path):
    obs = _run(tmp_path, Replay("report_service_stopped_zh.json", "events_zh_gbk.xml"), role="app_server")
    (prot,) = [o for o in obs if o.check == "av.protection.server"]
    assert prot.ok is False and "WinDefend" in prot.detail["reason"]
    inc = incident_for("his-app-01", Failing("av", prot))
    assert (inc.trigger, inc.severity) == (Trigger.VIRUS, Severity.URGENT)
    assert "防护已关闭" in inc.title.zh


def test_stale_signatures_are_routine(tmp_path):
    import json

    report = json.loads((DEF / "report_en.json").read_text())
    report["status"]["AntivirusSignatureLastUpdated"] = "2026-10-01T00:00:00.0000000Z"
    (tmp_path / "old.json").write_text(json.dumps(report))
    replay = Replay("report_en.json", "events_en.xml")
    replay.answers["powershell"] = (tmp_path / "old.json").read_bytes()
    obs = _run(tmp_path, replay, role="db_server")
    (sig,) = [o for o in obs if o.check == "av.signatures"]
    assert sig.ok is False and sig.value > 7
    assert incident_for("his-db-01", Failing("av", sig)).severity is Severity.ROUTINE


def test_a_broken_console_is_a_probe_error_not_an_incident(tmp_path):
    replay = Replay("report_en.json", "events_en.xml")
    replay.answers["powershell"] = b"powershell.exe : The term 'Get-MpComputerStatus' is not recognized"
    with pytest.raises(Exception, match="defender"):
        _run(tmp_path, replay)


def test_detections_clear_after_the_hold(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    replay = Replay("report_en.json", "events_en.xml")
    cfg = antivirus.Config(name="av", detection_hold=FOREVER, defender=antivirus.DefenderSource(events=False))
    ctx = ProbeContext(host="h", state_dir=state, memory={"run_command": replay})
    assert any(o.check == "av.detection" for o in antivirus._round(cfg, ctx))
    st = ctx.memory["av_state"]
    for held in st["held"].values():
        held["last_seen"] = time.time() - FOREVER - 1  # as if the hold ran out
    replay.answers["powershell"] = replay.answers["powershell"].replace(b'"detections":[', b'"x":[')
    assert not any(o.check == "av.detection" for o in antivirus._round(cfg, ctx))


@pytest.mark.parametrize(
    ("check", "severity"),
    [
        ("av.detection", Severity.ROUTINE),
        ("av.detection.server", Severity.URGENT),
        ("av.protection", Severity.ROUTINE),
        ("av.protection.server", Severity.URGENT),
        ("av.signatures", Severity.ROUTINE),
        ("canary.tripped", Severity.CRITICAL),
        ("canary.tripped.server", Severity.CRITICAL),
        ("canary.rename_burst", Severity.URGENT),
        ("canary.rename_burst.server", Severity.CRITICAL),
    ],
)
def test_trigger5_rules(check, severity):
    for impact in (Impact(), Impact(department="护士站")):
        obs = Observation(check, "s", False, impact, name="x")
        inc = incident_for("h", Failing("j", obs))
        assert (inc.trigger, inc.severity) == (Trigger.VIRUS, severity)
        assert inc.title.zh and inc.title.en
