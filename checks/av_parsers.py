"""Antivirus outputs → detections and protection facts; the commands that produce them, in one place.

Parsers read identifiers and fields only (event IDs, action IDs, booleans), never localized message
text: a Chinese Windows says 隔离 where an English one says Quarantine, but the Action ID is 2 on both.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

# --------------------------------------------------------------------------------------------------
# What every source yields


@dataclass(frozen=True)
class Detection:
    """One antivirus detection: which file, which threat, what the product did about it."""

    source: str  # defender | clamav | log:<name>
    file: str
    threat: str
    action: str  # quarantined, removed, blocked, allowed, none, failed, unknown …
    at: datetime | None = None
    ref: str | None = None  # the product's own id (DetectionID, EventRecordID, log offset)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def subject(self) -> str:
        """Stable across sources and re-reads: the same file with the same threat is one detection."""
        digest = hashlib.sha1(f"{self.file.lower()}\0{self.threat}".encode(errors="replace")).hexdigest()
        return f"det-{digest[:16]}"


class ParseError(ValueError):
    """Output that is not what the command produces (garbage, truncated, another program)."""


def decode_output(data: bytes) -> str:
    """Console/log bytes → text: UTF-8 (with or without BOM) when valid, else the Chinese code page (GB18030 ⊇ GBK)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030", errors="replace")


# --------------------------------------------------------------------------------------------------
# Windows Defender: the commands (the only place they are spelled)

DEFENDER_CHANNEL = "Microsoft-Windows-Windows Defender/Operational"

# Operational-log event IDs (see shared reference §4.3).
DEFENDER_DETECTION_EVENTS = (1006, 1015, 1116)
DEFENDER_ACTION_EVENTS = (1007, 1117)  # action taken
DEFENDER_ACTION_FAILED_EVENTS = (1008, 1118, 1119)
DEFENDER_PROTECTION_OFF_EVENTS = (5001, 5010, 5012)  # real-time / malware+PUA scanning / virus scanning disabled
DEFENDER_PROTECTION_ON_EVENTS = (5000,)  # real-time protection enabled
DEFENDER_SIGNATURE_FAILED_EVENTS = (2001,)  # security intelligence update failed
DEFENDER_EVENT_IDS = (
    *DEFENDER_DETECTION_EVENTS,
    *DEFENDER_ACTION_EVENTS,
    *DEFENDER_ACTION_FAILED_EVENTS,
    *DEFENDER_PROTECTION_OFF_EVENTS,
    *DEFENDER_PROTECTION_ON_EVENTS,
    *DEFENDER_SIGNATURE_FAILED_EVENTS,
)

# Protection switches of MSFT_MpComputerStatus: any False means protection is (partly) off.
DEFENDER_SWITCHES = (
    "AMServiceEnabled",
    "AntivirusEnabled",
    "AntispywareEnabled",
    "RealTimeProtectionEnabled",
    "OnAccessProtectionEnabled",
    "IoavProtectionEnabled",
    "BehaviorMonitorEnabled",
)
_STATUS_FIELDS = (
    *DEFENDER_SWITCHES,
    "AntivirusSignatureAge",
    "AntivirusSignatureVersion",
    "DefenderSignaturesOutOfDate",
    "AMRunningMode",
    "IsTamperProtected",
)

# One PowerShell run gives status, threat catalogue and detection history as UTF-8 JSON (dates as ISO 8601,
# because Windows PowerShell 5.1 would otherwise write /Date(ms)/). Errors become fields, not a crash.
DEFENDER_SCRIPT = (
    "$ErrorActionPreference='Stop';"
    "[Console]::OutputEncoding=[Text.Encoding]::UTF8;"
    "$r=[ordered]@{status=$null;status_error=$null;threats=@();detections=@()};"
    "try{$s=Get-MpComputerStatus;"
    "$r.status=$s|Select-Object " + ",".join(_STATUS_FIELDS) + ","
    "@{n='AntivirusSignatureLastUpdated';e={$_.AntivirusSignatureLastUpdated.ToUniversalTime().ToString('o')}}"
    "}catch{$r.status_error=$_.Exception.Message};"
    "try{$r.threats=@(Get-MpThreat|Select-Object ThreatID,ThreatName,SeverityID,CategoryID,IsActive)}catch{};"
    "try{$r.detections=@(Get-MpThreatDetection|Select-Object DetectionID,ThreatID,Resources,ProcessName,DomainUser,"
    "ThreatStatusID,CleaningActionID,ActionSuccess,"
    "@{n='InitialDetectionTime';e={$_.InitialDetectionTime.ToUniversalTime().ToString('o')}})}catch{};"
    "ConvertTo-Json -InputObject $r -Depth 4 -Compress"
)


def defender_status_argv(powershell: str = "powershell.exe") -> list[str]:
    return [powershell, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", DEFENDER_SCRIPT]


def defender_events_query(lookback_s: float) -> str:
    """XPath for wevtutil: the Defender event IDs we act on, within the look-back window."""
    ids = " or ".join(f"EventID={i}" for i in DEFENDER_EVENT_IDS)
    return f"*[System[({ids}) and TimeCreated[timediff(@SystemTime) <= {int(lookback_s * 1000)}]]]"


def defender_events_argv(lookback_s: float, count: int = 500, wevtutil: str = "wevtutil.exe") -> list[str]:
    return [
        wevtutil,
        "qe",
        DEFENDER_CHANNEL,
        f"/q:{defender_events_query(lookback_s)}",
        "/f:xml",
        "/rd:true",
        f"/c:{count}",
    ]


# Service stopped: Get-MpComputerStatus fails with HRESULT 0x800106ba on every locale.
DEFENDER_SERVICE_STOPPED = re.compile(r"0x800106ba", re.I)

# ThreatStatusID (MSFT_MpThreatDetection) and CleaningActionID / event "Action ID" → one action vocabulary.
_THREAT_STATUS = {
    0: "unknown",
    1: "detected",
    2: "cleaned",
    3: "quarantined",
    4: "removed",
    5: "allowed",
    6: "blocked",
    102: "failed",
    103: "failed",
    104: "failed",
    105: "abandoned",
    107: "failed",
}
_ACTION_ID = {1: "cleaned", 2: "quarantined", 3: "removed", 6: "allowed", 8: "user_defined", 9: "none", 10: "blocked"}


# --------------------------------------------------------------------------------------------------
# Windows Defender: parsers


@dataclass(frozen=True)
class DefenderStatus:
    switches_off: tuple[str, ...]  # which protection switches are False
    signature_age_days: float | None
    signature_updated: datetime | None
    signature_version: str | None
    out_of_date: bool
    running_mode: str | None
    service_stopped: bool = False


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 or Windows PowerShell 5.1's /Date(ms)/ → aware UTC datetime."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\\?/Date\((-?\d+)(?:[+-]\d{4})?\)\\?/", value.strip())
        if m:
            return datetime.fromtimestamp(int(m.group(1)) / 1000, timezone.utc)
        text = value.strip().replace("Z", "+00:00")
        # .NET writes 7 fractional digits; Python takes at most 6.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return None


def _json(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = decode_output(text)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ParseError(f"not JSON: {exc}: {text[:120]!r}") from None


def _as_list(value: Any) -> list[Any]:
    # ConvertTo-Json writes one element as an object, none as null.
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_defender_status(
    obj: dict[str, Any] | None, error: str | None = None, now: datetime | None = None
) -> DefenderStatus:
    if obj is None:
        stopped = bool(error and DEFENDER_SERVICE_STOPPED.search(error))
        if not stopped:
            raise ParseError(f"Get-MpComputerStatus failed: {error or 'no output'}")
        return DefenderStatus(("AMServiceEnabled",), None, None, None, False, None, service_stopped=True)
    if not isinstance(obj, dict):
        raise ParseError(f"Get-MpComputerStatus: expected an object, got {type(obj).__name__}")
    off = tuple(k for k in DEFENDER_SWITCHES if obj.get(k) is False)
    updated = parse_time(obj.get("AntivirusSignatureLastUpdated"))
    age = obj.get("AntivirusSignatureAge")
    age_days: float | None = float(age) if isinstance(age, (int, float)) and age < 65535 else None
    if updated is not None:
        age_days = ((now or datetime.now(timezone.utc)) - updated) / timedelta(days=1)
    return DefenderStatus(
        switches_off=off,
        signature_age_days=age_days,
        signature_updated=updated,
        signature_version=obj.get("AntivirusSignatureVersion"),
        out_of_date=obj.get("DefenderSignaturesOutOfDate") is True,
        running_mode=obj.get("AMRunningMode"),
    )


def _resource_path(resource: str) -> str:
    # Resources look like "file:_C:\dir\x.exe", "containerfile:_C:\a.zip", "process:_pid:1234,…".
    _kind, sep, rest = resource.partition(":_")
    return rest if sep else resource


def parse_defender_report(text: str | bytes, now: datetime | None = None) -> tuple[DefenderStatus, list[Detection]]:
    """The DEFENDER_SCRIPT output: protection status and the detection history joined with threat names."""
    data = _json(text)
    if not isinstance(data, dict) or "status" not in data:
        raise ParseError("Defender report: expected an object with 'status'")
    status = parse_defender_status(data.get("status"), data.get("status_error"), now)
    names = {}
    for t in _as_list(data.get("threats")):
        if isinstance(t, dict) and "ThreatID" in t:
            names[int(t["ThreatID"])] = str(t.get("ThreatName") or f"ThreatID {t['ThreatID']}")
    detections = []
    for d in _as_list(data.get("detections")):
        if not isinstance(d, dict):
            continue
        threat_id = d.get("ThreatID")
        threat = names.get(int(threat_id)) if threat_id is not None else None
        action = _THREAT_STATUS.get(d.get("ThreatStatusID", 0), "unknown")
        if d.get("ActionSuccess") is False:
            action = "failed"
        resources = [r for r in _as_list(d.get("Resources")) if isinstance(r, str)]
        files = [_resource_path(r) for r in resources if r.lower().startswith(("file:", "containerfile:"))]
        for path in files or [_resource_path(r) for r in resources[:1]] or [d.get("ProcessName") or "?"]:
            detections.append(
                Detection(
                    source="defender",
                    file=path,
                    threat=threat or f"ThreatID {threat_id}",
                    action=action,
                    at=parse_time(d.get("InitialDetectionTime")),
                    ref=str(d.get("DetectionID") or ""),
                    extra={"user": d.get("DomainUser"), "process": d.get("ProcessName")},
                )
            )
    return status, detections


_EVT_NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"


@dataclass(frozen=True)
class WinEvent:
    event_id: int
    record_id: int
    at: datetime | None
    provider: str
    data: dict[str, str]


def parse_wevtutil_xml(text: str | bytes) -> list[WinEvent]:
    """`wevtutil qe … /f:xml` output (a run of <Event> elements with no root) → events, newest first as given."""
    if isinstance(text, bytes):
        text = decode_output(text)
    text = re.sub(r"<\?xml[^>]*\?>", "", text).strip()
    if not text:
        return []
    try:
        root = ET.fromstring(f"<Events>{text}</Events>")
    except ET.ParseError as exc:
        raise ParseError(f"wevtutil output is not event XML: {exc}") from None
    events = []
    for ev in root.iter(f"{_EVT_NS}Event"):
        system = ev.find(f"{_EVT_NS}System")
        if system is None:
            raise ParseError("an <Event> without <System>")
        eid = system.findtext(f"{_EVT_NS}EventID")
        if eid is None or not eid.strip().isdigit():
            raise ParseError("an <Event> without a numeric EventID")
        created = system.find(f"{_EVT_NS}TimeCreated")
        provider = system.find(f"{_EVT_NS}Provider")
        data = {}
        for d in ev.iterfind(f"{_EVT_NS}EventData/{_EVT_NS}Data"):
            name = d.get("Name")
            if name:
                data[name] = (d.text or "").strip()
        events.append(
            WinEvent(
                event_id=int(eid),
                record_id=int(system.findtext(f"{_EVT_NS}EventRecordID") or 0),
                at=parse_time(created.get("SystemTime")) if created is not None else None,
                provider=provider.get("Name", "") if provider is not None else "",
                data=data,
            )
        )
    return events


@dataclass(frozen=True)
class DefenderEvents:
    detections: list[Detection]
    protection_off_at: datetime | None  # last "disabled" event not followed by an "enabled" one
    protection_off_event: int | None
    signature_update_failed_at: datetime | None


def interpret_defender_events(events: list[WinEvent]) -> DefenderEvents:
    """Detections (1006/1015/1116, actions from 1007/1117 and failures 1008/1118/1119) and protection switches."""
    by_key: dict[tuple[str, str], Detection] = {}
    ordered = sorted(events, key=lambda e: (e.at or datetime.min.replace(tzinfo=timezone.utc), e.record_id))
    off_at: datetime | None = None
    off_id: int | None = None
    sig_failed: datetime | None = None
    for ev in ordered:
        eid = ev.event_id
        if eid in DEFENDER_PROTECTION_OFF_EVENTS:
            off_at, off_id = ev.at, eid
        elif eid in DEFENDER_PROTECTION_ON_EVENTS:
            off_at, off_id = None, None
        elif eid in DEFENDER_SIGNATURE_FAILED_EVENTS:
            sig_failed = ev.at
        elif eid in (*DEFENDER_DETECTION_EVENTS, *DEFENDER_ACTION_EVENTS, *DEFENDER_ACTION_FAILED_EVENTS):
            # One event may name several resources ("file:_C:\\a;file:_C:\\b"): one detection each.
            paths = [_resource_path(p) for p in ev.data.get("Path", "").split(";") if p.strip()]
            threat = ev.data.get("Threat Name") or f"ThreatID {ev.data.get('Threat ID', '?')}"
            for path in paths or [ev.data.get("Process Name") or "?"]:
                key = (path.lower(), threat)
                prev = by_key.get(key)
                if eid in DEFENDER_ACTION_FAILED_EVENTS:
                    action = "failed"
                elif eid in DEFENDER_ACTION_EVENTS:
                    action = _ACTION_ID.get(_int(ev.data.get("Action ID")), "unknown")
                else:
                    action = prev.action if prev else "detected"
                by_key[key] = Detection(
                    source="defender",
                    file=path,
                    threat=threat,
                    action=action,
                    at=prev.at if prev else ev.at,
                    ref=prev.ref if prev else f"evt{ev.record_id}",
                    extra={
                        "event_id": eid,
                        "severity_id": _int(ev.data.get("Severity ID")),
                        "user": ev.data.get("Detection User"),
                    },
                )
    return DefenderEvents(list(by_key.values()), off_at, off_id, sig_failed)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


# --------------------------------------------------------------------------------------------------
# ClamAV

# clamd log line: optional LogTime prefix "Fri Nov 27 17:37:11 2026 -> ", optional "ScanOnAccess: ",
# then "<path>: <signature> FOUND" (ExtendedDetectionInfo appends "(md5:size)" to the signature).
_CLAMD_TIME = r"(?P<time>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}) -> "
_CLAMD_FOUND = re.compile(
    rf"^(?:{_CLAMD_TIME})?(?:ScanOnAccess: |OnAccess: )?(?P<file>.+): (?P<threat>\S+?)(?:\([0-9a-f]+:\d+\))? FOUND$"
)


def parse_clamd_line(line: str, source: str = "clamav") -> Detection | None:
    m = _CLAMD_FOUND.match(line.rstrip("\r\n"))
    if not m:
        return None
    at = None
    if m.group("time"):
        try:
            # clamd writes local time without a zone.
            at = datetime.strptime(m.group("time"), "%a %b %d %H:%M:%S %Y").astimezone(timezone.utc)
        except ValueError:
            at = None
    return Detection(source=source, file=m.group("file"), threat=m.group("threat"), action="reported", at=at)


def parse_clamd_replies(data: bytes) -> tuple[list[Detection], list[str]]:
    """zSCAN/zCONTSCAN replies (NUL-terminated, optionally "N: " prefixed under IDSESSION) → detections, errors."""
    detections, errors = [], []
    for raw in data.split(b"\0"):
        reply = raw.decode("utf-8", errors="replace").strip()
        if not reply:
            continue
        reply = re.sub(r"^\d+: ", "", reply)
        if reply.endswith(" FOUND"):
            det = parse_clamd_line(reply)
            if det is not None:
                detections.append(det)
        elif reply.endswith(" ERROR"):
            errors.append(reply)
    return detections, errors


def parse_clamd_version(reply: bytes) -> tuple[str, int | None, datetime | None]:
    """zVERSION → (engine, database version, database date). Custom databases alone give neither."""
    text = reply.rstrip(b"\0").decode("utf-8", errors="replace").strip()
    if not text.startswith("ClamAV "):
        raise ParseError(f"not a clamd VERSION reply: {text[:80]!r}")
    parts = text.split("/")
    engine = parts[0].removeprefix("ClamAV ").strip()
    db_version = int(parts[1]) if len(parts) > 1 and parts[1].strip().isdigit() else None
    db_date = None
    if len(parts) > 2:
        try:
            db_date = datetime.strptime(parts[2].strip(), "%a %b %d %H:%M:%S %Y").replace(tzinfo=timezone.utc)
        except ValueError:
            db_date = None
    return engine, db_version, db_date


# --------------------------------------------------------------------------------------------------
# Generic product logs: a configured regex with named groups file, threat and optionally action, time.


def compile_log_pattern(pattern: str) -> re.Pattern[str]:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    missing = {"file", "threat"} - set(rx.groupindex)
    if missing:
        raise ValueError(f"the pattern needs named groups (?P<file>…) and (?P<threat>…); missing: {sorted(missing)}")
    return rx


def parse_log_line(
    rx: re.Pattern[str], line: str, source: str, actions: dict[str, str] | None = None
) -> Detection | None:
    m = rx.search(line)
    if not m:
        return None
    groups = m.groupdict()
    raw_action = (groups.get("action") or "").strip()
    action = (actions or {}).get(raw_action, raw_action or "unknown")
    at = parse_time(groups["time"].replace(" ", "T", 1)) if groups.get("time") else None
    if at is not None and groups.get("time") and not re.search(r"(Z|[+-]\d\d:?\d\d)$", groups["time"].strip()):
        at = at.replace(tzinfo=None).astimezone(timezone.utc)  # product logs write local time
    return Detection(source=source, file=groups["file"].strip(), threat=groups["threat"].strip(), action=action, at=at)
