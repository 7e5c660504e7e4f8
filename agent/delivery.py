"""Delivery to the server: batched POSTs from the durable outbox, retried with backoff and jitter.

An item leaves the outbox only when the server says it stored it. A batch the server refuses
as malformed (422) is split until the one bad item is found and set aside on disk.
"""

from __future__ import annotations

import asyncio
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
    pass


class Sender:
    def __init__(self, cfg: AgentConfig, store: StateStore, token: str) -> None:
        self.cfg = cfg
        self.store = store
        self.wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        verify: Any = True
        if cfg.server.ca_bundle:
            verify = ssl.create_default_context(cafile=str(cfg.server.ca_bundle))
        elif not cfg.server.url.startswith("https:"):
            verify = False  # plain http: loading the CA store would cost ~3 MB for nothing
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
        raise DeliveryError(f"server answered {resp.status_code}: {resp.text[:200]}")

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
                delay = self.backoff()
                log.warning("delivery failed (%s); %d pending; retry in %.1fs", exc, self.store.backlog(), delay)
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=delay)
                    self.wake.clear()
                    await asyncio.sleep(min(delay, 1.0))  # new items do not hammer a failing server
                except asyncio.TimeoutError:
                    pass
