"""http:// https:// — the application answers: method, accepted statuses, body pattern, bounded redirects.

On httpcore (the connection layer the agent's delivery already uses): a fresh connection a check, as
a HIS client would open, never a kept-alive one that could hide a server no longer accepting.
Credentials come from a file or an environment variable and are sent only to the target's origin.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio  # noqa: F401 - httpcore's asyncio backend, loaded now rather than within the first deadline
import httpcore

from hisguard import __version__
from hisguard.checks.base import ProbeContext
from hisguard.checks.service import tls
from hisguard.checks.service.config import Config, Endpoint, Target
from hisguard.checks.service.result import Answer, Certificate, NotChecked, WrongAnswer

BODY_LIMIT = 1 << 20  # the body pattern is matched within the first MiB
REDIRECTS = {301, 302, 303, 307, 308}
_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.I)


def accepted(status: int, codes: list[int | str]) -> bool:
    return any(status == c if isinstance(c, int) else str(status)[0] == c[0] for c in codes)


def _credentials(target: Target) -> bytes | None:
    """user:password from the file or variable, read each round (so a rotated password is picked up)."""
    if target.auth_file is not None:
        try:
            raw = target.auth_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise NotChecked(f"cannot read auth_file {target.auth_file}: {exc.strerror}") from None
    elif target.auth_env is not None:
        raw = os.environ.get(target.auth_env, "").strip()
        if not raw:
            raise NotChecked(f"environment variable {target.auth_env} (auth_env) is not set")
    else:
        return None
    if ":" not in raw:
        raise NotChecked("basic authentication needs user:password")
    return b"Basic " + base64.b64encode(raw.encode("utf-8"))


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    return p.scheme, (p.hostname or "").lower(), p.port


def _decode(body: bytes, headers: dict[str, str]) -> str:
    m = _CHARSET.search(headers.get("content-type", ""))
    try:
        return body.decode(m.group(1) if m else "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


async def _fetch(
    method: str, url: str, headers: list[tuple[bytes, bytes]], ssl_ctx: ssl.SSLContext | None, sni: str | None,
    budget: float,
) -> tuple[int, dict[str, str], bytes, Certificate | None]:  # fmt: skip
    extensions: dict[str, Any] = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), max(budget, 0.001))}
    if sni:
        extensions["sni_hostname"] = sni
    async with httpcore.AsyncConnectionPool(ssl_context=ssl_ctx, max_connections=1, retries=0) as pool:
        async with pool.stream(method, url, headers=headers, extensions=extensions) as resp:
            got = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
            body = b""
            if method != "HEAD":
                async for chunk in resp.aiter_stream():
                    body += chunk
                    if len(body) >= BODY_LIMIT:
                        break
            stream = resp.extensions.get("network_stream")
            cert = tls.certificate(stream.get_extra_info("ssl_object")) if stream is not None else None
            return resp.status, got, body[:BODY_LIMIT], cert


async def check(target: Target, end: Endpoint, cfg: Config, ctx: ProbeContext, deadline: float) -> Answer:
    auth = _credentials(target)
    base = [(b"User-Agent", f"hisguard-agent/{__version__}".encode()), (b"Accept", b"*/*")]
    base += [(k.encode("latin-1"), v.encode("utf-8")) for k, v in target.headers.items()]
    origin = _origin(target.url)
    url, method = target.url, target.method
    visited = [url]
    started = time.perf_counter()
    cert: Certificate | None = None
    while True:
        https = url.startswith("https:")
        ssl_ctx = tls.context(target.ca_file, target.verify, ctx) if https else None
        sni = tls.server_name(target, end) if https and _origin(url) == origin else None
        headers = [*base, (b"Authorization", auth)] if auth and _origin(url) == origin else base
        try:
            status, got, body, hop_cert = await _fetch(
                method, url, headers, ssl_ctx, sni, deadline - (time.perf_counter() - started)
            )
        except httpcore.ConnectError as exc:
            refused = exc.__cause__ or exc.__context__  # httpcore keeps the TLS error as the context
            if isinstance(refused, ssl.SSLCertVerificationError):
                name = sni or (urlsplit(url).hostname or "")
                raise await tls.verification_failed(refused, parse_origin(url), name) from None
            raise
        except httpcore.RemoteProtocolError as exc:
            raise WrongAnswer(f"not a proper HTTP answer: {exc}") from None
        except (httpcore.UnsupportedProtocol, httpcore.LocalProtocolError, ValueError) as exc:
            if len(visited) == 1:
                raise  # the configured URL itself: not the service's doing
            raise WrongAnswer(f"cannot follow the redirect to {url[:200]}: {exc}") from None
        cert = hop_cert or cert
        location = got.get("location")
        if status not in REDIRECTS or location is None or target.redirects == 0:
            break
        try:
            nxt = urljoin(url, location)
            scheme = urlsplit(nxt).scheme
        except ValueError:
            raise WrongAnswer(f"redirected to an address that is not one: {location[:200]!r}", status=status) from None
        if scheme not in ("http", "https"):
            raise WrongAnswer(f"redirected to {nxt[:200]}, not an http(s) address", status=status)
        if nxt in visited:
            raise WrongAnswer(f"redirect loop: {' → '.join([*visited, nxt])[:280]}", status=status)
        if len(visited) > target.redirects:
            raise WrongAnswer(f"more than {target.redirects} redirects (last to {nxt[:200]})", status=status)
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = "GET"
        visited.append(nxt)
        url = nxt
    latency = (time.perf_counter() - started) * 1000
    detail: dict[str, Any] = {"status": status, "bytes": len(body)}
    if len(visited) > 1:
        detail.update(redirects=len(visited) - 1, final_url=url[:300])
    if not accepted(status, target.status):
        raise WrongAnswer(f"HTTP {status}, expected {', '.join(str(c) for c in target.status)}", cert=cert, **detail)
    if target.body is not None and not re.search(target.body, _decode(body, got)):
        raise WrongAnswer(f"HTTP {status} but the body does not match {target.body!r}", cert=cert, **detail)
    return Answer(detail, latency, cert)


def parse_origin(url: str) -> Endpoint:
    p = urlsplit(url)
    scheme = p.scheme
    return Endpoint(scheme, p.hostname or "", p.port or (443 if scheme == "https" else 80))
