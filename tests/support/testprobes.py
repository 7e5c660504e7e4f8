"""Probes for testing the agent's scheduler: one that hangs, one that counts its runs."""

from __future__ import annotations

import asyncio
import threading
import time

from pydantic import Field

from hisguard.checks.base import Observation, ProbeConfig, ProbeContext

RUNS: list[float] = []
RELEASE = threading.Event()


class Config(ProbeConfig):
    mode: str = Field("tick", pattern="^(tick|hang|hang_thread|crash)$")


def _block() -> None:
    RELEASE.wait(30)


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    if cfg.mode == "hang":
        await asyncio.sleep(3600)
    if cfg.mode == "hang_thread":
        await ctx.blocking("stuck", _block)
    if cfg.mode == "crash":
        raise RuntimeError("probe bug")
    RUNS.append(time.monotonic())
    return [Observation("test.tick", "t", True, value=float(len(RUNS)))]
