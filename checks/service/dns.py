"""dns://server/name — the hospital's DNS server resolves the name (HIS clients often find the server by name).

dnspython asks the configured server directly (UDP, falling back to TCP for a truncated answer, or TCP
only): NXDOMAIN, SERVFAIL, REFUSED or a name without the wanted record is a wrong answer; `answers`
must all be among the records.
"""

from __future__ import annotations

import time

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from hisguard.checks.base import ProbeContext
from hisguard.checks.service.config import Config, Endpoint, Target
from hisguard.checks.service.result import Answer, WrongAnswer


def _norm(text: str) -> str:
    return text.strip().rstrip(".").lower()


async def check(target: Target, end: Endpoint, cfg: Config, ctx: ProbeContext, deadline: float) -> Answer:
    query = dns.message.make_query(end.path, target.record)
    started = time.perf_counter()
    try:
        if target.transport == "tcp":
            reply = await dns.asyncquery.tcp(query, end.host, timeout=deadline, port=end.port)
        else:
            reply, _ = await dns.asyncquery.udp_with_fallback(query, end.host, timeout=deadline, port=end.port)
    except dns.exception.Timeout:
        raise TimeoutError from None
    except dns.exception.DNSException as exc:
        raise WrongAnswer(f"not a proper DNS answer: {exc}") from None
    latency = (time.perf_counter() - started) * 1000
    rcode = dns.rcode.to_text(reply.rcode())
    wanted = dns.rdatatype.from_text(target.record)
    found = [rd.to_text() for rrset in reply.answer if rrset.rdtype == wanted for rd in rrset]
    detail = {"rcode": rcode, "answers": found[:10]}
    if reply.rcode() != dns.rcode.NOERROR:
        raise WrongAnswer(f"the DNS server answered {rcode} for {end.path}", **detail)
    if not found:
        raise WrongAnswer(f"{end.path} has no {target.record} record", **detail)
    missing = [a for a in target.answers if _norm(a) not in {_norm(f) for f in found}]
    if missing:
        raise WrongAnswer(f"{end.path} resolves to {', '.join(found[:5])}, not {', '.join(missing)}", **detail)
    return Answer(detail, latency)
