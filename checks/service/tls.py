"""tls://host:port — the server's certificate: verified (system CAs or ca_file), host name matched, days left.

An expired certificate, one for another name, or one from an unknown CA is a wrong answer: the HIS
clients will refuse it too. When verification fails the certificate is fetched once more without
verifying, only to say when it expires (DER read with `cryptography`, part of the service extra).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

from hisguard.checks.base import ProbeContext
from hisguard.checks.service.config import Config, Endpoint, Target
from hisguard.checks.service.result import Answer, Certificate, NotChecked, WrongAnswer

# OpenSSL verify codes (x509_vfy.h) worth saying in words a hospital engineer acts on.
_EXPIRED, _NOT_YET_VALID, _HOSTNAME = 10, 9, 62
_UNTRUSTED = {18, 19, 20, 21, 2}


def context(ca_file: Path | None, verify: bool, ctx: ProbeContext) -> ssl.SSLContext:
    """One SSL context per (CA file, verify) for the job's life: loading the CA store is the costly part."""
    key = f"service.ssl:{ca_file or ''}:{verify}"
    found = ctx.memory.get(key)
    if found is None:
        try:
            found = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise NotChecked(f"cannot load ca_file {ca_file}: {exc}") from None
        if not verify:
            found.check_hostname = False
            found.verify_mode = ssl.CERT_NONE
        ctx.memory[key] = found
    return found


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "localityName": "L", "stateOrProvinceName": "ST"}  # fmt: skip


def _name(rdns: Any) -> str:
    """'CN=…,O=…' (RFC 4514, most specific first) from getpeercert()'s nested tuples."""
    return ",".join(f"{_SHORT.get(k, k)}={v}" for rdn in reversed(rdns or ()) for k, v in rdn)


def certificate(ssl_object: Any) -> Certificate | None:
    """The peer certificate's expiry and names: from the verified certificate, else read from its DER."""
    if ssl_object is None:
        return None
    info = ssl_object.getpeercert()
    if info and info.get("notAfter"):
        return Certificate(
            ssl.cert_time_to_seconds(info["notAfter"]), _name(info.get("subject")), _name(info.get("issuer"))
        )
    der = ssl_object.getpeercert(binary_form=True)
    return from_der(der) if der else None


def from_der(der: bytes) -> Certificate | None:
    try:
        from cryptography import x509
    except ImportError:  # without the service extra: expiry unknown, the rest still checked
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    return Certificate(
        cert.not_valid_after_utc.timestamp(), cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    )


def server_name(target: Target, end: Endpoint) -> str:
    return target.server_name or end.host


def why(exc: ssl.SSLCertVerificationError, name: str, cert: Certificate | None) -> str:
    """The verification failure in words."""
    code = getattr(exc, "verify_code", None)
    if code == _EXPIRED:
        days = f" {abs(cert.days_left()):.1f} days ago" if cert else ""
        return f"certificate expired{days}"
    if code == _NOT_YET_VALID:
        return "certificate is not valid yet (check the clocks)"
    if code == _HOSTNAME:
        return f"certificate does not name {name}" + (f" (it is for {cert.subject})" if cert else "")
    if code in _UNTRUSTED:
        return f"certificate not trusted ({getattr(exc, 'verify_message', exc)}): give ca_file"
    return f"certificate rejected: {getattr(exc, 'verify_message', None) or exc}"


async def fetch_unverified(end: Endpoint, name: str) -> Certificate | None:
    """The certificate as served, without verifying it (only to read its dates)."""
    loose = ssl.create_default_context()
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.open_connection(end.host, end.port, ssl=loose, server_hostname=name)
    except (OSError, ssl.SSLError):
        return None
    try:
        return certificate(writer.get_extra_info("ssl_object"))
    finally:
        writer.close()


async def verification_failed(exc: ssl.SSLCertVerificationError, end: Endpoint, name: str) -> WrongAnswer:
    cert = await fetch_unverified(end, name)
    return WrongAnswer(why(exc, name, cert), cert=cert, verify_code=getattr(exc, "verify_code", None))


async def check(target: Target, end: Endpoint, cfg: Config, ctx: ProbeContext, deadline: float) -> Answer:
    name = server_name(target, end)
    ssl_ctx = context(target.ca_file, target.verify, ctx)
    started = time.perf_counter()
    try:
        _, writer = await asyncio.open_connection(
            end.host, end.port, ssl=ssl_ctx, server_hostname=name, ssl_handshake_timeout=deadline
        )
    except ssl.SSLCertVerificationError as exc:
        raise await verification_failed(exc, end, name) from None
    latency = (time.perf_counter() - started) * 1000
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        cert = certificate(ssl_object)
        version = ssl_object.version() if ssl_object else None
    finally:
        writer.close()
    if cert is not None and cert.days_left() <= 0:  # verify = false: an expired certificate still fails
        raise WrongAnswer(f"certificate expired {abs(cert.days_left()):.1f} days ago", cert=cert)
    return Answer({"tls_version": version}, latency, cert)
