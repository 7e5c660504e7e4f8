"""snmpsim as a real SNMP agent for the tests (and bench/).

snmpsim refuses to run as root and drops to nobody; our interpreter's stdlib may sit under a
0700 home, so a small launcher imports what snmpsim loads lazily before privileges drop. Data
and cache live in a directory nobody can read and write. Every simulated device gets its own
loopback address (127.0.0.0/8 all answers), so traps and polls can tell devices apart.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import snmpsim

SHIPPED = Path(snmpsim.__file__).parent / "data"  # real recordings shipped with snmpsim

LAUNCHER = """\
import sys
import dbm, dbm.dumb  # noqa: F401  - snmpsim's index, opened after privileges drop
import encodings.ascii, encodings.idna, encodings.latin_1, encodings.utf_8  # noqa: F401
from snmpsim.commands.responder import main
sys.exit(main())
"""

V3_USER, V3_AUTH, V3_PRIV = "hisguard", "auth-secret-1", "priv-secret-1"
ENGINE_ID = "8000000001020304"


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _as_nobody() -> tuple[int, int]:
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


class SnmpSim:
    """One snmpsim process serving `data/<community>.snmprec` on one or more loopback endpoints.

    SNMPv3 user `hisguard` (SHA / AES) selects a recording by context name = community.
    """

    def __init__(
        self, addresses: tuple[str, ...] = ("127.0.0.1",), port: int | None = None, netns: str | None = None
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hg-snmpsim-"))
        self.data = self.root / "data"
        self.cache = self.root / "cache"
        self.data.mkdir()
        self.cache.mkdir()
        self.addresses = addresses
        self.netns = netns  # run inside this network namespace (a device whose link a test can cut)
        self.port = port or (1161 if netns else free_udp_port(addresses[0]))
        self.log = self.root / "snmpsim.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._clock = int(time.time()) + 10
        (self.root / "launch.py").write_text(LAUNCHER)
        self._chown()

    def _chown(self) -> None:
        if os.geteuid() != 0:
            return
        uid, gid = _as_nobody()
        os.chmod(self.root, 0o755)
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, uid, gid)

    def write(self, community: str, text: str) -> Path:
        """(Re)write a device's recording; snmpsim re-indexes a file whose mtime moved forward."""
        path = self.data / f"{community}.snmprec"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        # snmpsim compares whole-second mtimes, and rebuilds only if the file is newer than its index.
        self._clock = max(self._clock + 2, int(time.time()) + 10)
        os.utime(path, (self._clock, self._clock))
        self._chown()
        return path

    def copy(self, community: str, source: Path) -> Path:
        return self.write(community, source.read_text())

    def remove(self, community: str) -> None:
        (self.data / f"{community}.snmprec").unlink(missing_ok=True)

    def start(self, wait: bool = True) -> SnmpSim:
        """Serve the recordings written so far (snmpsim learns its communities at start-up)."""
        self.write("__ready", "1.3.6.1.2.1.1.5.0|4|ready\n")
        cmd = [
            sys.executable,
            str(self.root / "launch.py"),
            f"--v3-engine-id={ENGINE_ID}",  # must come first
            f"--data-dir={self.data}",
            f"--cache-dir={self.cache}",
            *[f"--agent-udpv4-endpoint={a}:{self.port}" for a in self.addresses],
            f"--v3-user={V3_USER}",
            f"--v3-auth-key={V3_AUTH}",
            "--v3-auth-proto=SHA",
            f"--v3-priv-key={V3_PRIV}",
            "--v3-priv-proto=AES",
            "--log-level=error",
        ]
        if os.geteuid() == 0:
            cmd += ["--process-user=nobody", "--process-group=nogroup"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
        )
        if wait:
            self._wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        snmpget = shutil.which("snmpget")
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"snmpsim exited: {self.log.read_text()[-3000:]}")
            if self._answers(snmpget):
                return
            time.sleep(0.2)
        raise RuntimeError(f"snmpsim did not answer within {timeout}s: {self.log.read_text()[-3000:]}")

    def _answers(self, snmpget: str | None) -> bool:
        if snmpget:
            r = subprocess.run(
                [
                    snmpget,
                    "-v2c",
                    "-c",
                    "__ready",
                    "-t",
                    "0.5",
                    "-r",
                    "0",
                    f"{self.addresses[0]}:{self.port}",
                    "1.3.6.1.2.1.1.5.0",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            return "ready" in r.stdout
        # Without net-snmp: a hand-made v2c GET (community __ready) and any reply counts.
        from pyasn1.codec.ber import encoder
        from pysnmp.proto import api

        p = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        pdu = p.GetRequestPDU()
        p.apiPDU.set_defaults(pdu)
        p.apiPDU.set_varbinds(pdu, [("1.3.6.1.2.1.1.5.0", p.Null(""))])
        msg = p.Message()
        p.apiMessage.set_defaults(msg)
        p.apiMessage.set_community(msg, "__ready")
        p.apiMessage.set_pdu(msg, pdu)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.sendto(encoder.encode(msg), (self.addresses[0], self.port))
            try:
                return bool(s.recv(65535))
            except OSError:
                return False

    def pause(self) -> None:
        """The device goes silent (the process stops answering), as a dead SNMP agent would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SnmpSim:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


class GarbageAgent:
    """A UDP port that answers every request with bytes that are not SNMP (a device gone wrong)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                _, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.sock.sendto(b"\x30\x82\xff\xffHTTP/1.1 400 garbage\r\n", peer)

    def __enter__(self) -> GarbageAgent:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
