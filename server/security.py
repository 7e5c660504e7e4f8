"""Protection at the edge of the server: body size limit, rate limit per token, security headers,
and "storage unavailable" (503, never 500 or 2xx) when the database is locked or gone."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hisguard.server.settings import SecuritySettings

log = logging.getLogger("hisguard.server.security")

HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"permissions-policy": b"geolocation=(), camera=(), microphone=()",
    b"cross-origin-opener-policy": b"same-origin",
}
CSP = b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
HSTS = b"max-age=31536000"
MAX_ID = 2**63 - 1
UNCOUNTED = ("/healthz", "/metrics", "/static/")  # probes and a page's files: not rate limited
# The interactive API docs load their scripts from a CDN; a strict CSP would blank them.
CSP_EXEMPT = ("/docs", "/redoc")


class TokenBuckets:
    """Per-caller token buckets: `rate` requests a second, bursts up to `burst`. Keys are hashes."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """0 if the request may pass, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


class EdgeMiddleware:
    """Pure ASGI (streams the body, so a chunked request is cut off at the limit too)."""

    def __init__(self, app: ASGIApp, settings: SecuritySettings) -> None:
        self.app = app
        self.limit = settings.max_body_bytes
        self.buckets = TokenBuckets(settings.rate_per_token, settings.rate_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if any(len(part) > 18 and part.isdigit() and int(part) > MAX_ID for part in scope["path"].split("/")):
            await _reply(send, 404, {"detail": "no such object (ids are 64-bit)"})  # no database could hold it
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await _reply(send, 413, {"detail": f"request body over {self.limit} bytes"})
            return
        if scope["path"].startswith(UNCOUNTED):
            await self._pass(scope, receive, send)
            return
        auth = headers.get(b"authorization")
        caller = auth if auth else f"addr:{(scope.get('client') or ('?',))[0]}".encode()
        wait = self.buckets.take(hashlib.sha256(caller).hexdigest())  # the token itself is never kept
        if wait:
            retry = ((b"retry-after", str(math.ceil(wait)).encode()),)
            await _reply(send, 429, {"detail": "too many requests; slow down"}, retry)
            return
        await self._pass(scope, receive, send)

    async def _pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        tls = scope.get("scheme") == "https"
        csp = not scope["path"].startswith(CSP_EXEMPT)
        received = 0
        too_large = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Stop reading here; whatever the app answers to the cut body becomes a 413.
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def secured_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if too_large and message["type"] == "http.response.start":
                replaced = True
                await _reply(send, 413, {"detail": f"request body over {self.limit} bytes"})
                return
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS.items() if k not in present]
                if csp and b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", CSP))
                if tls:
                    extra.append((b"strict-transport-security", HSTS))
                if scope["path"].startswith("/api/") and b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, limited_receive, secured_send)


async def _reply(send: Send, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    data = json.dumps(body).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*base, *HEADERS.items(), *headers]})
    await send({"type": "http.response.body", "body": data})


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, IntegrityError):  # two writers changed the same thing at once: the caller may retry
        return JSONResponse({"detail": "conflicting concurrent change; retry"}, status_code=409)
    # Locked, unreachable or dropped database: nothing was stored; the caller should keep its data.
    log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    return JSONResponse({"detail": "storage unavailable; retry later"}, status_code=503, headers={"Retry-After": "5"})


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # A number no database column holds (a query parameter of 10**30): the request is wrong, not the server.
    return JSONResponse({"detail": "a number in the request is out of range"}, status_code=422)


def install(app: FastAPI, settings: SecuritySettings) -> None:
    app.add_middleware(EdgeMiddleware, settings=settings)
    app.add_exception_handler(DBAPIError, _storage_unavailable)
    app.add_exception_handler(OverflowError, _out_of_range)
