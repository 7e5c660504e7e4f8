"""What one target's check came to, whatever the protocol: the outcome and its numbers.

A protocol module returns an `Answer` when the service answered as it should, raises `WrongAnswer`
when it answered otherwise, `NotChecked` when the agent could not try (a credentials file it cannot
read), and lets connection errors and the deadline propagate: `run` turns all of it into a `Result`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal

from hisguard.plan import Text

log = logging.getLogger("hisguard.checks.service")

Outcome = Literal["answered", "too_slow", "wrong_answer", "refused", "unreachable", "timeout", "not_checked"]
OUTCOMES: dict[str, Text] = {
    "answered": Text("应答正常", "answered"),
    "too_slow": Text("应答过慢", "too slow"),
    "wrong_answer": Text("应答错误", "wrong answer"),
    "refused": Text("拒绝连接", "refused"),
    "unreachable": Text("网络不可达", "unreachable"),
    "timeout": Text("超时无应答", "timed out"),
    "not_checked": Text("未能检查", "not checked"),
}
ERROR_CHARS = 300  # what a peer says is kept short in evidence


@dataclass(frozen=True)
class Certificate:
    """The server certificate's facts the plan cares about."""

    not_after: float  # epoch seconds
    subject: str = ""
    issuer: str = ""

    def days_left(self, now: float | None = None) -> float:
        return (self.not_after - (time.time() if now is None else now)) / 86400

    def detail(self) -> dict[str, Any]:
        return {
            "cert_days_left": round(self.days_left(), 2),
            "cert_not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.not_after)),
            "cert_subject": self.subject[:ERROR_CHARS],
            "cert_issuer": self.issuer[:ERROR_CHARS],
        }


@dataclass
class Answer:
    """The service answered as it should; `latency_ms` when the protocol timed itself (else: wall time)."""

    detail: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    cert: Certificate | None = None


class WrongAnswer(Exception):
    """The service answered, but not as it should (HTTP 500, MSA|AE, NXDOMAIN, a redirect loop…)."""

    def __init__(self, message: str, cert: Certificate | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.cert = cert
        self.detail = detail


class NotChecked(Exception):
    """The agent could not try (its own file or package is missing): the service's state stays as it was."""


class Unreachable(Exception):
    """No connection could be made for a reason other than a refusal (no route, name unknown)."""


@dataclass
class Result:
    outcome: Outcome
    latency_ms: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    cert: Certificate | None = None

    @property
    def answered(self) -> bool | None:
        """The service answered correctly (too slow still counts); None: not checked."""
        if self.outcome == "not_checked":
            return None
        return self.outcome in ("answered", "too_slow")


_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN, errno.EHOSTDOWN}


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def from_error(exc: BaseException) -> tuple[Outcome, str] | None:
    """The outcome a connection error means, following the chain libraries wrap errors in; None: not one."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (asyncio.TimeoutError, TimeoutError)):
            return "timeout", "no answer before the deadline"
        if isinstance(cur, ConnectionRefusedError):
            return "refused", "connection refused"
        if isinstance(cur, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return "wrong_answer", "the connection was reset without an answer"
        if isinstance(cur, socket.gaierror):
            return "unreachable", f"host name not found ({cur.strerror or cur})"
        if isinstance(cur, Unreachable):
            return "unreachable", str(cur)
        if isinstance(cur, ssl.SSLError):
            return "wrong_answer", f"TLS handshake failed: {cur.reason or cur}"
        if isinstance(cur, OSError) and cur.errno in _UNREACHABLE:
            return "unreachable", cur.strerror or str(cur)
        if isinstance(cur, OSError) and cur.errno is not None:
            return "refused", cur.strerror or str(cur)
        cur = cur.__cause__ or cur.__context__
    return None


async def run(check: Awaitable[Answer], deadline: float) -> Result:
    """Await one protocol check under its deadline; never raises (a bug is reported as not checked)."""
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 2)

    try:
        answer = await asyncio.wait_for(check, deadline)
    except asyncio.TimeoutError:
        return Result("timeout", None, f"no answer within {deadline:g}s", {"timeout_s": deadline})
    except WrongAnswer as exc:
        return Result("wrong_answer", elapsed(), _clip(str(exc)), exc.detail, exc.cert)
    except NotChecked as exc:
        return Result("not_checked", None, _clip(str(exc)))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        meaning = from_error(exc)
        if meaning is None:  # not the service's doing: a fault of the agent's own, kept visible
            log.warning("service check failed unexpectedly", exc_info=True)
            return Result("not_checked", None, _clip(f"{exc.__class__.__name__}: {exc}"))
        outcome, error = meaning
        if outcome == "timeout":
            return Result("timeout", None, f"no answer within {deadline:g}s", {"timeout_s": deadline})
        return Result(outcome, elapsed() if outcome == "wrong_answer" else None, _clip(error))
    latency = answer.latency_ms if answer.latency_ms is not None else elapsed()
    return Result("answered", round(latency, 2), None, answer.detail, answer.cert)


def summary(detail: dict[str, Any]) -> tuple[Text, str]:
    """What `once` and `doctor` print for one target: the outcome in words, and its numbers."""
    said = OUTCOMES.get(str(detail.get("outcome")), Text(str(detail.get("outcome")), str(detail.get("outcome"))))
    bits = []
    if detail.get("latency_ms") is not None:
        bits.append(f"{detail['latency_ms']:.1f} ms")
    elif detail.get("outcome") == "timeout":
        bits.append(f"> {detail.get('timeout_s', 0):g} s")
    if detail.get("status") is not None and detail.get("protocol") in ("http", "https"):
        bits.append(f"HTTP {detail['status']}")
    if detail.get("ack_code"):
        bits.append(f"MSA|{detail['ack_code']}")
    if detail.get("answers"):
        bits.append(", ".join(detail["answers"][:3]))
    if detail.get("cert_days_left") is not None:
        bits.append(f"cert {detail['cert_days_left']:.1f} days left")
    if detail.get("error"):
        bits.append(str(detail["error"]))
    return said, " · ".join(bits)
