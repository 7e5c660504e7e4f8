"""A host that answered in time is not lost because the agent was too busy to read the answer at once.

On a loaded machine the agent's process may get no CPU for longer than the reply timeout: the echo
replies wait in the socket. Counting them by the time they were read made answering hosts look
unreachable (hosts behind a switch that was never cut). The kernel's arrival stamp decides instead,
and the round reads what is queued before it declares anything lost.
"""

from __future__ import annotations

import time

import pytest

from hisguard.checks.ping import pinger
from tests.support import peers

BUSY = 0.6  # seconds the agent gets no CPU, twice the reply timeout


@pytest.fixture
def busy_agent(monkeypatch):
    """Right after its last request the agent gets no CPU for BUSY seconds (a machine under heavy load)."""
    peers.need_root()
    real = pinger._paced_sends

    async def busy_right_after_sending(*args: object) -> float:
        last = await real(*args)
        time.sleep(BUSY)  # noqa: ASYNC251 - on purpose: the loop cannot run, the reply sits in the socket
        return last

    monkeypatch.setattr(pinger, "_paced_sends", busy_right_after_sending)


async def one_round(reply_timeout: float) -> pinger.TargetRound:
    p = pinger.Pinger(privileged=True)
    try:
        (r,) = await p.round(["127.0.0.1"], 1, 0.01, reply_timeout, 1000)
    finally:
        p.close()
    return r


async def test_a_reply_that_arrived_in_time_counts_though_it_was_read_late(busy_agent):
    r = await one_round(BUSY / 2)
    assert (r.sent, r.received) == (1, 1), r
    assert r.rtts_ms[0] < BUSY / 2 * 1000  # its arrival time, not the time it was read


async def test_a_reply_that_really_came_too_late_is_still_lost(busy_agent):
    # A reply timeout shorter than any real answer: the arrival stamp says "late", whenever it is read.
    r = await one_round(1e-7)
    assert (r.sent, r.received) == (1, 0), r
