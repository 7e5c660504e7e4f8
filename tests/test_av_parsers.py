"""Antivirus parsers on recorded outputs: Defender (English and Chinese-locale machines), clamd, product logs."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hisguard.checks import av_parsers as avp

DATA = Path(__file__).parent / "data"
DEF = DATA / "defender"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


# -- Windows Defender: PowerShell report -----------------------------------------------------------


def test_defender_report_english_machine():
    status, dets = avp.parse_defender_report((DEF / "report_en.json").read_bytes(), now=NOW)
    assert status.switches_off == ()
    assert status.signature_version == "1.421.1034.0"
    assert status.signature_age_days == pytest.approx(
        (NOW - datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc)).days + 0.454, abs=0.01
    )
    by_file = {d.file: d for d in dets}
    eicar = by_file[r"C:\Users\nurse01\Downloads\eicar.com"]
    assert (eicar.threat, eicar.action) == ("Virus:DOS/EICAR_Test_File", "quarantined")
    assert eicar.at == datetime(2026, 11, 27, 3, 12, 45, 617000, tzinfo=timezone.utc)
    # A failed block (ThreatStatusID 107, ActionSuccess false), two resources → two detections, "failed".
    assert {by_file[r"D:\HIS\update\his_patch.exe"].action, by_file[r"D:\HIS\update\his_patch.zip"].action} == {
        "failed"
    }
    assert by_file[r"D:\HIS\update\his_patch.exe"].threat == "Trojan:Win32/Wacatac.B!ml"


def test_defender_report_chinese_machine_in_code_page_936():
    raw = (DEF / "report_zh_gbk.json").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # the recording really is GBK, as a Chinese console writes it
    status, (det,) = avp.parse_defender_report(raw, now=NOW)
    assert set(status.switches_off) == {
        "RealTimeProtectionEnabled",
        "OnAccessProtectionEnabled",
        "BehaviorMonitorEnabled",
    }
    assert det.file == r"C:\Users\张医生\Desktop\门诊收费日报表.xlsx.exe"
    assert (det.threat, det.action) == ("Ransom:Win32/Phobos.PA!MTB", "removed")
    assert det.extra["user"] == r"MZSF-01\张医生"


def test_defender_service_stopped_is_protection_off_whatever_the_language():
    status, dets = avp.parse_defender_report((DEF / "report_service_stopped_zh.json").read_bytes())
    assert status.service_stopped and status.switches_off == ("AMServiceEnabled",)
    assert dets == []
    # Any other failure of Get-MpComputerStatus is not a fact about protection: it is a probe error.
    with pytest.raises(avp.ParseError, match="Access denied"):
        avp.parse_defender_report(json.dumps({"status": None, "status_error": "Access denied", "threats": []}))


def test_raw_mpcomputerstatus_from_powershell_51_with_date_literals():
    status = avp.parse_defender_status(json.loads((DEF / "mpstatus_ps51.json").read_text()), now=NOW)
    assert status.signature_updated == datetime(2025, 11, 15, tzinfo=timezone.utc)
    assert status.out_of_date is True
    assert status.signature_age_days == pytest.approx(377.5, abs=0.01)
    assert status.switches_off == ()


@pytest.mark.parametrize("garbage", [b"", b"Get-MpComputerStatus : The term is not recognized", b'{"x": 1}', b"[1,2]"])
def test_defender_garbage_is_a_clear_parse_error(garbage):
    with pytest.raises(avp.ParseError):
        avp.parse_defender_report(garbage)


# -- Windows Defender: operational event log via wevtutil --------------------------------------------


def test_wevtutil_english_events_pair_detection_with_action_and_track_protection():
    events = avp.parse_wevtutil_xml((DEF / "events_en.xml").read_bytes())
    assert [e.event_id for e in events] == [5000, 5001, 1117, 1116, 2001]
    assert events[2].record_id == 4128 and events[2].provider == "Microsoft-Windows-Windows Defender"
    got = avp.interpret_defender_events(events)
    (det,) = got.detections
    assert (det.file, det.threat, det.action) == (
        r"C:\Users\nurse01\Downloads\eicar.com",
        "Virus:DOS/EICAR_Test_File",
        "quarantined",  # Action ID 2 of the 1117 that followed the 1116
    )
    assert det.at == datetime(2026, 11, 27, 3, 12, 45, 617000, tzinfo=timezone.utc)
    # 5001 (disabled) was followed by 5000 (enabled): protection is on again.
    assert got.protection_off_at is None
    assert got.signature_update_failed_at == datetime(2026, 11, 26, 22, 0, tzinfo=timezone.utc)


def test_wevtutil_chinese_rendered_events_read_by_ids_not_text():
    raw = (DEF / "events_zh_gbk.xml").read_bytes()
    assert "隔离".encode("gbk") in raw and "已检测到恶意软件".encode("gbk") in raw  # localized text is there …
    got = avp.interpret_defender_events(avp.parse_wevtutil_xml(raw))
    by_file = {d.file: d for d in got.detections}
    # … but the action comes from the event ID (1118 = action failed) and Action ID, not from 隔离/删除.
    assert by_file[r"C:\Users\张医生\Desktop\门诊收费日报表.xlsx.exe"].action == "failed"
    assert by_file[r"C:\Program Files (x86)\某某浏览器\update.exe"].action == "removed"
    # One event naming two files is two detections.
    assert by_file[r"D:\共享\医保结算\发票打印.doc"].threat == "Trojan:Win32/Emotet.RPX!MTB"
    assert r"D:\共享\医保结算\发票打印副本.doc" in by_file
    assert got.protection_off_event == 5001
    assert got.protection_off_at == datetime(2026, 11, 27, 6, 30, 2, tzinfo=timezone.utc)


def test_wevtutil_empty_and_broken_output():
    assert avp.parse_wevtutil_xml(b"") == []
    with pytest.raises(avp.ParseError):
        avp.parse_wevtutil_xml(b"<Event xmlns='x'><System>")
    with pytest.raises(avp.ParseError):
        avp.parse_wevtutil_xml(
            b"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><EventID>abc</EventID>"
            b"</System></Event>"
        )


def test_defender_commands_are_well_formed():
    argv = avp.defender_events_argv(3600)
    assert argv[:3] == ["wevtutil.exe", "qe", "Microsoft-Windows-Windows Defender/Operational"]
    assert "/f:xml" in argv and "/rd:true" in argv
    query = argv[3].removeprefix("/q:")
    # Every ID the interpreter understands is asked for, and nothing else.
    asked = {int(i) for i in re.findall(r"EventID=(\d+)", query)}
    assert asked == set(avp.DEFENDER_EVENT_IDS)
    assert "timediff(@SystemTime) <= 3600000" in query
    assert query.count("[") == query.count("]") and query.count("(") == query.count(")")
    ps = avp.defender_status_argv()
    script = ps[-1]
    assert ps[:3] == ["powershell.exe", "-NoProfile", "-NonInteractive"]
    assert script.count("{") == script.count("}") and script.count("(") == script.count(")")
    for needed in ("Get-MpComputerStatus", "Get-MpThreat|", "Get-MpThreatDetection", "ConvertTo-Json", "ToString('o')"):
        assert needed in script
    # Every protection switch the parser checks is selected by the script.
    for switch in avp.DEFENDER_SWITCHES:
        assert switch in script


# -- ClamAV ---------------------------------------------------------------------------------------


def test_clamd_log_and_reply_lines():
    det = avp.parse_clamd_line("Fri Nov 27 17:37:11 2026 -> /srv/共享/发票.exe: Test.EICAR.UNOFFICIAL FOUND")
    assert (det.file, det.threat) == ("/srv/共享/发票.exe", "Test.EICAR.UNOFFICIAL")
    assert det.at is not None
    ext = avp.parse_clamd_line("/data/a: b.exe: Win.Test.EICAR_HDB-1(44d88612fea8a8f36de82e1278abb02f:68) FOUND")
    assert (ext.file, ext.threat) == ("/data/a: b.exe", "Win.Test.EICAR_HDB-1")
    assert avp.parse_clamd_line("Fri Nov 27 17:37:11 2026 -> /x: OK") is None
    assert avp.parse_clamd_line("Fri Nov 27 17:37:11 2026 -> SelfCheck: Database status OK.") is None
    onacc = avp.parse_clamd_line("ScanOnAccess: /home/u/x.doc: Doc.Dropper.Agent-1 FOUND")
    assert onacc.file == "/home/u/x.doc"
    dets, errors = avp.parse_clamd_replies(
        b"1: /a/eicar.com: Test.EICAR.UNOFFICIAL FOUND\x002: /a/ok.txt: OK\x00"
        b"3: /a/gone: File path check failure: No such file or directory. ERROR\x00"
    )
    assert [(d.file, d.threat) for d in dets] == [("/a/eicar.com", "Test.EICAR.UNOFFICIAL")]
    assert errors == ["/a/gone: File path check failure: No such file or directory. ERROR"]


def test_clamd_version_with_and_without_official_databases():
    assert avp.parse_clamd_version(b"ClamAV 1.4.6\x00") == ("1.4.6", None, None)
    engine, version, date = avp.parse_clamd_version(b"ClamAV 1.0.7/27470/Tue Nov 24 09:30:57 2026\x00")
    assert (engine, version, date) == ("1.0.7", 27470, datetime(2026, 11, 24, 9, 30, 57, tzinfo=timezone.utc))
    with pytest.raises(avp.ParseError):
        avp.parse_clamd_version(b"UNKNOWN COMMAND\x00")


# -- Generic product logs -------------------------------------------------------------------------


def test_gbk_log_of_a_chinese_product():
    pattern = (DATA / "avlogs" / "pattern.txt").read_text(encoding="utf-8").strip()
    rx = avp.compile_log_pattern(pattern)
    lines = (DATA / "avlogs" / "endpoint_gbk.log").read_bytes().decode("gbk").splitlines()
    actions = {"已隔离": "quarantined", "已删除": "removed", "处理失败": "failed"}
    dets = [d for line in lines if (d := avp.parse_log_line(rx, line, "log:终端安全", actions))]
    assert [(d.file, d.threat, d.action) for d in dets] == [
        (r"C:\Users\护士站\Desktop\住院费用报表.exe", "Trojan.Win32.Generic.abc", "quarantined"),
        (r"E:\autorun.inf", "Worm.Win32.Autorun.xyz", "removed"),
        (r"D:\HIS备份\his_20261126.bak.lockbit", "Ransom.Win32.LockBit.a", "failed"),
    ]
    assert dets[0].at is not None and dets[0].at.tzinfo is not None


def test_log_pattern_needs_file_and_threat_groups():
    with pytest.raises(ValueError, match="file"):
        avp.compile_log_pattern(r"virus (?P<threat>\S+)")
    with pytest.raises(ValueError, match="regular expression"):
        avp.compile_log_pattern(r"(?P<file>")


def test_detection_subject_is_stable_across_sources_and_case():
    a = avp.Detection("clamav", "/srv/X.exe", "Test.EICAR.UNOFFICIAL", "reported")
    b = avp.Detection("log:clamd", "/srv/x.exe", "Test.EICAR.UNOFFICIAL", "quarantined")
    c = avp.Detection("clamav", "/srv/x.exe", "Other", "reported")
    assert a.subject == b.subject != c.subject
