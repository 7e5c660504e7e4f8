"""The agent's HTTP/1.1 client: JSON POSTs to its one server over a kept-alive connection.

Delivery needs one thing — POST a batch, read the answer — and a general-purpose client
(httpx with httpcore and anyio) costs the agent ~5 MB resident for it. This one is asyncio
streams and the ssl module: TLS through the context the caller builds (CA bundle, pins),
proxies from the environment as other HTTP clients take them (HTTP_PROXY, HTTPS_PROXY,
ALL_PROXY, NO_PROXY; on Windows the system's Internet settings), per-step timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import socket
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

MAX_HEADER_LINES = 100
MAX_BODY = 16 * 2**20  # the server answers a few KB; a larger answer is not the server


class HttpError(Exception):
    """The exchange failed before a complete answer arrived."""


class ConnectError(HttpError):
    """No connection: refused, unreachable, name unknown, TLS handshake refused (certificate, pin)."""


class Timeout(HttpError):
    """A step (connect, send, read) took longer than the timeout."""


class ProtocolError(HttpError):
    """The peer closed the connection early or answered something that is not HTTP/1.x."""


@dataclass
class Response:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    content: bytes = b""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _port(url: SplitResult) -> int:
    try:
        port = url.port
    except ValueError as exc:
        raise ConnectError(f"bad port in {url.geturl()}") from exc
    return port or (443 if url.scheme == "https" else 80)


def _proxies() -> dict[str, str]:
    """scheme -> proxy from *_proxy variables (lower case wins), as urllib.request.getproxies() reads them."""
    if sys.platform in ("win32", "darwin"):  # also the system settings (registry, System Configuration)
        from urllib.request import getproxies

        return dict(getproxies())
    found: dict[str, str] = {}
    for lower in (False, True):
        for name, value in os.environ.items():
            if name[-6:].lower() == "_proxy" and (name == name.lower()) == lower:
                found[name[:-6].lower()] = value
    return found


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (None: connect directly), by the rules httpx and curl use."""
    proxies = {k.lower(): v for k, v in _proxies().items() if v}
    target = urlsplit(url)
    host = (target.hostname or "").lower()
    for entry in (e.strip().lower() for e in proxies.get("no", "").split(",")):
        if not entry:
            continue
        if entry == "*":
            return None
        if "://" in entry:
            entry = urlsplit(entry).hostname or ""
        entry = entry.strip("[]")
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return None
            continue
        except ValueError:
            pass
        if (host == entry and not entry.startswith(".")) or host.endswith("." + entry.lstrip(".")):
            return None  # "example.org" covers it and its subdomains, ".example.org" only the subdomains
    proxy = proxies.get(target.scheme) or proxies.get("all")
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"
    return proxy


class Client:
    """Requests to one server (`base_url`, which may carry a path prefix) with fixed headers."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
    ) -> None:
        self.url = urlsplit(base_url)
        if self.url.scheme not in ("http", "https") or not self.url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = self.url.hostname
        self.port = _port(self.url)
        self.prefix = self.url.path.rstrip("/")
        self.headers = headers
        self.timeout = timeout
        if self.url.scheme == "https":
            self.ssl: ssl.SSLContext | None = ssl_context or ssl.create_default_context()
        else:
            self.ssl = None
        self.proxy = urlsplit(proxy) if proxy else None
        if self.proxy is not None and (self.proxy.scheme != "http" or not self.proxy.hostname):
            raise ValueError(f"proxy {proxy}: only http:// proxies are supported")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock: asyncio.Lock | None = None

    # -- connection ------------------------------------------------------------------------------
    async def _step(self, what: str, aw: Any) -> Any:
        try:
            return await asyncio.wait_for(aw, self.timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"{what} took longer than {self.timeout:g}s") from None

    def _proxy_auth(self) -> dict[str, str]:
        assert self.proxy is not None
        if self.proxy.username is None:
            return {}
        cred = f"{unquote(self.proxy.username)}:{unquote(self.proxy.password or '')}"
        return {"Proxy-Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}

    async def _connect(self) -> None:
        try:
            if self.proxy is not None and self.ssl is not None:  # a tunnel through the proxy, TLS end to end
                sock = await self._step(f"opening a tunnel through proxy {self.proxy.netloc}", self._tunnel())
                reader, writer = await self._step(
                    f"TLS with {self.host}",
                    asyncio.open_connection(sock=sock, ssl=self.ssl, server_hostname=self.host),
                )
            else:
                host, port = (self.proxy.hostname or "", _port(self.proxy)) if self.proxy else (self.host, self.port)
                reader, writer = await self._step(
                    f"connecting to {host}:{port}",
                    asyncio.open_connection(host, port, ssl=self.ssl, server_hostname=self.host if self.ssl else None),
                )
        except HttpError:
            raise
        except (OSError, ssl.SSLError, EOFError) as exc:
            raise ConnectError(str(exc) or exc.__class__.__name__) from exc
        self._reader, self._writer = reader, writer

    async def _tunnel(self) -> socket.socket:
        """A socket to the server through the proxy (HTTP CONNECT), ready for the TLS handshake."""
        assert self.proxy is not None
        loop = asyncio.get_running_loop()
        host, port = self.proxy.hostname or "", _port(self.proxy)
        sock: socket.socket | None = None
        error: OSError = OSError(f"cannot resolve proxy {host}")
        for family, kind, proto, _, addr in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
                break
            except OSError as exc:
                sock.close()
                sock, error = None, exc
        if sock is None:
            raise error
        try:
            authority = self._authority()
            head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in self._proxy_auth().items())
            await loop.sock_sendall(sock, (head + "\r\n").encode("latin-1"))
            answer = b""
            while b"\r\n\r\n" not in answer:  # the server says nothing before the TLS hello: no overread
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk or len(answer) > 65536:
                    raise ConnectError(f"proxy {self.proxy.netloc} closed the tunnel to {authority}")
                answer += chunk
            status = answer.split(b"\r\n", 1)[0].split(None, 2)
            if len(status) < 2 or not status[1].startswith(b"2"):
                said = b" ".join(status[1:]).decode("latin-1")
                raise ConnectError(f"proxy refused the tunnel to {authority}: {said}")
        except BaseException:
            sock.close()
            raise
        return sock

    def _authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    # -- one exchange ----------------------------------------------------------------------------
    async def post_json(self, path: str, body: Any) -> Response:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            reused = self._writer is not None and self._reader is not None and not self._reader.at_eof()
            if not reused:
                await self.aclose()
                await self._connect()
            try:
                return await self._exchange("POST", path, data)
            except (ProtocolError, ConnectError):
                await self.aclose()
                if not reused:
                    raise
            # The server closed the idle connection as the request went out: once more on a new one.
            await self._connect()
            try:
                return await self._exchange("POST", path, data)
            except HttpError:
                await self.aclose()
                raise

    async def _exchange(self, method: str, path: str, data: bytes) -> Response:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        target = self.prefix + path
        headers = {"Host": self.url.netloc.rpartition("@")[2], **self.headers}
        if self.proxy is not None and self.ssl is None:  # plain http through a proxy: absolute form
            target = f"http://{headers['Host']}{target}"
            headers.update(self._proxy_auth())
        headers.update({"Content-Type": "application/json", "Content-Length": str(len(data)), "Accept": "*/*"})
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        try:
            writer.write(head.encode("latin-1") + data)
            await self._step("sending the request", writer.drain())
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"connection lost while sending: {exc}") from exc
        try:
            status, resp_headers = await self._read_head(reader)
            while 100 <= status < 200:  # interim answers (100 Continue) come before the real one
                status, resp_headers = await self._read_head(reader)
            content = await self._read_body(reader, status, method, resp_headers)
        except HttpError:
            await self.aclose()
            raise
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise ProtocolError(f"connection lost while reading the answer: {exc}") from exc
        if resp_headers.get("connection", "").lower() == "close":
            await self.aclose()
        return Response(status, resp_headers, content)

    async def _readline(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line: bytes = await self._step("waiting for the answer", reader.readuntil(b"\n"))
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError("server closed the connection without answering") from exc
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("answer line too long") from exc
        return line.rstrip(b"\r\n")

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        line = await self._readline(reader)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP answer: {line[:80]!r}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = await self._readline(reader)
            if not line:
                return int(parts[1]), headers
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"bad header line: {line[:80]!r}")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        raise ProtocolError("too many header lines")

    async def _read_body(
        self, reader: asyncio.StreamReader, status: int, method: str, headers: dict[str, str]
    ) -> bytes:
        if method == "HEAD" or status in (204, 304):
            return b""
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return await self._read_chunked(reader)
            if "content-length" in headers:
                try:
                    length = int(headers["content-length"])
                except ValueError:
                    raise ProtocolError(f"bad Content-Length: {headers['content-length']!r}") from None
                if not 0 <= length <= MAX_BODY:
                    raise ProtocolError(f"answer of {length} bytes refused")
                return bytes(await self._step("reading the answer", reader.readexactly(length)))
            body = bytearray()  # neither length nor chunks: the answer runs to the end of the connection
            while chunk := await self._step("reading the answer", reader.read(65536)):
                body += chunk
                if len(body) > MAX_BODY:
                    raise ProtocolError("answer too large")
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError("server closed the connection in the middle of the answer") from exc
        await self.aclose()
        return bytes(body)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        out = bytearray()
        while True:
            size_line = (await self._readline(reader)).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_line[:20]!r}") from None
            if size == 0:
                while await self._readline(reader):  # trailers, up to the blank line
                    pass
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise ProtocolError("answer too large")
            out += await self._step("reading the answer", reader.readexactly(size))
            await self._readline(reader)
