"""Real peers on 127.0.0.1 for the service probe: an HTTP(S) server, a hung socket, an SMTP banner, a DICOM
Verification SCP (pynetdicom), MLLP listeners (python-hl7) and a DNS server (Debian's dnsmasq).

Every peer takes a free port at start and is stopped by its fixture; nothing here judges the probe.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import peers
from tests.support.procs import free_port, wait_until

AUTH = ("his", "s3cret:with-colon")


class Handler(BaseHTTPRequestHandler):
    """/ok 200 with a body, /error 500, /slow?ms=N, /loop ⇄ /loop2, /hop → /ok, /auth basic, /gbk GBK body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/ok":
            self._send(200, "HIS 应用服务 status=UP".encode(), {"Content-Type": "text/plain; charset=utf-8"})
        elif path == "/error":
            self._send(500, b"java.lang.OutOfMemoryError", {"Content-Type": "text/plain"})
        elif path == "/slow":
            time.sleep(int(query.removeprefix("ms=") or "1000") / 1000)
            self._send(200, b"slow but fine")
        elif path in ("/loop", "/loop2"):
            self._send(302, headers={"Location": "/loop2" if path == "/loop" else "/loop"})
        elif path == "/hop":
            self._send(301, headers={"Location": "/ok"})
        elif path == "/auth":
            want = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()
            if self.headers.get("Authorization") == want:
                self._send(200, b"welcome")
            else:
                self._send(401, headers={"WWW-Authenticate": 'Basic realm="his"'})
        elif path == "/huge":  # a body that never ends (chunked)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(1000):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass
        elif path == "/to-file":
            self._send(302, headers={"Location": "file:///etc/passwd"})
        elif path == "/to-nowhere":
            self._send(302, headers={"Location": "http://[::1/broken"})
        elif path == "/gbk":
            self._send(200, "门诊收费 正常".encode("gbk"), {"Content-Type": "text/html; charset=gbk"})
        else:
            self._send(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # many targets connect at once (the stdlib's default backlog is 5)


class HttpPeer:
    """A ThreadingHTTPServer, plain or behind TLS with the given certificate."""

    def __init__(self, cert: tuple[Path, Path] | None = None) -> None:
        self.server = _Server(("127.0.0.1", 0), Handler)
        if cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(str(cert[0]), str(cert[1]))
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if cert else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HttpPeer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class GarbagePeer:
    """Answers every connection with `data`, then keeps it open (or closes it): hostile or broken peers."""

    def __init__(self, data: bytes, close: bool = False) -> None:
        self.data = data
        self.close = close
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            try:
                conn.sendall(self.data)
                if self.close:
                    conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> GarbagePeer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


class HungPeer:
    """Accepts connections and never says a word (a hung application server); closes them at exit."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def __enter__(self) -> HungPeer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(2)
        for c in self.held:
            c.close()
        self.sock.close()


def make_cert(where: Path, days: float, name: str = "his-app.hospital.local") -> dict[str, Path]:
    """A CA and a server certificate for `name`, 127.0.0.1 and localhost, valid for `days` from now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    where.mkdir(parents=True, exist_ok=True)

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject("医院内部 CA hospital test CA"))
        .issuer_name(subject("医院内部 CA hospital test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(name), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject(name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=360))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    out = {"ca": where / "ca.pem", "cert": where / "server.pem", "key": where / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(pem))
    out["cert"].write_bytes(cert.public_bytes(pem))
    out["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return out


class SmtpPeer:
    """aiosmtpd: a real SMTP server whose greeting is a banner ("220 … ESMTP")."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Sink

        self.port = free_port()
        self.controller = Controller(Sink(), hostname="127.0.0.1", port=self.port, server_hostname="mail.hospital")

    def __enter__(self) -> SmtpPeer:
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()


class DicomPeer:
    """pynetdicom's own Verification SCP, answering C-ECHO for the called AE title `aet` only."""

    def __init__(self, aet: str = "PACS") -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        self.ae = AE(ae_title=aet)
        self.ae.add_supported_context(Verification)
        self.ae.require_called_aet = True
        self.port = free_port()
        self.server: Any = None

    def start(self) -> DicomPeer:
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def __enter__(self) -> DicomPeer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class MllpPeer:
    """An MLLP listener (python-hl7's asyncio server) acknowledging with `ack` ("AA", "AE"), or, with None,
    reading each message and never answering."""

    def __init__(self, ack: str | None) -> None:
        self.ack = ack
        self.port = free_port()
        self.received: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None

    async def _client(self, reader: Any, writer: Any) -> None:
        import hl7

        try:
            while True:
                msg = await reader.readmessage()
                self.received.append(str(msg))
                if self.ack is not None:
                    writer.writemessage(msg.create_ack(ack_code=self.ack, application="LIS", facility="HOSP"))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, hl7.HL7Exception):
            writer.close()

    async def _start(self) -> None:
        import hl7.mllp

        self.server = await hl7.mllp.start_hl7_server(self._client, "127.0.0.1", self.port, encoding="utf-8")

    def __enter__(self) -> MllpPeer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Dnsmasq:
    """Debian's dnsmasq answering for hospital.local from a hosts file, nothing upstream."""

    def __init__(self, workdir: Path, hosts: dict[str, str]) -> None:
        self.exe = peers.need_binary("dnsmasq")
        workdir.mkdir(parents=True, exist_ok=True)
        self.hosts_file = workdir / "hosts"
        self.hosts_file.write_text("".join(f"{ip} {name}\n" for name, ip in hosts.items()))
        self.log = workdir / "dnsmasq.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dnsmasq:
        cmd = [self.exe, "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
               "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
               f"--addn-hosts={self.hosts_file}", "--pid-file=", "--user=root", "--local=/hospital.local/",
               "--log-facility=-"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_until(self._ready, 10, what="dnsmasq listening")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"dnsmasq exited: {self.log.read_text()[-1000:]}")
        return "read " in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class SilentUdp:
    """A UDP port that receives and never answers (a DNS server that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def __enter__(self) -> SilentUdp:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()
