"""Is the HIS application answering? Service checks by URL, one module a protocol (like blackbox_exporter's prober/).

    tcp://host:port              connect; optionally send a line and expect a reply pattern (banners)
    http://… https://…           method, accepted statuses, body pattern, bounded redirects, headers,
                                 basic authentication from a file or variable; TLS verified
    tls://host:port              the certificate: verified, host name matched, days to expiry
    dns://server/name            resolution through the hospital's DNS server
    mllp://host:port             HL7 v2 interface engine: a message framed in MLLP, expecting MSA|AA
    dicom://AET@host:port        PACS: DICOM C-ECHO (Verification) with the configured calling AE title

Every target has a deadline; its result is answered, too slow, wrong answer, refused, unreachable or
timed out, with the numbers, never a crash (a service that accepts and never answers is a timeout).
What it reports per target (subject: the URL):
- service.answer      answered correctly (value: latency in ms when something answered);
- service.latency     answered within slow_ms (only for targets with a threshold);
- service.cert / service.cert.urgent   https:// and tls://: the certificate has more than
                      cert_warn_days / cert_urgent_days left (value: days left).
Protocol modules load when a target first needs them, so an agent carries only what it speaks.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from hisguard.checks.base import Observation, ProbeContext
from hisguard.checks.service.config import PROTOCOLS, Config, Target
from hisguard.checks.service.result import OUTCOMES, NotChecked, Result, run

__all__ = ["OUTCOMES", "PROTOCOLS", "Config", "Result", "Target", "check_target", "observations", "probe"]


def protocol(scheme: str) -> Any:
    """The module that speaks `scheme` (imported on first use)."""
    return importlib.import_module(f"{__name__}.{PROTOCOLS[scheme]}")


async def check_target(target: Target, cfg: Config, ctx: ProbeContext) -> Result:
    """One target under its deadline; the result is final (never raises)."""
    end = target.endpoint
    deadline = cfg.deadline(target)
    try:
        module = protocol(end.scheme)
    except ImportError as exc:
        return Result("not_checked", None, f"{end.scheme}:// needs {exc.name}: pip install 'hisguard[service]'")

    async def attempt() -> Any:
        try:
            return await module.check(target, end, cfg, ctx, deadline)
        except ImportError as exc:
            raise NotChecked(f"{end.scheme}:// needs {exc.name}: pip install 'hisguard[service]'") from None

    result = await run(attempt(), deadline)
    slow = cfg.slow(target)
    if result.outcome == "answered" and slow is not None and (result.latency_ms or 0) > slow:
        result.outcome = "too_slow"
    return result


def observations(target: Target, cfg: Config, result: Result) -> list[Observation]:
    end = target.endpoint
    impact = target.impact()
    detail: dict[str, Any] = {
        "outcome": result.outcome,
        "protocol": end.scheme,
        "service_host": end.host,
        "port": end.port,
        "latency_ms": result.latency_ms,
        "timeout_s": cfg.deadline(target),
        **result.detail,
    }
    if result.error:
        detail["error"] = result.error
    if target.node:
        detail["service_node"] = target.node
    if result.cert is not None:
        detail.update(result.cert.detail())
    obs = [Observation("service.answer", target.url, result.answered, impact, result.latency_ms, target.name, detail)]
    slow = cfg.slow(target)
    if slow is not None:
        answered = result.outcome in ("answered", "too_slow") and result.latency_ms is not None
        in_time = (result.latency_ms or 0) <= slow if answered else None  # unknown while it does not answer
        obs.append(
            Observation(
                "service.latency",
                target.url,
                in_time,
                impact,
                result.latency_ms,
                target.name,
                {**detail, "slow_ms": slow, "limit": slow},
            )
        )
    if end.scheme in ("https", "tls"):
        days = None if result.cert is None else round(result.cert.days_left(), 2)
        for check, limit in (("service.cert", cfg.cert_warn_days), ("service.cert.urgent", cfg.cert_urgent_days)):
            ok = None if days is None else days > limit
            obs.append(
                Observation(check, target.url, ok, impact, days, target.name, {**detail, "cert_limit_days": limit})
            )
    return obs


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    gate = asyncio.Semaphore(cfg.concurrency)

    async def one(target: Target) -> list[Observation]:
        async with gate:
            return observations(target, cfg, await check_target(target, cfg, ctx))

    rounds = await asyncio.gather(*(one(t) for t in cfg.targets))
    return [o for obs in rounds for o in obs]
