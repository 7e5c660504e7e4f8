"""tcp://host:port — the port accepts a connection; with `send`/`expect`, the service speaks (banner checks)."""

from __future__ import annotations

import asyncio
import re
import time

from hisguard.checks.base import ProbeContext
from hisguard.checks.service.config import Config, Endpoint, Target
from hisguard.checks.service.result import Answer, WrongAnswer

READ_LIMIT = 65536  # a reply is matched within its first 64 KiB


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


async def check(target: Target, end: Endpoint, cfg: Config, ctx: ProbeContext, deadline: float) -> Answer:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(end.host, end.port)
    connect_ms = (time.perf_counter() - started) * 1000
    try:
        if target.send:
            writer.write(target.send.encode("utf-8"))
            await writer.drain()
        if target.expect is None:
            return Answer({"connect_ms": round(connect_ms, 2)})
        pattern = re.compile(target.expect)
        seen = b""
        # Stop reading a little before the deadline: a reply that came but never matched is a wrong answer.
        until = started + deadline * 0.9
        while len(seen) < READ_LIMIT:
            try:
                chunk = await asyncio.wait_for(reader.read(READ_LIMIT - len(seen)), until - time.perf_counter())
            except asyncio.TimeoutError:
                if not seen:
                    raise
                raise WrongAnswer(f"the reply does not match {target.expect!r}", reply=_text(seen[:200])) from None
            if not chunk:
                raise WrongAnswer(f"closed without a reply matching {target.expect!r}", reply=_text(seen[:200]))
            seen += chunk
            if pattern.search(_text(seen)):
                return Answer({"connect_ms": round(connect_ms, 2), "reply": _text(seen[:200])})
        raise WrongAnswer(f"no reply matching {target.expect!r} in the first 64 KiB", reply=_text(seen[:200]))
    finally:
        writer.close()
