"""Delivery to the server: batched POSTs from the durable outbox, retried with backoff and jitter.

An item leaves the outbox only when the server says it stored it. A batch the server refuses
as malformed (422) is split until the one bad item is found and set aside on disk.

The HTTP client is httpcore, the connection layer httpx is built on: the agent needs one
keep-alive connection, TLS with pinning and an environment proxy, not httpx's cookies, redirects
and multipart (which cost ~3.5 MB of every agent's memory).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import ssl
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore

from hisguard import __version__
from hisguard.agent.config import AgentConfig
from hisguard.agent.store import Pending, StateStore
from hisguard.report import API_PREFIX

log = logging.getLogger("hisguard.agent.delivery")


class DeliveryError(Exception):
    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # the server asked for this pause (429, 503 Retry-After)


# Everything httpcore raises when a request could not be completed (the server may not have it).
TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    ssl.SSLError,
    OSError,
)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _retry_after(resp: Reply) -> float:
    try:
        return min(3600.0, max(0.0, float(resp.headers.get("retry-after", "0"))))
    except ValueError:
        return 0.0


def env_proxy(url: str, environ: dict[str, str] | None = None) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY; NO_PROXY bypasses),
    read as curl and httpx read them; on Windows also the system's (registry) settings."""
    env = {k.lower(): v.strip() for k, v in (os.environ if environ is None else environ).items()}
    if environ is None and sys.platform == "win32":
        import urllib.request

        env = {**{f"{k}_proxy": v for k, v in urllib.request.getproxies().items()}, **env}
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    for entry in env.get("no_proxy", "").split(","):
        entry = entry.strip().lower().lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return env.get(f"{parts.scheme}_proxy") or env.get("all_proxy") or None


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def normalize_pin(pin: str) -> str:
    return pin.replace(":", "").strip().lower()


def tls_context(ca_bundle: str | None, pins: list[str]) -> ssl.SSLContext:
    """Verify the server against the CA bundle (or the system's), and if pins are given, insist that
    its certificate's SHA-256 is one of them — checked in the handshake, before the token is sent."""
    ctx = ssl.create_default_context(cafile=ca_bundle)
    wanted = {normalize_pin(p) for p in pins}
    if wanted:

        class PinnedSSLObject(ssl.SSLObject):
            def do_handshake(self) -> None:
                super().do_handshake()
                der = self.getpeercert(binary_form=True) or b""
                if fingerprint(der) not in wanted:
                    raise ssl.SSLCertVerificationError(
                        f"server certificate sha256 {fingerprint(der)} is not a pinned one (server.pin_sha256)"
                    )

        ctx.sslobject_class = PinnedSSLObject
    return ctx


class Sender:
    def __init__(self, cfg: AgentConfig, store: StateStore, token: str) -> None:
        self.cfg = cfg
        self.store = store
        self.wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        base = cfg.server.url.rstrip("/")
        self.endpoint = f"{base}{API_PREFIX}/reports"
        ctx = None  # plain http: no CA store loaded (~3 MB) for nothing
        if base.startswith("https:"):
            ctx = tls_context(str(cfg.server.ca_bundle) if cfg.server.ca_bundle else None, cfg.server.pin_sha256)
        proxy = env_proxy(base)
        self.headers = [
            (b"Authorization", f"Bearer {token}".encode()),
            (b"User-Agent", f"hisguard-agent/{__version__}".encode()),
            (b"Content-Type", b"application/json"),
        ]
        t = cfg.server.timeout
        self.timeouts = {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}
        # One connection is all the agent uses; retries=1 re-dials once if the server closed an idle one.
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=ctx, proxy=httpcore.Proxy(proxy) if proxy else None, max_connections=2, retries=1
        )

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def post(self, payload: dict[str, Any]) -> Reply:
        """POST the payload to the reports endpoint; raises DeliveryError if no answer came."""
        try:
            resp = await self.pool.request(
                "POST",
                self.endpoint,
                headers=self.headers,
                content=json.dumps(payload).encode(),
                extensions=self.timeouts,
            )
        except TRANSPORT_ERRORS as exc:
            raise DeliveryError(f"server unreachable: {exc.__class__.__name__}: {exc}") from exc
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
        return Reply(resp.status, resp.content, headers)

    def backoff(self) -> float:
        """Exponential backoff with full jitter, capped at retry_max."""
        ceiling = min(self.cfg.server.retry_max, 1.0 * 2 ** min(self.failures, 16))
        return random.uniform(ceiling / 2, ceiling)

    async def flush(self) -> int:
        """Send everything pending; return items delivered. Raises DeliveryError if the server is unreachable."""
        sent = 0
        while batch := self.store.peek(self.cfg.server.batch_size):
            sent += await self._send(batch)
        return sent

    async def _send(self, batch: list[Pending]) -> int:
        payload = {"agent": self.cfg.agent.name, "version": __version__, "items": [p.body for p in batch]}
        resp = await self.post(payload)
        if resp.status == 200:
            try:
                stored = [str(i) for i in json.loads(resp.body).get("stored", [])]
            except (ValueError, AttributeError) as exc:
                raise DeliveryError(f"server answered 200 with an unreadable body: {resp.text[:200]}") from exc
            if self.store.delivered(stored) < len(batch):
                raise DeliveryError(f"server stored {len(stored)} of {len(batch)} items")
            return len(stored)
        if resp.status == 422:
            if len(batch) == 1:
                reason = resp.text[:2000]
                log.error(
                    "server refused report %s as malformed; kept aside in the agent state: %s", batch[0].id, reason
                )
                self.store.reject(batch[0], reason)
                return 0
            half = len(batch) // 2
            return await self._send(batch[:half]) + await self._send(batch[half:])
        if resp.status in (401, 403):
            raise DeliveryError(f"server refused the agent token ({resp.status}): check server.token")
        if resp.status == 413 and len(batch) > 1:  # too big for the server's limit: send halves
            half = len(batch) // 2
            return await self._send(batch[:half]) + await self._send(batch[half:])
        raise DeliveryError(f"server answered {resp.status}: {resp.text[:200]}", _retry_after(resp))

    async def run(self) -> None:
        """Deliver forever: on new items at once, after failures with backoff."""
        while True:
            try:
                await self.flush()
                if self.failures:
                    log.info("delivery restored; outbox empty")
                self.failures = 0
                self.last_error = None
                self.wake.clear()
                await self.wake.wait()
            except DeliveryError as exc:
                self.failures += 1
                self.last_error = str(exc)
                delay = max(self.backoff(), exc.retry_after)
                log.warning("delivery failed (%s); %d pending; retry in %.1fs", exc, self.store.backlog(), delay)
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=delay)
                    self.wake.clear()
                    await asyncio.sleep(min(delay, 1.0))  # new items do not hammer a failing server
                except asyncio.TimeoutError:
                    pass
