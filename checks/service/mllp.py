"""mllp://host:port — an HL7 v2 interface engine accepts a message and acknowledges it with MSA|AA.

The message (a minimal one of `message_type`, or the configured `message`) is framed in MLLP and the
reply read and parsed with python-hl7 (`hl7.mllp`). MSA-1 AA (or CA) is an answer; AE/AR/CE/CR, an ACK
for another message, no MSA, or the connection closed without a reply is a wrong answer.
"""

from __future__ import annotations

import asyncio
import time

import hl7
import hl7.mllp

from hisguard.checks.base import ProbeContext
from hisguard.checks.service.config import Config, Endpoint, Target
from hisguard.checks.service.result import Answer, WrongAnswer

READ_LIMIT = 65536
ACCEPT = {"AA", "CA"}


def message(target: Target, host: str, control_id: str, now: float | None = None) -> str:
    """The message sent: segments separated by carriage returns, as HL7 v2 wants."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(now))
    if target.message is not None:
        text = target.message.replace("{control_id}", control_id).replace("{timestamp}", stamp)
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "\r".join(line.strip() for line in lines if line.strip())
    sender = "".join(c for c in host if c.isalnum() or c in "-_.")[:20] or "AGENT"
    fields = ["MSH", "^~\\&", "HISGUARD", sender, target.receiving_application, target.receiving_facility, stamp, "",
              target.message_type, control_id, "P", target.hl7_version]  # fmt: skip
    return "|".join(fields)


def _field(segment: hl7.Segment, index: int) -> str:
    try:
        return str(segment[index])
    except IndexError:
        return ""


async def check(target: Target, end: Endpoint, cfg: Config, ctx: ProbeContext, deadline: float) -> Answer:
    control_id = hl7.generate_message_control_id()
    text = message(target, ctx.host, control_id)
    started = time.perf_counter()
    reader, writer = await hl7.mllp.open_hl7_connection(
        end.host, end.port, limit=READ_LIMIT, encoding=target.encoding, encoding_errors="replace"
    )
    try:
        writer.writeblock(text.encode(target.encoding, errors="replace"))
        await writer.drain()
        try:
            reply = await reader.readmessage()
        except asyncio.IncompleteReadError:
            raise WrongAnswer("the connection was closed without an acknowledgement") from None
        except hl7.mllp.InvalidBlockError:
            raise WrongAnswer("the reply is not framed in MLLP") from None
        except (ValueError, hl7.HL7Exception) as exc:  # over the limit, or not HL7 at all
            raise WrongAnswer(f"the reply is not a readable HL7 message: {exc}") from None
    finally:
        writer.close()
    latency = (time.perf_counter() - started) * 1000
    try:
        msa = reply.segment("MSA")
    except KeyError:
        raise WrongAnswer("the reply has no MSA segment (not an acknowledgement)") from None
    code, acked, said = _field(msa, 1), _field(msa, 2), _field(msa, 3)
    detail = {"ack_code": code[:10], "control_id": control_id}
    if said:
        detail["ack_text"] = said[:200]
    if code not in ACCEPT:
        try:
            err = str(reply.segment("ERR"))[:200]
        except KeyError:
            err = ""
        detail.update({"err": err} if err else {})
        raise WrongAnswer(f"MSA|{code}" + (f": {said}" if said else "") + (f" ({err})" if err else ""), **detail)
    ours = target.message is None or "{control_id}" in target.message
    if acked and ours and acked != control_id:
        raise WrongAnswer(f"acknowledged message {acked}, not the one sent ({control_id})", **detail)
    return Answer(detail, latency)
