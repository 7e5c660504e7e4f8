"""A probe that reports what a test scripted, round by round: `ctx.memory["script"]` holds the healthy
state of one condition per round (the last one repeats); `ctx.memory["runs"]` gets each round's time."""

from __future__ import annotations

import time

from hisguard.checks.base import Observation, ProbeConfig, ProbeContext


class Config(ProbeConfig):
    pass


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    runs = ctx.memory.setdefault("runs", [])
    runs.append(time.monotonic())
    script = ctx.memory["script"]
    return [Observation("host.process", "his-appserver", script[min(len(runs), len(script)) - 1])]
