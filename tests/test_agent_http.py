"""The agent's own HTTP/1.1 client (agent/http.py) against scripted servers: answer framings,
kept-alive connections, a server closing an idle connection, timeouts, proxies from the environment."""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hisguard.agent.http import Client, ConnectError, ProtocolError, Timeout, environment_proxy


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class Scripted:
    """An HTTP server answering each request with the next scripted answer (bytes, or 'drop' / 'hang')."""

    answers: list[bytes | str]
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None

    async def start(self, context: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(method, target, headers, body, conn))
                answer = self.answers.pop(0)
                if answer == "drop":
                    break
                if answer == "hang":
                    await asyncio.sleep(30)
                assert isinstance(answer, bytes)
                writer.write(answer)
                await writer.drain()
                framed = b"content-length" in answer.lower() or b"chunked" in answer.lower()
                if b"connection: close" in answer.lower() or not framed:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes = b'{"stored": []}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3;x=1\r\n 1}\r\n0\r\nT: t\r\n\r\n'
CONTINUE_THEN_OK = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"[1]")
TO_THE_END = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n\r\nbusy, come back"


async def test_answers_of_every_framing_over_one_kept_alive_connection() -> None:
    srv = Scripted([ok(), CHUNKED, CONTINUE_THEN_OK, TO_THE_END, ok(b"{}")])
    port = await srv.start()
    client = Client(f"http://127.0.0.1:{port}/hisguard/", {"Authorization": "Bearer t"}, timeout=5)
    try:
        r = await client.post_json("/api/v1/reports", {"agent": "门诊-01", "n": [1, 2]})
        assert (r.status_code, r.json()) == (200, {"stored": []})
        assert (await client.post_json("/x", {})).json() == {"a": 1}
        assert (await client.post_json("/x", {})).json() == [1]
        r = await client.post_json("/x", {})
        assert (r.status_code, r.headers["retry-after"], r.text) == (503, "7", "busy, come back")
        assert (await client.post_json("/x", {})).json() == {}
    finally:
        await client.aclose()
        await srv.close()
    first = srv.seen[0]
    assert (first.method, first.target) == ("POST", "/hisguard/api/v1/reports")
    assert first.headers["host"] == f"127.0.0.1:{port}" and first.headers["authorization"] == "Bearer t"
    assert first.headers["content-type"] == "application/json"
    assert first.body == '{"agent":"门诊-01","n":[1,2]}'.encode()
    # One connection until the answer that ran to its end; then a new one.
    assert [s.connection for s in srv.seen] == [1, 1, 1, 1, 2]


async def test_an_idle_connection_the_server_closed_is_replaced_once_and_a_fresh_failure_is_an_error() -> None:
    srv = Scripted([ok(), "drop", ok(b"[2]"), "drop"])
    port = await srv.start()
    client = Client(f"http://127.0.0.1:{port}", {}, timeout=5)
    try:
        assert (await client.post_json("/x", {})).json() == {"stored": []}
        assert (await client.post_json("/x", {})).json() == [2]  # dropped on the old connection: sent again
        await client.aclose()
        with pytest.raises(ProtocolError, match="closed the connection"):
            await client.post_json("/x", {})  # dropped on a new connection: no second try
    finally:
        await client.aclose()
        await srv.close()
    assert [s.connection for s in srv.seen] == [1, 1, 2, 3]


async def test_refused_connection_and_silent_server() -> None:
    srv = Scripted(["hang"])
    port = await srv.start()
    client = Client(f"http://127.0.0.1:{port}", {}, timeout=0.3)
    try:
        with pytest.raises(Timeout, match=r"0\.3s"):
            await client.post_json("/x", {})
    finally:
        await client.aclose()
        await srv.close()
    await asyncio.sleep(0.1)
    closed = Client(f"http://127.0.0.1:{port}", {}, timeout=2)
    with pytest.raises(ConnectError):
        await closed.post_json("/x", {})
    with pytest.raises(ValueError):
        await closed.post_json("/x", {"v": float("nan")})  # not JSON: refused before sending


async def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    srv = Scripted([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"])
    port = await srv.start()
    client = Client(f"http://127.0.0.1:{port}", {}, timeout=2)
    try:
        with pytest.raises(ProtocolError, match="not an HTTP answer"):
            await client.post_json("/x", {})
    finally:
        await client.aclose()
        await srv.close()


def test_proxy_from_the_environment_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert environment_proxy("https://his.example.org") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:3128")
    monkeypatch.setenv("https_proxy", "proxy.lan:3128")  # lower case wins; no scheme means http://
    monkeypatch.setenv("ALL_PROXY", "http://all.lan:8080")
    assert environment_proxy("https://his.example.org") == "http://proxy.lan:3128"
    assert environment_proxy("http://his.example.org") == "http://all.lan:8080"
    for no_proxy, url, direct in (
        ("*", "https://his.example.org", True),
        ("example.org", "https://example.org", True),
        ("example.org", "https://his.example.org", True),
        ("example.org", "https://notexample.org", False),
        (".example.org", "https://example.org", False),
        (".example.org", "https://his.example.org", True),
        ("10.0.0.0/8, 192.168.1.5", "https://10.2.3.4:8443", True),
        ("10.0.0.0/8, 192.168.1.5", "https://192.168.1.5", True),
        ("10.0.0.0/8, 192.168.1.5", "https://192.168.1.6", False),
        ("::1", "https://[::1]:8443", True),
        ("localhost", "http://localhost:8000", True),
    ):
        monkeypatch.setenv("NO_PROXY", no_proxy)
        assert (environment_proxy(url) is None) is direct, (no_proxy, url)


@dataclass
class Proxy:
    """A forward proxy: absolute-form requests are answered here, CONNECT is a byte tunnel."""

    requests: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        self.requests.append(lines[0])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        self.auth.append(headers.get("proxy-authorization", ""))
        method, target, _ = lines[0].split(" ", 2)
        if method != "CONNECT":
            await reader.readexactly(int(headers.get("content-length", "0")))
            writer.write(ok(b'"via proxy"', "Connection: close\r\n"))
            await writer.drain()
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def test_plain_http_through_a_proxy_and_https_through_a_tunnel(tmp_path: Path) -> None:
    pytest.importorskip("cryptography.x509")
    from tests.test_tls import make_pki

    pki = make_pki(tmp_path)
    proxy = Proxy()
    pport = await proxy.start()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(pki["server.pem"]), str(pki["server.key"]))
    tls = Scripted([ok(b'"over tls"')])
    tport = await tls.start(server_ctx)
    via = f"http://nurse%40ward:s3cret@127.0.0.1:{pport}"
    plain = Client("http://his.example.org:8000/hg", {}, timeout=5, proxy=via)
    secure = Client(f"https://127.0.0.1:{tport}", {}, 5, ssl.create_default_context(cafile=str(pki["ca.pem"])), via)
    untrusted = Client(f"https://127.0.0.1:{tport}", {}, 5, ssl.create_default_context(), via)
    try:
        assert (await plain.post_json("/api/v1/reports", {})).json() == "via proxy"
        assert (await secure.post_json("/api/v1/reports", {})).json() == "over tls"
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.post_json("/api/v1/reports", {})
    finally:
        for c in (plain, secure, untrusted):
            await c.aclose()
        await proxy.close()
        await tls.close()
    assert proxy.requests[0] == "POST http://his.example.org:8000/hg/api/v1/reports HTTP/1.1"
    assert proxy.requests[1] == f"CONNECT 127.0.0.1:{tport} HTTP/1.1"
    assert set(proxy.auth[:2]) == {"Basic " + base64.b64encode(b"nurse@ward:s3cret").decode()}
    assert [s.target for s in tls.seen] == ["/api/v1/reports"]  # the tunnel carried the request, not the proxy
