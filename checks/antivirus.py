"""Antivirus signals (trigger 5): detections, protection switched off, stale signatures.

Sources: Windows Defender (PowerShell JSON + operational event log through wevtutil, no pywin32),
ClamAV (the clamd socket: PING, VERSION, scans of configured folders; the clamd log), and the log
files of other products (a regex and an encoding such as GBK). Commands and parsers: av_parsers.py.

A detection is an event, not a state: it stays an open condition for `detection_hold` seconds after
it was last seen (re-detection extends it), then clears by itself. What was read from logs and which
detections are held is saved with each round, so a restarted agent neither loses nor repeats them.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hisguard.checks import av_parsers as avp
from hisguard.checks import fswatch, logtail
from hisguard.checks.base import Emit, Observation, ProbeConfig, ProbeContext, ProbeError

Role = Literal["workstation", "app_server", "db_server"]
ROLE_TEXT = {
    "workstation": "工作站/workstation",
    "app_server": "应用服务器/application server",
    "db_server": "数据库服务器/database server",
}


def role_suffix(role: str) -> str:
    """Checks carry the host's role so the classifier's table can tell a server from a workstation."""
    return "" if role == "workstation" else ".server"


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClamdSource(_Source):
    socket: str = Field(description="clamd LocalSocket path, or HOST:PORT of its TCPAddr/TCPSocket")
    scan_paths: list[Path] = Field(default_factory=list, description="Folders scanned for new or changed files")
    max_files: int = Field(2000, ge=1, description="Files scanned at most per round (the rest next round)")
    log: Path | None = Field(None, description="clamd LogFile, followed for FOUND lines (on-access, other scans)")
    log_encoding: str = "utf-8"
    database_dir: Path | None = Field(None, description="DatabaseDirectory: signature age from its newest file")


class DefenderSource(_Source):
    powershell: str = "powershell.exe"
    wevtutil: str = "wevtutil.exe"
    events: bool = Field(True, description="Also read the Defender operational event log")


class LogSource(_Source):
    name: str = Field(min_length=1, description="Product name as staff know it (火绒, 360, Symantec …)")
    path: Path
    pattern: str = Field(description="Regex with named groups file, threat and optionally action, time")
    encoding: str = Field("utf-8", description="utf-8, gbk, gb18030 …")
    actions: dict[str, str] = Field(default_factory=dict, description="Product action words → quarantined/removed…")
    from_start: bool = Field(False, description="On the very first run read the whole file (else only new lines)")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        avp.compile_log_pattern(v)
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        try:
            name = codecs.lookup(v).name
        except LookupError:
            raise ValueError(f"unknown encoding {v!r} (e.g. utf-8, gbk, gb18030)") from None
        if name.startswith(("utf-16", "utf-32")):
            # Lines are split on the byte 0x0A, which these encodings use inside characters.
            raise ValueError(f"{v}: only byte-oriented encodings are supported (utf-8, gbk, gb18030 …)")
        return v


class Config(ProbeConfig):
    interval: float = Field(30.0, gt=0, le=86400)
    timeout: float = Field(20.0, gt=0)
    role: Role = Field("workstation", description="workstation, app_server or db_server (how urgent a hit is)")
    detection_hold: float = Field(3600.0, ge=1, description="Seconds a detection stays open after last seen")
    signature_max_age_days: float = Field(7.0, gt=0, description="Older signatures are reported stale")
    clamd: ClamdSource | None = None
    defender: DefenderSource | None = None
    logs: list[LogSource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_source(self) -> Config:
        if not (self.clamd or self.defender or self.logs):
            raise ValueError("configure at least one source: clamd, defender or logs")
        names = [s.name for s in self.logs]
        if len(set(names)) != len(names):
            raise ValueError("log sources need distinct names")
        return self


# --------------------------------------------------------------------------------------------------
# Persistent memory: held detections and log positions, saved atomically together.


def _state_path(ctx: ProbeContext, cfg: Config) -> Path:
    return ctx.state_dir / f"antivirus-{cfg.name or 'antivirus'}.json"


def _load_state(ctx: ProbeContext, cfg: Config) -> dict[str, Any]:
    st = ctx.memory.get("av_state")
    if st is None:
        try:
            st = json.loads(_state_path(ctx, cfg).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            st = {}
        st.setdefault("held", {})
        st.setdefault("tails", {})
        ctx.memory["av_state"] = st
    return st


def _save_state(ctx: ProbeContext, cfg: Config, st: dict[str, Any]) -> None:
    path = _state_path(ctx, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(st, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _hold(st: dict[str, Any], det: avp.Detection, now: float) -> None:
    prev = st["held"].get(det.subject)
    st["held"][det.subject] = {
        "source": det.source,
        "file": det.file,
        "threat": det.threat,
        # A later report of the same detection says what was finally done (1116 detected → 1117 quarantined).
        "action": det.action if det.action not in ("detected", "reported", "unknown") or not prev else prev["action"],
        "detected_at": (prev or {}).get("detected_at") or (det.at or datetime.now(timezone.utc)).isoformat(),
        "first_seen": (prev or {}).get("first_seen", now),
        "last_seen": now,
        "ref": det.ref,
    }


# --------------------------------------------------------------------------------------------------
# ClamAV


def _clamd_connect(address: str, timeout: float) -> socket.socket:
    if address.startswith("/") or not address.rpartition(":")[2].isdigit():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address
    else:
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
        target = (host.strip("[]"), int(port))
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


def _recv_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\0"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def clamd_command(address: str, command: str, timeout: float) -> bytes:
    with _clamd_connect(address, timeout) as sock:
        sock.sendall(f"z{command}\0".encode())
        return _recv_reply(sock)


def _files_to_scan(
    src: ClamdSource, seen: dict[str, list[int]], skip: set[str]
) -> tuple[list[str], dict[str, list[int]]]:
    """New or changed files under the scan paths (canaries excluded: our scans never touch the bait)."""
    todo: list[str] = []
    now_seen: dict[str, list[int]] = {}
    for root in src.scan_paths:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                if path in skip:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                sig = [st.st_ino, st.st_size, st.st_mtime_ns]
                now_seen[path] = sig
                if seen.get(path) != sig and len(todo) < src.max_files:
                    todo.append(path)
    for path in todo[src.max_files :]:
        now_seen.pop(path, None)
    return todo, now_seen


def _clamd_scan(src: ClamdSource, files: list[str], deadline: float) -> tuple[list[avp.Detection], list[str], int]:
    """Scan files one by one in one IDSESSION; returns detections, errors and how many were scanned."""
    detections: list[avp.Detection] = []
    errors: list[str] = []
    done = 0
    if not files:
        return detections, errors, 0
    with _clamd_connect(src.socket, max(0.5, deadline - time.monotonic())) as sock:
        sock.sendall(b"zIDSESSION\0")
        for path in files:
            if time.monotonic() > deadline:
                break
            if "\0" in path or "\n" in path:
                errors.append(f"{path!r}: name cannot be sent to clamd")
                done += 1
                continue
            sock.sendall(f"zSCAN {path}\0".encode())
            found, errs = avp.parse_clamd_replies(_recv_reply(sock))
            detections.extend(found)
            errors.extend(errs)
            done += 1
        with contextlib.suppress(OSError):
            sock.sendall(b"zEND\0")
    return detections, errors, done


def _signature_age_days(src: ClamdSource, db_date: datetime | None) -> float | None:
    if db_date is not None:
        return (datetime.now(timezone.utc) - db_date).total_seconds() / 86400
    if src.database_dir is None:
        return None
    newest = 0.0
    try:
        for p in src.database_dir.iterdir():
            if p.suffix in (".cvd", ".cld", ".cud", ".hdb", ".hsb", ".ndb", ".ldb", ".mdb", ".msb", ".yara", ".yar"):
                newest = max(newest, p.stat().st_mtime)
    except OSError:
        return None
    return (time.time() - newest) / 86400 if newest else None


def _clamav(cfg: Config, ctx: ProbeContext, st: dict[str, Any], deadline: float) -> tuple[list[Observation], dict]:
    src = cfg.clamd
    assert src is not None
    sfx = role_suffix(cfg.role)
    obs: list[Observation] = []
    info: dict[str, Any] = {}
    try:
        pong = clamd_command(src.socket, "PING", max(0.5, min(5.0, deadline - time.monotonic())))
        if pong.rstrip(b"\0") != b"PONG":
            raise avp.ParseError(f"clamd answered {pong[:40]!r} to PING")
        engine, db_version, db_date = avp.parse_clamd_version(clamd_command(src.socket, "VERSION", 5.0))
    except (OSError, avp.ParseError) as exc:
        obs.append(
            Observation(
                f"av.protection{sfx}",
                "clamd",
                False,
                ctx.impact,
                name="ClamAV (clamd)",
                detail={"reason": f"clamd not answering on {src.socket}: {exc}", "role": cfg.role},
            )
        )
        return obs, info
    obs.append(
        Observation(
            f"av.protection{sfx}",
            "clamd",
            True,
            ctx.impact,
            name="ClamAV (clamd)",
            detail={"engine": engine, "db_version": db_version, "role": cfg.role},
        )
    )
    age = _signature_age_days(src, db_date)
    obs.append(
        Observation(
            "av.signatures",
            "clamd",
            None if age is None else age <= cfg.signature_max_age_days,
            ctx.impact,
            value=None if age is None else round(age, 2),
            name="ClamAV",
            detail={"max_age_days": cfg.signature_max_age_days, "db_version": db_version},
        )
    )
    if src.scan_paths:
        from hisguard.checks.canary import canary_paths

        seen = st.setdefault("scanned", {})
        files, now_seen = _files_to_scan(src, seen, canary_paths(ctx.state_dir))
        try:
            found, errors, done = _clamd_scan(src, files, deadline - min(1.0, cfg.timeout * 0.2))
        except OSError as exc:
            found, errors, done = [], [f"scan interrupted: {exc}"], 0
        # Files not reached this round stay "unseen" so the next round scans them.
        for path in files[done:]:
            now_seen.pop(path, None)
        st["scanned"] = now_seen
        info.update(scanned=done, scan_errors=errors[:10])
        now = time.time()
        for det in found:
            _hold(st, det, now)
    return obs, info


# --------------------------------------------------------------------------------------------------
# Log files (clamd's own log and other products')


def _follow(st: dict[str, Any], key: str, path: Path, encoding: str, from_start: bool) -> tuple[list[str], list[str]]:
    pos = logtail.Position.from_dict(st["tails"].get(key))
    res = logtail.read_new(path, pos, from_start=from_start)
    st["tails"][key] = res.position.as_dict()
    return [ln.decode(encoding, errors="replace") for ln in res.lines], res.notes


def _logs(cfg: Config, st: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    now = time.time()
    if cfg.clamd and cfg.clamd.log:
        lines, notes = _follow(st, "clamd", cfg.clamd.log, cfg.clamd.log_encoding, False)
        for line in lines:
            if (det := avp.parse_clamd_line(line)) is not None:
                _hold(st, det, now)
        if notes:
            info["clamd_log"] = notes
    for src in cfg.logs:
        rx = avp.compile_log_pattern(src.pattern)
        lines, notes = _follow(st, f"log:{src.name}", src.path, src.encoding, src.from_start)
        for line in lines:
            if (det := avp.parse_log_line(rx, line, f"log:{src.name}", src.actions)) is not None:
                _hold(st, det, now)
        if notes:
            info[f"log:{src.name}"] = notes
    return info


# --------------------------------------------------------------------------------------------------
# Windows Defender


def run_command(argv: list[str], timeout: float) -> bytes:
    """Run a console program and return its output bytes (the one place Defender commands execute)."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ProbeError(f"{argv[0]} not found (Windows Defender sources need Windows)") from None
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{argv[0]} did not finish within {timeout:g}s") from None
    if proc.returncode != 0 and not proc.stdout:
        raise ProbeError(f"{argv[0]} failed ({proc.returncode}): {avp.decode_output(proc.stderr)[:300]}")
    return proc.stdout


def _defender(cfg: Config, ctx: ProbeContext, st: dict[str, Any], deadline: float) -> list[Observation]:
    src = cfg.defender
    assert src is not None
    sfx = role_suffix(cfg.role)
    runner = ctx.memory.get("run_command", run_command)  # tests replay recorded outputs here
    status, detections = avp.parse_defender_report(
        runner(avp.defender_status_argv(src.powershell), max(1.0, deadline - time.monotonic()))
    )
    events = None
    if src.events:
        xml = runner(
            avp.defender_events_argv(cfg.detection_hold, wevtutil=src.wevtutil), max(1.0, deadline - time.monotonic())
        )
        events = avp.interpret_defender_events(avp.parse_wevtutil_xml(xml))
        detections = detections + events.detections
    now = time.time()
    for det in detections:
        # The detection history goes back months: only what happened within the hold is news.
        if det.at is None or now - det.at.timestamp() <= cfg.detection_hold:
            _hold(st, det, now)
    off = list(status.switches_off)
    detail: dict[str, Any] = {"switches_off": off, "running_mode": status.running_mode, "role": cfg.role}
    if status.service_stopped:
        detail["reason"] = "Defender service (WinDefend) stopped"
    if events and events.protection_off_at:
        detail["disabled_event"] = events.protection_off_event
        detail["disabled_at"] = events.protection_off_at.isoformat()
    obs = [Observation(f"av.protection{sfx}", "defender", not off, ctx.impact, name="Windows Defender", detail=detail)]
    age = status.signature_age_days
    stale = status.out_of_date or (age is not None and age > cfg.signature_max_age_days)
    sig_detail: dict[str, Any] = {"version": status.signature_version, "max_age_days": cfg.signature_max_age_days}
    if events and events.signature_update_failed_at:
        sig_detail["update_failed_at"] = events.signature_update_failed_at.isoformat()
    obs.append(
        Observation(
            "av.signatures",
            "defender",
            None if age is None and not status.out_of_date else not stale,
            ctx.impact,
            value=None if age is None else round(age, 2),
            name="Windows Defender",
            detail=sig_detail,
        )
    )
    return obs


# --------------------------------------------------------------------------------------------------


def _label(threat: str, file: str) -> str:
    """Threat and file for the title, short enough for any title (the evidence keeps the full path)."""
    threat = threat[:120]
    return f"{threat} — {file if len(file) <= 200 else '…' + file[-199:]}"


def _round(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    deadline = time.monotonic() + cfg.timeout * 0.9
    st = _load_state(ctx, cfg)
    obs: list[Observation] = []
    info: dict[str, Any] = {}
    errors: list[str] = []
    if cfg.clamd:
        got, more = _clamav(cfg, ctx, st, deadline)
        obs.extend(got)
        info.update(more)
    if cfg.defender:
        try:
            obs.extend(_defender(cfg, ctx, st, deadline))
        except (ProbeError, avp.ParseError) as exc:
            errors.append(f"defender: {exc}")
    info.update(_logs(cfg, st))
    now = time.time()
    sfx = role_suffix(cfg.role)
    for subject, held in list(st["held"].items()):
        if now - held["last_seen"] > cfg.detection_hold:
            del st["held"][subject]  # the event is over; the condition clears
            continue
        obs.append(
            Observation(
                f"av.detection{sfx}",
                subject,
                False,
                ctx.impact,
                name=_label(held["threat"], held["file"]),
                detail={k: held[k] for k in ("source", "file", "threat", "action", "detected_at")}
                | {"role": cfg.role, "hold_s": cfg.detection_hold},
            )
        )
    _save_state(ctx, cfg, st)
    if errors and not obs:
        raise ProbeError("; ".join(errors))
    obs.append(Observation("av.sources", "antivirus", None, ctx.impact, detail={"errors": errors, **info}))
    return obs


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    return await ctx.blocking("antivirus", _round, cfg, ctx)


async def watch(cfg: Config, ctx: ProbeContext, emit: Emit) -> None:
    """New files in scanned folders and new log lines ask for a round at once (the round itself scans)."""
    folders = {str(p) for p in (cfg.clamd.scan_paths if cfg.clamd else [])}
    logs = [p for p in ([cfg.clamd.log] if cfg.clamd and cfg.clamd.log else []) + [s.path for s in cfg.logs]]
    folders |= {str(p.parent) for p in logs}
    log_names = {(str(p.parent), p.name) for p in logs}
    scan_folders = {str(p) for p in (cfg.clamd.scan_paths if cfg.clamd else [])}
    try:
        ino = fswatch.Inotify.open()
    except OSError:
        return  # no file events here: the schedule alone drives the rounds
    with ino:
        for folder in folders:
            with contextlib.suppress(OSError):
                ino.add(folder, fswatch.IN_CLOSE_WRITE | fswatch.IN_MOVED_TO | fswatch.IN_MODIFY)
        while True:
            events = await ino.events()
            if any(
                (e.folder in scan_folders and e.mask & (fswatch.IN_CLOSE_WRITE | fswatch.IN_MOVED_TO))
                or (e.folder, e.name) in log_names
                for e in events
            ):
                await asyncio.sleep(0.05)  # let a burst of writes settle into one round
                ctx.poll_now()
