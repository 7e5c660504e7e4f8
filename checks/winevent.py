"""Windows event-log probe: System and Application events read by ID, provider and EventData fields.

Localized message text is never read (a Chinese server words every message differently): an
event is recognised by channel, provider, event ID, level and its EventData values only.
Events come from `wevtutil qe … /f:xml` (no pywin32), oldest first after a bookmark, the last
EventRecordID read per channel, kept in the agent's state directory together with the events
still held as failed: a restart neither loses nor repeats an event.

Each kind of event holds its condition failed for `hold` seconds after the last occurrence
(corrected hardware errors only from `whea_corrected_min` occurrences within that window),
then reports it healthy, so the incident resolves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from hisguard.checks.base import Observation, ProbeConfig, ProbeContext, ProbeError

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
CHANNELS = ("System", "Application")

# ---------------------------------------------------------------------------------------------
# What is watched: (channel, event ID) → kind; providers are checked per kind below.
DISK_IDS = (7, 11, 51, 153, 157)  # provider "disk": bad block, controller error, paging error, retry, removal
STORAGE_RESET_ID = 129  # storport miniports: "Reset to device … was issued" (the Time-Service uses 129 too)
WHEA_FATAL_IDS = (1, 16, 18, 46)  # generic / PCIe / processor core / memory
WHEA_CORRECTED_IDS = (17, 19, 47)
KERNEL_POWER_ID = 41
UNEXPECTED_SHUTDOWN_ID = 6008
SERVICE_CRASH_IDS = (7031, 7034)
NTFS_IDS = (55, 98)
SQL_IO_IDS = (823, 825)  # OS I/O error / read succeeded only after retries
SQL_SUSPECT_ID = 824  # page logically inconsistent (checksum, torn page): the database is damaged
SQL_LOG_FULL_ID = 9002

SYSTEM_IDS = (
    *DISK_IDS,
    STORAGE_RESET_ID,
    *WHEA_FATAL_IDS,
    *WHEA_CORRECTED_IDS,
    KERNEL_POWER_ID,
    UNEXPECTED_SHUTDOWN_ID,
    *SERVICE_CRASH_IDS,
    *NTFS_IDS,
)
APPLICATION_IDS = (*SQL_IO_IDS, SQL_SUSPECT_ID, SQL_LOG_FULL_ID)
CHANNEL_IDS: dict[str, tuple[int, ...]] = {"System": SYSTEM_IDS, "Application": APPLICATION_IDS}

STORAGE_MINIPORTS = (
    "storahci", "stornvme", "storvsc", "iastora", "iastorac", "iastoravc", "iastorv", "lsi_sas", "lsi_sas2",
    "lsi_sas3", "lsi_sss", "megasas", "megasas2i", "megasas35", "megasr", "percsas2i", "percsas3i", "hpcisss2",
    "hpsamd", "smartpqi", "arcsas", "vhdmp", "ql2300", "ql2300i", "qlfcoei", "elxfc", "elxcna", "mpio", "msdsm",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The commands, all in one place. Each is an argv list; nothing goes through a shell.
def query_command(channel: str, xpath: str, count: int, newest_first: bool = False) -> list[str]:
    cmd = ["wevtutil", "qe", channel, f"/q:{xpath}", "/f:xml", f"/c:{count}"]
    return [*cmd, "/rd:true"] if newest_first else cmd


def latest_command(channel: str) -> list[str]:
    """The channel's newest event of any kind: its record ID is the head of the log."""
    return ["wevtutil", "qe", channel, "/c:1", "/rd:true", "/f:xml"]


def xpath_after(ids: tuple[int, ...], after: int) -> str:
    return f"*[System[({_ids(ids)}) and (EventRecordID > {after})]]"


def xpath_recent(ids: tuple[int, ...], seconds: float) -> str:
    return f"*[System[({_ids(ids)}) and TimeCreated[timediff(@SystemTime) <= {int(seconds * 1000)}]]]"


def _ids(ids: tuple[int, ...]) -> str:
    return " or ".join(f"EventID={i}" for i in ids)


def decode(raw: bytes) -> str:
    """wevtutil writes to a pipe in the console code page (cp936 on a Chinese server), else UTF-8."""
    if raw.startswith(b"\xff\xfe") or raw.startswith(b"\xfe\xff"):
        return raw.decode("utf-16")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for codec in ("oem", "mbcs", "cp936"):  # oem/mbcs exist on Windows only
        try:
            return raw.decode(codec)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("utf-8", errors="replace")


def run_wevtutil(argv: list[str], timeout: float) -> str:
    """Run one wevtutil command (Windows only). Tests replace this with recorded outputs."""
    if sys.platform != "win32":
        raise ProbeError("winevent reads the Windows event log; this is not Windows")
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        out = subprocess.run(argv, capture_output=True, timeout=timeout, creationflags=flags)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"wevtutil took longer than {timeout:g}s") from None
    except OSError as exc:
        raise ProbeError(f"cannot run wevtutil: {exc}") from None
    if out.returncode != 0:
        raise ProbeError(f"wevtutil exit {out.returncode}: {decode(out.stderr).strip()[:300]}")
    return decode(out.stdout)


Runner = Callable[[list[str], float], str]
RUNNER: Runner = run_wevtutil


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


CLOCK: Callable[[], datetime] = utc_now


# ---------------------------------------------------------------------------------------------
@dataclass
class WinEvent:
    channel: str
    record_id: int
    provider: str
    event_id: int
    level: int
    time: datetime
    computer: str = ""
    data: dict[str, str] = field(default_factory=dict)  # named <Data Name="…">
    params: list[str] = field(default_factory=list)  # unnamed <Data> in order
    binary: str = ""


_EVENT_RE = re.compile(r"<Event[\s>].*?</Event>", re.S)


def parse_events(text: str) -> list[WinEvent]:
    """Events in wevtutil's XML output (no root element). An event that does not parse is skipped."""
    events = []
    for chunk in _EVENT_RE.findall(text):
        try:
            ev = _parse_one(ET.fromstring(chunk))
        except (ET.ParseError, ValueError, TypeError):
            continue
        if ev is not None:
            events.append(ev)
    return events


def _parse_one(root: ET.Element) -> WinEvent | None:
    sysel = root.find(f"{NS}System")
    if sysel is None:
        return None
    provider = sysel.find(f"{NS}Provider")
    created = sysel.find(f"{NS}TimeCreated")
    stamp = (created.get("SystemTime") if created is not None else None) or ""
    ev = WinEvent(
        channel=_text(sysel, "Channel"),
        record_id=int(_text(sysel, "EventRecordID")),
        provider=(provider.get("Name") or provider.get("EventSourceName") or "") if provider is not None else "",
        event_id=int(_text(sysel, "EventID")),
        level=int(_text(sysel, "Level") or 0),
        time=_timestamp(stamp),
        computer=_text(sysel, "Computer"),
    )
    for container in (root.find(f"{NS}EventData"), root.find(f"{NS}UserData")):
        if container is None:
            continue
        for el in container.iter():
            if el.tag == f"{NS}Data":
                value = (el.text or "").strip()
                if el.get("Name"):
                    ev.data[el.get("Name", "")] = value
                else:
                    ev.params.append(value)
            elif el.tag == f"{NS}Binary":
                ev.binary = (el.text or "").strip()
    return ev


def _text(parent: ET.Element, tag: str) -> str:
    el = parent.find(f"{NS}{tag}")
    return (el.text or "").strip() if el is not None else ""


def _timestamp(stamp: str) -> datetime:
    # SystemTime is UTC with up to 9 fractional digits ("2026-11-27T08:14:03.1234567Z").
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z?$", stamp.strip())
    if not m:
        raise ValueError(f"bad SystemTime {stamp!r}")
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    return datetime.fromisoformat(f"{m.group(1)}.{frac}+00:00")


def _utf16_hex(blob: str) -> str:
    """SCM events carry the service's key name as UTF-16LE hex in <Binary>; '' if it is not text."""
    try:
        raw = bytes.fromhex(blob)
        name = raw.decode("utf-16-le").split("\x00", 1)[0]
    except (ValueError, UnicodeDecodeError):
        return ""
    return name if name.isprintable() and 0 < len(name) <= 256 else ""


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    check: str
    subject: str
    detail: dict[str, Any]


def classify_event(ev: WinEvent, storage_providers: tuple[str, ...]) -> Match | None:
    """Which watched condition an event belongs to, from provider, ID, level and EventData only."""
    prov = ev.provider.lower()
    base = {"event_id": ev.event_id, "provider": ev.provider, "channel": ev.channel}
    if ev.channel == "System":
        if prov == "disk" and ev.event_id in DISK_IDS:
            device = ev.params[0] if ev.params else "disk"
            return Match("winevent.disk", device, base)
        if ev.event_id == STORAGE_RESET_ID and prov in storage_providers:
            device = ev.params[0] if ev.params else ev.provider
            return Match("winevent.disk", device, base)
        if prov == "microsoft-windows-whea-logger" and ev.event_id in WHEA_FATAL_IDS:
            return Match("winevent.hardware", "whea", {**base, **_whea(ev)})
        if prov == "microsoft-windows-whea-logger" and ev.event_id in WHEA_CORRECTED_IDS:
            return Match("winevent.hardware_corrected", "whea", {**base, **_whea(ev)})
        if prov == "microsoft-windows-kernel-power" and ev.event_id == KERNEL_POWER_ID:
            code = _int(ev.data.get("BugcheckCode"))
            # No bugcheck and not a sleep transition: the power went or the machine hung hard.
            power_loss = code == 0 and ev.data.get("SleepInProgress", "0") in ("0", "false")
            detail = {**base, "bugcheck_code": code, "power_loss_suspected": power_loss}
            return Match("winevent.unexpected_shutdown", "boot", detail)
        if prov == "eventlog" and ev.event_id == UNEXPECTED_SHUTDOWN_ID:
            return Match("winevent.unexpected_shutdown", "boot", base)
        if prov == "service control manager" and ev.event_id in SERVICE_CRASH_IDS:
            name = _utf16_hex(ev.binary) or ev.data.get("param1") or (ev.params[0] if ev.params else "")
            return Match("winevent.service_crash", name or "service", base) if name else None
        if prov in ("ntfs", "microsoft-windows-ntfs") and ev.event_id in NTFS_IDS:
            # 98 is also logged, at level Information, for every healthy volume at mount.
            if ev.event_id == 98 and not 1 <= ev.level <= 3:
                return None
            drive = ev.data.get("DriveName") or (ev.params[0] if ev.params else "") or ev.data.get("DeviceName", "")
            return Match("winevent.filesystem", drive or "ntfs", base)
    elif ev.channel == "Application" and (prov == "mssqlserver" or prov.startswith("mssql$")):
        if ev.event_id in SQL_IO_IDS:
            return Match("winevent.sql_io", ev.provider, base)
        if ev.event_id == SQL_SUSPECT_ID:
            return Match("winevent.sql_suspect", ev.provider, base)
        if ev.event_id == SQL_LOG_FULL_ID:
            database = ev.params[0] if ev.params else ""
            detail = {**base, "database": database, "log_reuse_wait": ev.params[1] if len(ev.params) > 1 else None}
            return Match("winevent.sql_log_full", f"{ev.provider}/{database}" if database else ev.provider, detail)
    return None


def _whea(ev: WinEvent) -> dict[str, Any]:
    keys = ("ErrorSource", "ErrorType", "PrimaryDeviceName", "SecondaryDeviceName", "ApicId", "Length")
    return {k.lower(): ev.data[k] for k in keys if ev.data.get(k)}


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
class Config(ProbeConfig):
    interval: float = Field(60.0, gt=0, le=86400)
    timeout: float = Field(30.0, gt=0)
    channels: list[str] = Field(default_factory=lambda: list(CHANNELS), description="System and/or Application")
    hold: float = Field(86400.0, gt=0, description="Seconds a condition stays failed after its last event")
    first_lookback: float = Field(86400.0, ge=0, description="With no bookmark yet, read events this far back (s)")
    max_events: int = Field(500, ge=1, le=10000, description="Events read per channel per round")
    whea_corrected_min: int = Field(10, ge=1, description="Corrected hardware errors within hold that count")
    storage_providers: list[str] = Field(
        default_factory=list, description="Extra storage miniport providers whose event 129 is a device reset"
    )

    @field_validator("channels")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CHANNELS]
        if bad:
            raise ValueError(f"unknown channel(s) {bad}; known: {', '.join(CHANNELS)}")
        if not v:
            raise ValueError("give at least one channel")
        return v


def state_path(cfg: Config, ctx: ProbeContext) -> Path:
    return ctx.state_dir / f"winevent-{cfg.name or 'winevent'}.json"


def load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"bookmarks": {}, "held": {}}
    if not isinstance(state, dict):
        return {"bookmarks": {}, "held": {}}
    state.setdefault("bookmarks", {})
    state.setdefault("held", {})
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _head(channel: str, timeout: float) -> int:
    events = parse_events(RUNNER(latest_command(channel), timeout))
    return events[0].record_id if events else 0


def read_channel(cfg: Config, channel: str, bookmark: int | None) -> tuple[list[WinEvent], int, bool]:
    """New watched events in `channel` after `bookmark`; the new bookmark; whether more are waiting."""
    ids = CHANNEL_IDS[channel]
    head = _head(channel, cfg.timeout)
    if bookmark is None:
        # First run: the recent past, newest first so a busy log still yields the latest events.
        xpath = xpath_recent(ids, cfg.first_lookback)
        events = parse_events(RUNNER(query_command(channel, xpath, cfg.max_events, newest_first=True), cfg.timeout))
        events.sort(key=lambda e: e.record_id)
        return events, max([head, *(e.record_id for e in events)]), False
    if head < bookmark:
        bookmark = 0  # the log was cleared: record IDs start over
    events = parse_events(RUNNER(query_command(channel, xpath_after(ids, bookmark), cfg.max_events), cfg.timeout))
    events = sorted((e for e in events if e.record_id > bookmark), key=lambda e: e.record_id)
    more = len(events) >= cfg.max_events
    last = events[-1].record_id if events else bookmark
    return events, (last if more else max(head, last)), more


def _round(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    path = state_path(cfg, ctx)
    state = load_state(path)
    now = CLOCK()
    storage = tuple(p.lower() for p in (*STORAGE_MINIPORTS, *cfg.storage_providers))
    held: dict[str, Any] = state["held"]
    more_waiting = False
    for channel in cfg.channels:
        bookmark = state["bookmarks"].get(channel)
        events, new_bookmark, more = read_channel(cfg, channel, bookmark)
        more_waiting |= more
        for ev in events:
            m = classify_event(ev, storage)
            if m is None:
                continue
            at = min(ev.time, now).isoformat()
            entry = held.setdefault(f"{m.check}|{m.subject}", {"check": m.check, "subject": m.subject, "times": []})
            entry["times"] = sorted([*entry["times"], at])[-1000:]
            # Later events of the same kind refine the detail (6008 after 41 keeps 41's bugcheck code).
            entry["detail"] = {**entry.get("detail", {}), **m.detail, "record_id": ev.record_id, "time": at}
        state["bookmarks"][channel] = new_bookmark
    obs = []
    for key in sorted(held):
        entry = held[key]
        times = [datetime.fromisoformat(t) for t in entry["times"]]
        recent = [t for t in times if now - t <= timedelta(seconds=cfg.hold)]
        if not times or now - max(times) > timedelta(seconds=2 * cfg.hold):
            del held[key]  # reported healthy for a whole hold already: forget it
            continue
        entry["times"] = [t.isoformat() for t in recent] or [max(times).isoformat()]
        needed = cfg.whea_corrected_min if entry["check"] == "winevent.hardware_corrected" else 1
        detail = {**entry["detail"], "events_in_hold": len(recent), "hold_s": cfg.hold}
        obs.append(
            Observation(entry["check"], entry["subject"], len(recent) < needed, ctx.impact, float(len(recent)), None,
                        detail)
        )  # fmt: skip
    # Bookmarks and held events are written together, after the round: a crash before this line
    # re-reads the same events next time, a crash after it finds them held; none is lost or doubled.
    save_state(path, state)
    if more_waiting:
        ctx.poll_now()
    return obs


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    return await ctx.blocking("winevent", _round, cfg, ctx)
