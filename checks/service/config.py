"""The service probe's configuration: targets as URLs, each with where it sits in the hospital.

A target's URL says what to speak and to whom; the options that make sense for its scheme sit
beside it. An option given for the wrong scheme, a malformed URL, an unknown scheme or a port out
of range is a configuration error on that key (check-config names the line).
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hisguard.checks.base import Impact, ProbeConfig

# scheme → the module under checks/service/ that speaks it (loaded when a target first needs it).
PROTOCOLS: dict[str, str] = {
    "tcp": "tcp",
    "http": "http",
    "https": "http",
    "tls": "tls",
    "dns": "dns",
    "mllp": "mllp",
    "dicom": "dicom",
}
DEFAULT_PORTS = {"http": 80, "https": 443, "tls": 443, "dns": 53, "mllp": 2575, "dicom": 104}
# What a scheme needs beyond the agent's own dependencies (`pip install 'hisguard[service]'`).
NEEDS = {"dns": "dns", "mllp": "hl7", "dicom": "pynetdicom"}
# Options and the schemes they belong to.
OPTION_SCHEMES: dict[str, tuple[str, ...]] = {
    "send": ("tcp",),
    "expect": ("tcp",),
    "method": ("http", "https"),
    "status": ("http", "https"),
    "body": ("http", "https"),
    "redirects": ("http", "https"),
    "headers": ("http", "https"),
    "auth_file": ("http", "https"),
    "auth_env": ("http", "https"),
    "ca_file": ("https", "tls"),
    "verify": ("https", "tls"),
    "server_name": ("https", "tls"),
    "record": ("dns",),
    "answers": ("dns",),
    "transport": ("dns",),
    "message_type": ("mllp",),
    "message": ("mllp",),
    "receiving_application": ("mllp",),
    "receiving_facility": ("mllp",),
    "hl7_version": ("mllp",),
    "encoding": ("mllp",),
    "calling_ae": ("dicom",),
}
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_AE_TITLE = re.compile(r"^[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15}$")  # DICOM AE: no backslash, ≤ 16
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_STATUS = re.compile(r"^[1-5]xx$")


@dataclass(frozen=True)
class Endpoint:
    """What a target's URL says: scheme, host, port, and the scheme's own part (path, AE title, name)."""

    scheme: str
    host: str
    port: int
    path: str = ""
    user: str | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _ae_title(value: str) -> str:
    if not _AE_TITLE.match(value):
        raise ValueError("an AE title is 1–16 characters, no backslash")
    return value


def _split(url: str) -> SplitResult:
    if _CONTROL.search(url):
        raise ValueError("the URL contains spaces or control characters")
    if "://" not in url:
        raise ValueError(f"{url!r} is not a URL (scheme://host:port…, e.g. http://10.0.0.8:8080/his/health)")
    parts = urlsplit(url)
    if parts.scheme not in PROTOCOLS:
        known = ", ".join(f"{s}://" for s in PROTOCOLS)
        raise ValueError(f"unknown scheme {parts.scheme!r} (known: {known})")
    return parts


@functools.lru_cache(maxsize=4096)
def parse_url(url: str) -> Endpoint:
    """The endpoint of a target URL; ValueError says what is wrong with it."""
    parts = _split(url)
    scheme = parts.scheme
    try:
        port = parts.port
    except ValueError:
        raw = parts.netloc.rsplit(":", 1)[-1]
        raise ValueError(f"port {raw!r} is out of range (1–65535) or not a number") from None
    if port == 0:
        raise ValueError("port 0 is out of range (1–65535)")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{url!r} names no host")
    if port is None:
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{scheme}:// needs a port (e.g. {scheme}://{host}:7000)")
        port = DEFAULT_PORTS[scheme]
    if parts.fragment:
        raise ValueError("a URL fragment (#…) means nothing here")
    user = parts.username
    if scheme == "dicom":
        if not user or parts.password is not None or not _AE_TITLE.match(user):
            raise ValueError(
                "dicom:// needs the called AE title before @ (dicom://PACS@10.0.0.20:104; ≤ 16 characters)"
            )
    elif user is not None or parts.password is not None:
        hint = " (give auth_file or auth_env)" if scheme in ("http", "https") else ""
        raise ValueError(f"credentials do not belong in a {scheme}:// URL{hint}")
    path = parts.path
    if scheme == "dns":
        name = path.strip("/")
        if not name or "/" in name or parts.query:
            raise ValueError("dns:// needs the name to resolve: dns://SERVER/his-app.hospital.local")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("dns://: the server must be an IP address (the hospital's DNS server)") from None
        path = name
    elif scheme in ("http", "https"):
        path = path or "/"
        if parts.query:
            path += "?" + parts.query
    elif path not in ("", "/") or parts.query:
        raise ValueError(f"{scheme}:// takes no path or query (only {scheme}://host:port)")
    return Endpoint(scheme, host, port, path, user)


class Target(Impact):
    """One service: its URL, what staff call it, where it sits in the hospital, and what counts as answering."""

    url: str = Field(min_length=1, max_length=2000, description="tcp:// http(s):// tls:// dns:// mllp:// dicom://")
    name: str | None = Field(None, max_length=200, description="What staff call it (HIS 应用服务, PACS)")
    node: str | None = Field(None, description="Topology node it runs on (default: matched by the URL's host)")
    timeout: float | None = Field(None, gt=0, le=300, description="Deadline for this target (default: the job's)")
    slow_ms: float | None = Field(None, gt=0, description="An answer slower than this is too slow")
    # tcp://
    send: str | None = Field(None, max_length=4096, description="Sent after connecting (include \\r\\n yourself)")
    expect: str | None = Field(None, description="Regular expression the reply (or banner) must match")
    # http:// https://
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    status: list[int | str] = Field(default_factory=lambda: ["2xx"], description='Accepted codes: 200, "2xx"')
    body: str | None = Field(None, description="Regular expression the response body must match")
    redirects: int = Field(5, ge=0, le=20, description="Redirects followed at most (a loop is a wrong answer)")
    headers: dict[str, str] = Field(default_factory=dict)
    auth_file: Path | None = Field(None, description="File holding user:password for basic authentication")
    auth_env: str | None = Field(None, description="Environment variable holding user:password")
    # https:// tls://
    ca_file: Path | None = Field(None, description="CA certificates to verify against (default: the system's)")
    verify: bool = Field(True, description="false: accept any certificate (still reports its expiry)")
    server_name: str | None = Field(None, description="Name the certificate must carry (default: the URL's host)")
    # dns://
    record: Literal["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"] = "A"
    answers: list[str] = Field(default_factory=list, description="Each must be among the answers")
    transport: Literal["udp", "tcp"] = "udp"
    # mllp://
    message_type: str = Field("NMQ^N01", pattern=r"^[A-Z0-9]{3}(\^[A-Z0-9]{3}){0,2}$")
    message: str | None = Field(None, max_length=65536, description="A whole message to send instead (MSH first)")
    receiving_application: str = Field("", max_length=180)
    receiving_facility: str = Field("", max_length=180)
    hl7_version: str = Field("2.4", pattern=r"^2\.[1-9](\.\d)?$")
    encoding: str = Field("utf-8", description="Character set of the messages (utf-8, gb18030…)")
    # dicom://
    calling_ae: str | None = Field(None, description="Calling AE title (default: the job's)")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        url = url.strip()
        end = parse_url(url)
        module = NEEDS.get(end.scheme)
        if module and importlib.util.find_spec(module) is None:
            raise ValueError(f"{end.scheme}:// needs the {module} package: pip install 'hisguard[service]'")
        return url

    @field_validator(*OPTION_SCHEMES)
    @classmethod
    def _belongs(cls, value: Any, info: ValidationInfo) -> Any:
        url = info.data.get("url")
        if url is None:  # the URL itself is wrong; that error is reported
            return value
        scheme = urlsplit(url).scheme
        allowed = OPTION_SCHEMES[str(info.field_name)]
        if scheme not in allowed:
            raise ValueError(f"only for {', '.join(s + '://' for s in allowed)} targets, not {scheme}://")
        return value

    @field_validator("expect", "body")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("status")
    @classmethod
    def _status(cls, codes: list[int | str]) -> list[int | str]:
        if not codes:
            raise ValueError("give at least one accepted status")
        for c in codes:
            if isinstance(c, int) and not 100 <= c <= 599:
                raise ValueError(f"status {c} is not an HTTP status (100–599)")
            if isinstance(c, str) and not _STATUS.match(c):
                raise ValueError(f'status {c!r}: give a code (200) or a class ("2xx")')
        return codes

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for k, v in headers.items():
            if not _HEADER_NAME.match(k) or "\r" in v or "\n" in v or "\x00" in v:
                raise ValueError(f"header {k!r}: not a valid header name or value")
        return headers

    @field_validator("calling_ae")
    @classmethod
    def _ae(cls, value: str | None) -> str | None:
        return None if value is None else _ae_title(value)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown character set {value!r}") from None
        return value

    @field_validator("message")
    @classmethod
    def _message(cls, value: str | None) -> str | None:
        if value is not None and not value.lstrip().startswith("MSH|"):
            raise ValueError("an HL7 v2 message starts with its MSH segment (MSH|^~\\&|…)")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> Target:
        if self.auth_file is not None and self.auth_env is not None:
            raise ValueError("give auth_file or auth_env, not both")
        return self

    @property
    def endpoint(self) -> Endpoint:
        return parse_url(self.url)

    def impact(self) -> Impact:
        """Where it sits in the hospital, without the rest of the target."""
        return Impact.model_validate(self.model_dump(include=set(Impact.model_fields)))


class Config(ProbeConfig):
    interval: float = Field(30.0, gt=0, le=86400)
    timeout: float = Field(15.0, gt=0)
    fail_after: int = Field(2, ge=1, description="Bad rounds before a service counts as down (one blip is not)")
    fail_window: int = Field(3, ge=1)
    clear_after: int = Field(2, ge=1)
    target_timeout: float | None = Field(
        None, gt=0, le=300, description="Each target's deadline (default: what fits the job's timeout, ≤ 5 s)"
    )
    slow_ms: float | None = Field(None, gt=0, description="Default latency threshold for every target")
    # Fewer at once keeps latencies true: each check costs the agent's one event loop ~2 ms of CPU, and a
    # target waiting for the loop would be timed as slow (measured: 200 at once inflate a 2 ms answer ~0.9 s).
    concurrency: int = Field(64, ge=1, le=1000, description="Targets checked at once")
    calling_ae: str = Field("HISGUARD", description="Calling AE title for dicom:// (the PACS may check it)")
    cert_warn_days: float = Field(30.0, gt=0, description="A certificate expiring within this is routine")
    cert_urgent_days: float = Field(7.0, ge=0, description="…within this, urgent (expired: failing)")
    targets: list[Target] = Field(min_length=1)

    @field_validator("calling_ae")
    @classmethod
    def _ae(cls, value: str) -> str:
        return _ae_title(value)

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: list[Target]) -> list[Target]:
        twice = [url for url, n in Counter(t.url for t in targets).items() if n > 1]
        if twice:  # the URL is the condition's subject: two targets would share one state
            raise ValueError(f"target {twice[0]} is listed twice")
        return targets

    @model_validator(mode="after")
    def _load_protocols(self) -> Config:
        # Loaded with the configuration, not inside the first round: importing pynetdicom takes about a
        # second, which would count against the first targets' deadlines.
        for scheme in {t.endpoint.scheme for t in self.targets}:
            try:
                importlib.import_module(f"hisguard.checks.service.{PROTOCOLS[scheme]}")
            except ImportError:
                pass  # the target's url already says which package is missing
        return self

    @model_validator(mode="after")
    def _fits(self) -> Config:
        if self.cert_urgent_days >= self.cert_warn_days:
            raise ValueError("cert_urgent_days must be below cert_warn_days")
        waves = math.ceil(len(self.targets) / self.concurrency)
        room = self.timeout * 0.9 / waves  # the round must end before the agent gives up on it
        if self.target_timeout is None:
            self.target_timeout = min(5.0, room)
        worst = max(self.deadline(t) for t in self.targets)
        if worst > room:
            raise ValueError(
                f"{len(self.targets)} targets, {self.concurrency} at a time, {worst:g}s each do not fit in "
                f"timeout ({self.timeout:g}s): raise timeout or concurrency, or lower the targets' timeout"
            )
        return self

    def deadline(self, target: Target) -> float:
        return target.timeout or self.target_timeout or 5.0

    def slow(self, target: Target) -> float | None:
        return target.slow_ms or self.slow_ms
