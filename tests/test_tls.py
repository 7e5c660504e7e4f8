"""TLS from agent to server: `hisguard-server run --tls-cert/--tls-key`, the agent verifying against
server.ca_bundle, and optional pinning of the server certificate's SHA-256 (checked in the
handshake, before the token is sent). The CA and certificates are made here with `cryptography`."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hisguard.agent.config import load_config
from hisguard.agent.delivery import DeliveryError, Sender
from hisguard.agent.store import StateStore
from tests.support.procs import ServerProc, wait_until
from tests.support.reports import incident

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(where: Path) -> dict[str, Path | str]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    now = dt.datetime.now(dt.timezone.utc)
    out: dict[str, Path | str] = {}

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("hisguard test CA")
    _, other_ca = ca("someone else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("hisguard server"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    for name, obj in (("ca.pem", ca_cert), ("other-ca.pem", other_ca), ("server.pem", cert)):
        (where / name).write_bytes(obj.public_bytes(pem))
        out[name] = where / name
    (where / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (where / "server.key").chmod(0o600)
    out["server.key"] = where / "server.key"
    out["pin"] = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return out


class TlsServer(ServerProc):
    def __init__(self, data_dir: Path, pki: dict[str, Path | str]) -> None:
        super().__init__(data_dir, extra_config="[server.security]\nrate_per_token = 1000\nrate_burst = 1000\n")
        self.pki = pki
        self.url = f"https://127.0.0.1:{self.port}"

    def start(self) -> TlsServer:
        cmd = [sys.executable, "-m", "hisguard.server.cli", "run", "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--config", str(self.config), "--tls-cert", str(self.pki["server.pem"])]
        cmd += ["--tls-key", str(self.pki["server.key"]), "--log-level", "DEBUG"]
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_until(self._healthy, 30, what="https /healthz")
        return self

    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki["ca.pem"]))

    def _healthy(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", verify=self.ssl(), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def incidents(self) -> list[dict]:  # type: ignore[override]
        r = httpx.get(
            f"{self.url}/api/v1/incidents",
            headers={"Authorization": f"Bearer {self.engineer_token}"},
            verify=self.ssl(),
        )
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> TlsServer:
    where = tmp_path_factory.mktemp("pki")
    srv = TlsServer(where / "srv", make_pki(where)).start()
    yield srv
    srv.stop()


def deliver(tmp_path: Path, srv: TlsServer, key: str, server_conf: str) -> tuple[int | None, str | None, int]:
    token = srv.agent_token("ws-01", "renmin")
    cfg = tmp_path / f"{key}.toml"
    cfg.write_text(
        f'[agent]\nname = "ws-01"\nstate_dir = "{key}"\n[server]\nurl = "{srv.url}"\ntoken = "{token}"\n{server_conf}'
    )
    conf = load_config(cfg)
    store = StateStore(conf.agent.state_dir / "agent.sqlite3")
    store.enqueue(incident(key))
    sender = Sender(conf, store, token)

    async def go() -> tuple[int | None, str | None]:
        try:
            return await sender.flush(), None
        except DeliveryError as exc:
            return None, str(exc)
        finally:
            await sender.aclose()

    sent, error = asyncio.run(go())
    backlog = store.backlog()
    store.close()
    return sent, error, backlog


def test_agent_delivers_over_tls_verified_against_its_ca_bundle(tls_server: TlsServer, tmp_path: Path) -> None:
    sent, error, backlog = deliver(tmp_path, tls_server, "k-ca", f'ca_bundle = "{tls_server.pki["ca.pem"]}"\n')
    assert (sent, error, backlog) == (1, None, 0)
    assert any(i["key"] == "k-ca" for i in tls_server.incidents())
    r = httpx.get(f"{tls_server.url}/healthz", verify=tls_server.ssl())
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_agent_refuses_a_server_its_ca_bundle_did_not_sign(tls_server: TlsServer, tmp_path: Path) -> None:
    sent, error, backlog = deliver(tmp_path, tls_server, "k-other", f'ca_bundle = "{tls_server.pki["other-ca.pem"]}"\n')
    assert sent is None and error and "CERTIFICATE_VERIFY_FAILED" in error
    assert backlog == 1  # kept for when the certificate is sorted out
    sent, error, _ = deliver(tmp_path, tls_server, "k-system", "")  # the system's CAs do not know a private CA
    assert sent is None and "CERTIFICATE_VERIFY_FAILED" in (error or "")
    assert not {"k-other", "k-system"} & {i["key"] for i in tls_server.incidents()}


def test_pinned_fingerprint_accepts_the_server_and_rejects_any_other_before_sending(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    pin = str(tls_server.pki["pin"])
    ca = f'ca_bundle = "{tls_server.pki["ca.pem"]}"\n'
    colons = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
    sent, error, _ = deliver(tmp_path, tls_server, "k-pin", ca + f'pin_sha256 = ["{"0" * 64}", "{colons}"]\n')
    assert (sent, error) == (1, None)
    before = tls_server.log.read_text().count("hisguard.server.ingest")
    sent, error, backlog = deliver(tmp_path, tls_server, "k-badpin", ca + f'pin_sha256 = ["{"ab" * 32}"]\n')
    assert sent is None and "not a pinned one" in (error or "") and backlog == 1
    assert tls_server.log.read_text().count("hisguard.server.ingest") == before  # no request reached the app
    assert "k-badpin" not in {i["key"] for i in tls_server.incidents()}


def test_tls_options_are_checked_before_the_server_starts(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "srv")
    for args, message in (
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "missing.key")], "not found"),
        (["--tls-cert", str(srv.config)], "both"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "hisguard.server.cli", "run", "--config", str(srv.config), *args],
            env=srv.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and message in out.stderr
