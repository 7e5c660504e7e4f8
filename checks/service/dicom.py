"""dicom://AET@host:port — the PACS answers a DICOM C-ECHO (Verification) from the configured calling AE title.

pynetdicom is synchronous: each echo runs in a thread of the job's own pool (sized to the job, not the
interpreter's small default, so fifty PACS targets are checked at once), under pynetdicom's own
timeouts set to the target's deadline. A target whose previous echo is still stuck is not started
again (no pile-up of threads); it reports "not checked" until that one returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from hisguard.checks.base import ProbeContext
from hisguard.checks.service.config import Config, Endpoint, Target
from hisguard.checks.service.result import Answer, NotChecked, WrongAnswer

# Every outcome is an observation; pynetdicom would also log each refused association as an error,
# every round, for every PACS that is down.
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

_POOL, _BUSY, _LOCK = "service.dicom.pool", "service.dicom.busy", "service.dicom.lock"


def echo(host: str, port: int, called: str, calling: str, timeout: float) -> Answer:
    """One association, one C-ECHO, release. Blocking; raises what the outcome means."""
    seen: dict[str, Any] = {}

    def opened(_: Any) -> None:
        seen["open"] = True

    def acse(event: Any) -> None:
        prim = event.primitive
        if type(prim).__name__ == "A_ASSOCIATE":
            seen["reject"] = f"{prim.reason_str} ({prim.source_str}, {prim.result_str})"

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    started = time.perf_counter()
    assoc = ae.associate(
        host, port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, opened), (evt.EVT_ACSE_RECV, acse)]
    )
    detail = {"called_ae": called, "calling_ae": calling}
    if assoc.is_established:
        try:
            status = assoc.send_c_echo()
            latency = (time.perf_counter() - started) * 1000
        finally:
            if assoc.is_established:
                assoc.release()
        if "Status" not in status:  # no C-ECHO response within the deadline (pynetdicom aborted)
            raise TimeoutError
        if status.Status != 0:
            raise WrongAnswer(f"C-ECHO answered status 0x{int(status.Status):04X}", status=int(status.Status), **detail)
        return Answer({**detail, "status": 0}, latency)
    if assoc.is_rejected:
        raise WrongAnswer(f"association rejected: {seen.get('reject', 'no reason given')}", **detail)
    if not seen.get("open"):
        if time.perf_counter() - started >= timeout * 0.9:
            raise TimeoutError
        raise ConnectionRefusedError("connection refused or unreachable")
    if time.perf_counter() - started >= timeout * 0.9:
        raise TimeoutError  # accepted the connection, never answered the association request
    raise WrongAnswer("the PACS aborted the association", **detail)


def _pool(cfg: Config, ctx: ProbeContext) -> ThreadPoolExecutor:
    pool = ctx.memory.get(_POOL)
    if pool is None:
        size = min(cfg.concurrency, sum(1 for t in cfg.targets if t.endpoint.scheme == "dicom")) or 1
        pool = ctx.memory[_POOL] = ThreadPoolExecutor(max_workers=size, thread_name_prefix="dicom-echo")
        ctx.memory[_BUSY], ctx.memory[_LOCK] = set(), threading.Lock()
    return pool


async def check(target: Target, end: Endpoint, cfg: Config, ctx: ProbeContext, deadline: float) -> Answer:
    pool = _pool(cfg, ctx)
    busy: set[str] = ctx.memory[_BUSY]
    lock: threading.Lock = ctx.memory[_LOCK]
    with lock:
        if target.url in busy:
            raise NotChecked("the previous C-ECHO to this PACS has not returned yet")
        busy.add(target.url)

    def run() -> Answer:
        try:
            return echo(end.host, end.port, end.user or "ANY-SCP", target.calling_ae or cfg.calling_ae, deadline)
        finally:
            with lock:
                busy.discard(target.url)

    return await asyncio.get_running_loop().run_in_executor(pool, run)
