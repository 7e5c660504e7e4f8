"""Delivery to the server: batched POSTs from the durable outbox, retried with backoff and jitter.

An item leaves the outbox only when the server says it stored it. A batch the server refuses
as malformed (422) is split until the one bad item is found and set aside on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import ssl
from typing import Any

import httpx

from hisguard import __version__
from hisguard.agent.config import AgentConfig
from hisguard.agent.store import Pending, StateStore
from hisguard.report import API_PREFIX

log = logging.getLogger("hisguard.agent.delivery")


class DeliveryError(Exception):
    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # the server asked for this pause (429, 503 Retry-After)


def _retry_after(resp: httpx.Response) -> float:
    try:
        return min(3600.0, max(0.0, float(resp.headers.get("retry-after", "0"))))
    except ValueError:
        return 0.0


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
        verify: Any = False  # plain http: loading the CA store would cost ~3 MB for nothing
        if cfg.server.url.startswith("https:"):
            ca = str(cfg.server.ca_bundle) if cfg.server.ca_bundle else None
            verify = tls_context(ca, cfg.server.pin_sha256)
        self.client = httpx.AsyncClient(
            base_url=cfg.server.url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"hisguard-agent/{__version__}"},
            timeout=cfg.server.timeout,
            verify=verify,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

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
        try:
            resp = await self.client.post(f"{API_PREFIX}/reports", json=payload)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"server unreachable: {exc.__class__.__name__}: {exc}") from exc
        if resp.status_code == 200:
            stored = [str(i) for i in resp.json().get("stored", [])]
            if self.store.delivered(stored) < len(batch):
                raise DeliveryError(f"server stored {len(stored)} of {len(batch)} items")
            return len(stored)
        if resp.status_code == 422:
            if len(batch) == 1:
                reason = resp.text[:2000]
                log.error(
                    "server refused report %s as malformed; kept aside in the agent state: %s", batch[0].id, reason
                )
                self.store.reject(batch[0], reason)
                return 0
            half = len(batch) // 2
            return await self._send(batch[:half]) + await self._send(batch[half:])
        if resp.status_code in (401, 403):
            raise DeliveryError(f"server refused the agent token ({resp.status_code}): check server.token")
        if resp.status_code == 413 and len(batch) > 1:  # too big for the server's limit: send halves
            half = len(batch) // 2
            return await self._send(batch[:half]) + await self._send(batch[half:])
        raise DeliveryError(f"server answered {resp.status_code}: {resp.text[:200]}", _retry_after(resp))

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
