"""Ransomware canaries (trigger 5): bait files that nobody has a reason to touch.

The agent plants realistic documents (Chinese file names, fee-report contents) in configured folders
and remembers their content hash. Any rewrite, rename or deletion of one trips it at once through
file events (inotify; polling where there is none) — an encrypting rewrite is named as such by the
entropy of the new content. A burst of renames to unusual extensions in the watched folders is a
second signal. A tripped canary stays tripped (it is evidence) until re-armed: by deleting its
entry in the registry, or automatically after `rearm_after` seconds if that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from hisguard.checks import fswatch
from hisguard.checks.antivirus import Role, role_suffix
from hisguard.checks.base import Emit, Observation, ProbeConfig, ProbeContext, ProbeError

DEFAULT_NAMES = ("门诊收费日报表_2026年11月.csv", "住院患者费用明细（勿删）.csv", "医保结算对账单.txt")
NORMAL_EXTENSIONS = (
    "doc docx xls xlsx ppt pptx pdf txt csv rtf wps et dps xml json ini log cfg conf bak zip rar 7z gz tar "
    "jpg jpeg png gif bmp tif tiff dcm dicom mp4 avi wav mp3 html htm exe dll sys msi bat cmd ps1 py sql mdf ldf "
    "ndf trn dbf db sqlite tmp dat lnk url md ofd"
).split()
ENCRYPTED_ENTROPY = 7.2  # bits per byte; text/CSV sits near 4–5, ciphertext near 8
_REGISTRY = "canaries-{job}.json"
log = logging.getLogger("hisguard.checks.canary")


class Config(ProbeConfig):
    interval: float = Field(30.0, gt=0, le=86400)
    role: Role = Field("workstation", description="workstation, app_server or db_server")
    folders: list[Path] = Field(min_length=1, description="Folders to bait: HIS file shares, backup folders")
    names: list[str] = Field(default_factory=lambda: list(DEFAULT_NAMES), min_length=1)
    mode: Literal["auto", "inotify", "poll"] = Field("auto", description="File events, or polling (fallback)")
    poll_interval: float = Field(0.25, gt=0, le=10, description="Seconds between checks when polling")
    rename_burst: int = Field(8, ge=2, description="Renames to unusual extensions within rename_window = a burst")
    rename_window: float = Field(10.0, gt=0)
    burst_hold: float = Field(3600.0, ge=1, description="Seconds a rename burst stays open after the last one")
    normal_extensions: list[str] = Field(default_factory=lambda: list(NORMAL_EXTENSIONS))
    rearm_after: float = Field(0, ge=0, description="Re-plant a tripped canary after this many seconds; 0: by hand")

    @field_validator("names")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        for n in names:
            if not n or "/" in n or "\\" in n or n in (".", ".."):
                raise ValueError(f"canary name {n!r} must be a plain file name")
        return names


def canary_paths(state_dir: Path) -> set[str]:
    """Every canary planted by any canary job of this agent (other probes' scans skip them)."""
    paths: set[str] = set()
    for reg in state_dir.glob(_REGISTRY.format(job="*")):
        with contextlib.suppress(OSError, ValueError):
            paths.update(json.loads(reg.read_text(encoding="utf-8")).get("canaries", {}))
    return paths


def subject_of(path: str) -> str:
    """The canary's path names its condition; a very long one is hashed to fit the incident key."""
    return path if len(path) <= 250 else "canary-" + hashlib.sha1(path.encode(errors="replace")).hexdigest()[:16]


def entropy(data: bytes) -> float:
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


def bait_content(name: str) -> bytes:
    """A plausible fee report in the encoding Chinese office software writes (GBK)."""
    rng = random.Random()
    depts = ["门诊收费", "急诊收费", "住院药房", "门诊药房", "检验科", "放射科"]
    rows = ["日期,科室,病人编号,姓名,项目,金额(元),医保类别"]
    for _ in range(60):
        rows.append(
            f"2026-11-{rng.randint(1, 27):02d},{rng.choice(depts)},{rng.randint(100000, 999999)},"
            f"{rng.choice('王李张刘陈杨赵黄')}{rng.choice('伟芳娜敏静丽强磊军洋')},"
            f"{rng.choice(['挂号费', '诊查费', '西药费', '检查费', '化验费'])},"
            f"{rng.randint(5, 3000)}.{rng.randint(0, 99):02d},"
            f"{rng.choice(['城镇职工', '城乡居民', '自费'])}"
        )
    if not name.lower().endswith(".csv"):
        rows.insert(0, f"{Path(name).stem}\n")
    return ("\r\n".join(rows) + "\r\n").encode("gbk")


class Canaries:
    """The registry of planted canaries (path → hash, size, inode, trip) for one job, kept in state_dir."""

    def __init__(self, cfg: Config, ctx: ProbeContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.path = ctx.state_dir / _REGISTRY.format(job=cfg.name or "canary")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self.canaries: dict[str, dict[str, Any]] = data.get("canaries", {})
        self.burst: dict[str, Any] | None = data.get("burst")
        self.renames: deque[tuple[float, str]] = deque()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump({"canaries": self.canaries, "burst": self.burst}, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def wanted(self) -> list[str]:
        return [os.path.join(str(folder), name) for folder in self.cfg.folders for name in self.cfg.names]

    def plant(self) -> list[str]:
        """Plant missing canaries; never overwrite a file that is not ours. Returns problems."""
        problems = []
        changed = False
        now = time.time()
        for path in self.wanted():
            rec = self.canaries.get(path)
            if rec and rec.get("tripped"):
                if not self.cfg.rearm_after or now - rec["tripped"]["ts"] < self.cfg.rearm_after:
                    continue
                rec = None  # re-arm: plant afresh below, over whatever is left
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if rec:
                continue
            if os.path.lexists(path):
                problems.append(f"{path}: a file of that name exists and is not a canary; left alone")
                continue
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                content = bait_content(os.path.basename(path))
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
                # Look like an ordinary old document.
                old = now - 86400 * random.randint(20, 200)
                os.utime(path, (old, old))
                st = os.stat(path)
            except OSError as exc:
                problems.append(f"{path}: cannot plant: {exc.strerror}")
                continue
            self.canaries[path] = {
                "sha256": hashlib.sha256(content).hexdigest(),
                "size": len(content),
                "ino": st.st_ino,
                "mtime_ns": st.st_mtime_ns,
                "planted_at": now,
                "tripped": None,
            }
            changed = True
        for path in list(self.canaries):
            if path not in self.wanted() and not self.canaries[path].get("tripped"):
                del self.canaries[path]  # no longer configured
                changed = True
        if changed:
            self.save()
        return problems

    def inspect(self, path: str) -> dict[str, Any] | None:
        """Compare a canary with its baseline; the trip (what happened) if it was touched."""
        rec = self.canaries.get(path)
        if rec is None or rec.get("tripped"):
            return None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            # Gone: renamed if the same inode is still in the folder under another name.
            with contextlib.suppress(OSError), os.scandir(os.path.dirname(path)) as it:
                for entry in it:
                    if entry.inode() == rec["ino"] and entry.is_file(follow_symlinks=False):
                        return {"how": "renamed", "renamed_to": entry.name}
            return {"how": "deleted"}
        except OSError as exc:
            return {"how": "unreadable", "error": exc.strerror}
        if st.st_size == rec["size"] and st.st_ino == rec["ino"] and st.st_mtime_ns == rec["mtime_ns"]:
            return None  # unchanged on disk: no need to read it
        try:
            with open(path, "rb") as f:
                data = f.read(8 << 20)
        except OSError as exc:
            return {"how": "unreadable", "error": exc.strerror}
        if hashlib.sha256(data).hexdigest() == rec["sha256"]:
            rec["ino"], rec["mtime_ns"] = st.st_ino, st.st_mtime_ns  # touched or copied back, content intact
            return None
        ent = entropy(data[:65536])
        how = "encrypted" if len(data) >= 64 and ent >= ENCRYPTED_ENTROPY else "modified"
        return {"how": how, "entropy": round(ent, 2), "size": len(data), "was_size": rec["size"]}

    def trip(self, path: str, trip: dict[str, Any]) -> None:
        trip = {**trip, "ts": time.time(), "at": datetime.now(timezone.utc).isoformat()}
        self.canaries[path]["tripped"] = trip
        self.save()

    def note_rename(self, name: str, now: float) -> bool:
        """Count a rename to an unusual extension; True when the count makes a new or longer burst."""
        ext = os.path.splitext(name)[1].lower().lstrip(".")
        if ext and ext in {e.lower().lstrip(".") for e in self.cfg.normal_extensions}:
            return False
        self.renames.append((now, name))
        while self.renames and now - self.renames[0][0] > self.cfg.rename_window:
            self.renames.popleft()
        if len(self.renames) < self.cfg.rename_burst:
            return False
        samples = [n for _, n in list(self.renames)[-5:]]
        prev = self.burst or {}
        self.burst = {
            "first_at": prev.get("first_at") or datetime.now(timezone.utc).isoformat(),
            "last_ts": now,
            "count": max(len(self.renames), prev.get("count", 0)),
            "window_s": self.cfg.rename_window,
            "samples": samples,
        }
        self.save()
        return True

    def observations(self) -> list[Observation]:
        sfx = role_suffix(self.cfg.role)
        impact = self.ctx.impact
        obs = []
        for path, rec in sorted(self.canaries.items()):
            trip = rec.get("tripped")
            detail: dict[str, Any] = {"path": path, "role": self.cfg.role}
            if trip:
                detail.update(trip)
            obs.append(
                Observation(
                    f"canary.tripped{sfx}",
                    subject_of(path),
                    not trip,
                    impact,
                    name=os.path.basename(path),
                    detail=detail,
                )
            )
        if self.burst and time.time() - self.burst["last_ts"] > self.cfg.burst_hold:
            self.burst = None
            self.save()
        if self.burst:
            folders = ", ".join(str(f) for f in self.cfg.folders)
            obs.append(
                Observation(
                    f"canary.rename_burst{sfx}",
                    "folders",
                    False,
                    impact,
                    value=float(self.burst["count"]),
                    name=folders[:120],
                    detail={**self.burst, "role": self.cfg.role},
                )
            )
        return obs


def _registry(cfg: Config, ctx: ProbeContext) -> Canaries:
    reg = ctx.memory.get("canaries")
    if reg is None:
        reg = ctx.memory["canaries"] = Canaries(cfg, ctx)
    return reg


def _round(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    reg = _registry(cfg, ctx)
    problems = reg.plant()
    for path in list(reg.canaries):
        if (trip := reg.inspect(path)) is not None:
            reg.trip(path, trip)
    if not reg.canaries:
        raise ProbeError("no canary could be planted: " + "; ".join(problems))
    obs = reg.observations()
    if problems:
        obs.append(Observation("canary.plant", "problems", None, ctx.impact, detail={"problems": problems}))
    return obs


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    # Runs on the loop thread like the watcher: the registry has one writer at a time.
    return _round(cfg, ctx)


_CANARY_MASK = (
    fswatch.IN_MODIFY
    | fswatch.IN_CLOSE_WRITE
    | fswatch.IN_ATTRIB
    | fswatch.IN_MOVED_FROM
    | fswatch.IN_MOVED_TO
    | fswatch.IN_CREATE
    | fswatch.IN_DELETE
    | fswatch.IN_DELETE_SELF
    | fswatch.IN_MOVE_SELF
)
_SETTLE = 0.1  # seconds to let a rewrite finish before judging its content


async def watch(cfg: Config, ctx: ProbeContext, emit: Emit) -> None:
    reg = _registry(cfg, ctx)
    reg.plant()
    ino = None
    if cfg.mode != "poll":
        try:
            ino = fswatch.Inotify.open()
            for folder in cfg.folders:
                ino.add(str(folder), _CANARY_MASK)
        except OSError:
            if ino is not None:
                ino.close()
            if cfg.mode == "inotify":
                raise
            ino = None
    ctx.memory["canary_watch"] = "inotify" if ino else "poll"
    if ino is None:
        await _poll(cfg, ctx, reg, emit)
        return
    with ino:
        await _events(cfg, reg, ino, emit)


def _tell(reg: Canaries, emit: Emit, obs: list[Observation]) -> None:
    """Hand a trip to the classifier at once, and ask for a round, which reports the same saved state."""
    reg.ctx.poll_now()
    try:
        emit(obs)
    except Exception as exc:  # the round just requested carries the same news; the watcher must keep watching
        log.warning(
            "canary: handing the trip to the agent failed (%s: %s); the requested round reports it",
            exc.__class__.__name__,
            exc,
        )


def _tripped_now(reg: Canaries, path: str, trip: dict[str, Any] | None, emit: Emit) -> None:
    if trip is None:
        return
    reg.trip(path, trip)
    _tell(reg, emit, [o for o in reg.observations() if o.subject == subject_of(path)])


async def _events(cfg: Config, reg: Canaries, ino: fswatch.Inotify, emit: Emit) -> None:
    pending: dict[str, asyncio.TimerHandle] = {}
    moved: dict[int, str] = {}  # rename cookie → canary path moved away
    loop = asyncio.get_running_loop()
    sfx = role_suffix(cfg.role)

    def judge(path: str) -> None:
        pending.pop(path, None)
        _tripped_now(reg, path, reg.inspect(path), emit)

    while True:
        events = await ino.events()
        now = time.time()
        for e in events:
            if e.mask & fswatch.IN_Q_OVERFLOW:
                for path in list(reg.canaries):
                    judge(path)
                continue
            if e.mask & (fswatch.IN_DELETE_SELF | fswatch.IN_MOVE_SELF):
                for path in [p for p in reg.canaries if os.path.dirname(p) == e.folder]:
                    _tripped_now(reg, path, reg.inspect(path) or {"how": "folder removed"}, emit)
                continue
            path = os.path.join(e.folder, e.name)
            if path in reg.canaries and not reg.canaries[path].get("tripped"):
                if e.mask & fswatch.IN_MOVED_FROM:
                    moved[e.cookie] = path
                    _tripped_now(reg, path, {"how": "renamed"}, emit)
                elif e.mask & fswatch.IN_DELETE:
                    _tripped_now(reg, path, {"how": "deleted"}, emit)
                elif e.mask & (fswatch.IN_CLOSE_WRITE | fswatch.IN_MOVED_TO | fswatch.IN_CREATE):
                    if (h := pending.pop(path, None)) is not None:
                        h.cancel()
                    judge(path)
                elif e.mask & (fswatch.IN_MODIFY | fswatch.IN_ATTRIB) and path not in pending:
                    pending[path] = loop.call_later(_SETTLE, judge, path)
            elif e.mask & fswatch.IN_MOVED_TO:
                if (src := moved.pop(e.cookie, None)) is not None:
                    reg.canaries[src]["tripped"]["renamed_to"] = e.name
                    reg.save()
                    _tell(reg, emit, [o for o in reg.observations() if o.subject == subject_of(src)])
                if e.mask & fswatch.IN_ISDIR:
                    continue
                if reg.note_rename(e.name, now):
                    _tell(reg, emit, [o for o in reg.observations() if o.check == f"canary.rename_burst{sfx}"])


async def _poll(cfg: Config, ctx: ProbeContext, reg: Canaries, emit: Emit) -> None:
    sfx = role_suffix(cfg.role)
    listing: dict[str, set[str]] = {}
    while True:
        now = time.time()
        for path in list(reg.canaries):
            _tripped_now(reg, path, reg.inspect(path), emit)
        for folder in cfg.folders:
            try:
                names = set(os.listdir(folder))
            except OSError:
                continue
            before = listing.get(str(folder))
            listing[str(folder)] = names
            if before is None:
                continue
            # Without events a rename is a name that vanished while a new one appeared.
            gone, came = before - names, names - before
            for name in sorted(came)[: len(gone)]:
                if reg.note_rename(name, now):
                    _tell(reg, emit, [o for o in reg.observations() if o.check == f"canary.rename_burst{sfx}"])
        await asyncio.sleep(cfg.poll_interval)
