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
    mode: str = Field("tick", pattern="^(tick|hang|hang_thread|crash|partial)$")


def _block() -> None:
    RELEASE.wait(30)


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    if cfg.mode == "hang":
        await asyncio.sleep(3600)
    if cfg.mode == "hang_thread":
        await ctx.blocking("stuck", _block)
    if cfg.mode == "crash":
        raise RuntimeError("probe bug")
    if cfg.mode == "partial":
        # Round 1 sees a table missing; round 2 cannot reach the server; round 3 sees the table gone from config.
        n = ctx.memory["n"] = ctx.memory.get("n", 0) + 1
        if n == 1:
            return [Observation("host.process", "his-appserver", False)]
        if n == 2:
            ctx.mark_partial()
        return []
    RUNS.append(time.monotonic())
    return [Observation("test.tick", "t", True, value=float(len(RUNS)))]
