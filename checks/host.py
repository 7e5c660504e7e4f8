"""Host probe (psutil): CPU, memory, disk fill per mount, reboots, required processes and services."""

from __future__ import annotations

import json
import os
import sys
import time

import psutil
from pydantic import Field

from hisguard.checks.base import Observation, ProbeConfig, ProbeContext, ProbeError

# File systems that are not disks a HIS writes to.
_PSEUDO_FS = {"squashfs", "tmpfs", "devtmpfs", "overlay", "iso9660", "udf", "ramfs", "proc", "sysfs", "nsfs"}
_BOOT_JITTER_S = 5.0  # boot_time() moves a little with clock adjustments; not a reboot


class Config(ProbeConfig):
    interval: float = Field(30.0, gt=0, le=86400)
    fail_after: int = Field(2, ge=1)
    fail_window: int = Field(3, ge=1)
    clear_after: int = Field(2, ge=1)
    cpu_percent_max: float = Field(95.0, gt=0, le=100, description="CPU busy above this is exhaustion")
    memory_percent_max: float = Field(95.0, gt=0, le=100)
    disk_percent_max: float = Field(95.0, gt=0, le=100)
    mounts: list[str] = Field(default_factory=list, description="Mount points to watch; empty: every disk")
    processes: list[str] = Field(default_factory=list, description="Process names that must run (sqlservr, java…)")
    services: list[str] = Field(default_factory=list, description="Windows services that must be running")
    reboot_loop_count: int = Field(3, ge=2, description="Boots within the window that make a reboot loop")
    reboot_loop_window: float = Field(3600.0, gt=0, description="Seconds")


def _boot_history(ctx: ProbeContext, window: float) -> tuple[int, bool]:
    """Record this boot in the agent's state; return boots within the window and whether this one is new."""
    path = ctx.state_dir / "host-boots.json"
    try:
        boots: list[float] = json.loads(path.read_text())
    except (OSError, ValueError):
        boots = []
    boot = psutil.boot_time()
    new = not boots or abs(boots[-1] - boot) > _BOOT_JITTER_S
    if new:
        boots = [*boots, boot][-50:]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(boots))
        os.replace(tmp, path)
    recent = sum(1 for b in boots if b >= time.time() - window)
    return recent, new and len(boots) > 1


def _disks(cfg: Config) -> list[tuple[str, float, int]]:
    wanted = set(cfg.mounts)
    seen: set[str] = set()
    devices: set[str] = set()
    out = []
    for part in psutil.disk_partitions(all=False):
        if wanted and part.mountpoint not in wanted:
            continue
        if not wanted and (part.fstype in _PSEUDO_FS or "cdrom" in part.opts or not part.fstype):
            continue
        if part.mountpoint in seen or (not wanted and part.device in devices):
            continue  # bind mounts of a disk already watched say nothing new
        seen.add(part.mountpoint)
        devices.add(part.device)
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        out.append((part.mountpoint, usage.percent, usage.free))
    missing = wanted - seen
    for mount in sorted(missing):
        out.append((mount, float("nan"), 0))
    return out


def _running_names() -> set[str]:
    names = set()
    for proc in psutil.process_iter(["name"]):
        name = (proc.info.get("name") or "").lower()
        names.add(name)
        names.add(name.removesuffix(".exe"))
    return names


def _service_running(name: str) -> bool:
    if sys.platform == "win32":
        try:
            return psutil.win_service_get(name).status() == "running"
        except psutil.NoSuchProcess:
            return False
    raise ProbeError(f"services are Windows services; on this system list '{name}' under processes")


def _sample(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    here = ctx.impact  # this machine's own place in the hospital ([agent] in the config)
    obs: list[Observation] = []
    primed = ctx.memory.get("cpu_primed", False)
    cpu = psutil.cpu_percent(interval=None)
    ctx.memory["cpu_primed"] = True
    if primed:
        limit = {"limit": cfg.cpu_percent_max}  # the threshold the console draws
        obs.append(Observation("host.cpu", "cpu", cpu < cfg.cpu_percent_max, here, cpu, detail=limit))
    mem = psutil.virtual_memory().percent
    limit = {"limit": cfg.memory_percent_max}
    obs.append(Observation("host.memory", "memory", mem < cfg.memory_percent_max, here, mem, detail=limit))
    for mount, percent, free in _disks(cfg):
        if percent != percent:  # NaN: a configured mount that is not there
            obs.append(Observation("host.mount", mount, False, here, None, detail={"reason": "not mounted"}))
            continue
        detail = {"free_bytes": free, "limit": cfg.disk_percent_max}
        obs.append(Observation("host.disk", mount, percent < cfg.disk_percent_max, here, percent, detail=detail))
    boots, rebooted = _boot_history(ctx, cfg.reboot_loop_window)
    obs.append(
        Observation(
            "host.reboot_loop",
            "boot",
            boots < cfg.reboot_loop_count,
            here,
            float(boots),
            detail={"boots_in_window": boots, "window_s": cfg.reboot_loop_window, "rebooted": rebooted},
        )
    )
    if cfg.processes:
        running = _running_names()
        for name in cfg.processes:
            up = name.lower() in running or name.lower().removesuffix(".exe") in running
            obs.append(Observation("host.process", name, up, here, 1.0 if up else 0.0))
    for name in cfg.services:
        up = _service_running(name)
        obs.append(Observation("host.service", name, up, here, 1.0 if up else 0.0))
    return obs


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    return await ctx.blocking("host", _sample, cfg, ctx)
