"""ICMP reachability: every target's round ends answered, silently lost, refused, or not sendable at all.

Only an answer means reachable: a request that drew an ICMP error (host unreachable,
administratively prohibited) or that could not even be sent (no route, interface down, EPERM)
is a failed round, and its evidence says which. When nothing could be sent to any target, the
fault is this host's own network: the probe reports `ping.agent_network` naming the interface or
route, and the classifier makes it one incident instead of one per target.

The echo engine (pinger.py) keeps one socket per address family and matches replies by
identifier and sequence number, so a thousand targets cost little more than fping.
"""

from __future__ import annotations

import socket
import sys
from collections import Counter
from typing import Any, Literal

from icmplib.exceptions import SocketPermissionError
from pydantic import Field, field_validator, model_validator

from hisguard.checks.base import Impact, Observation, ProbeConfig, ProbeContext, ProbeError
from hisguard.checks.ping.localnet import LocalNetwork
from hisguard.checks.ping.pinger import ANSWERED, LOST, REFUSED, UNSENDABLE, Pinger, TargetRound
from hisguard.plan import Text

MAX_REQUESTS = 30_000  # a round's requests must have distinct sequence numbers on one socket
OUTCOMES: dict[str, Text] = {
    ANSWERED: Text("有应答", "answered"),
    LOST: Text("无应答（丢失）", "silently lost"),
    REFUSED: Text("被拒绝（ICMP 差错）", "refused (ICMP error)"),
    UNSENDABLE: Text("无法发送", "not sendable"),
}


class Target(Impact):
    address: str = Field(min_length=1, description="IP address or host name")
    name: str | None = Field(None, description="What it is, as staff call it (核心交换机, HIS 数据库服务器)")


class Config(ProbeConfig):
    interval: float = Field(5.0, gt=0, le=86400)
    timeout: float = Field(5.0, gt=0)
    fail_after: int = Field(2, ge=1, description="Failed rounds before a target is down (no incident from one loss)")
    fail_window: int = Field(3, ge=1)
    clear_after: int = Field(2, ge=1)
    confirm_after: float | None = Field(1.0, gt=0, le=3600)
    count: int = Field(5, ge=1, le=100, description="Echo requests per target per round")
    packet_interval: float = Field(0.05, ge=0.0, le=5.0, description="Seconds between a target's requests (at least)")
    reply_timeout: float | None = Field(
        None, gt=0, le=30, description="Seconds to wait for each reply (default: what fits the timeout, ≤ 0.8)"
    )
    rate: float = Field(10_000, ge=1, le=100_000, description="Echo requests a second, all targets together")
    down_loss: float = Field(1.0, gt=0, le=1.0, description="Loss fraction at which a round counts as failed")
    concurrency: int | None = Field(
        None, ge=1, description="No longer used (every target shares one socket); accepted so older files load"
    )
    privileged: Literal["auto", "yes", "no"] = Field(
        "auto", description="Raw sockets (root/CAP_NET_RAW) or unprivileged datagram ICMP"
    )
    targets: list[Target] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: list[Target]) -> list[Target]:
        seen = set()
        for t in targets:
            if t.address in seen:
                raise ValueError(f"target {t.address} is listed twice")
            seen.add(t.address)
        return targets

    def send_span(self) -> float:
        """Seconds from a round's first request to its last, at `rate` and `packet_interval`."""
        sweep = len(self.targets) / self.rate
        return (self.count - 1) * max(self.packet_interval, sweep) + sweep

    @model_validator(mode="after")
    def _fits_timeout(self) -> Config:
        if len(self.targets) * self.count > MAX_REQUESTS:
            raise ValueError(
                f"{len(self.targets)} targets × {self.count} requests exceed {MAX_REQUESTS:,} a round: "
                "split the targets over several ping jobs"
            )
        # A dead target waits out its last request: the whole round must fit in the job's timeout.
        span = self.send_span()
        if self.reply_timeout is None:
            fit = self.timeout * 0.9 - span
            if fit <= 0:
                raise ValueError(f"sending {self.count} requests to each target takes {span:.2f}s: more than timeout")
            self.reply_timeout = min(0.8, fit)
        worst = span + self.reply_timeout
        if worst > self.timeout:
            raise ValueError(
                f"sending ({span:.2f}s) + reply_timeout ({self.reply_timeout:g}s) exceeds timeout ({self.timeout:g}s): "
                "an unreachable target would make every round time out"
            )
        return self


def _privileged(choice: str) -> bool:
    """Raw sockets when this process may open one (root, or CAP_NET_RAW under a service account)."""
    if choice != "auto":
        return choice == "yes"
    if sys.platform == "win32":
        return True
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return True
    except PermissionError:
        return False


def _pinger(cfg: Config, ctx: ProbeContext) -> Pinger:
    privileged = _privileged(cfg.privileged)
    pinger = ctx.memory.get("pinger")
    if not isinstance(pinger, Pinger) or pinger.privileged != privileged:
        pinger = ctx.memory["pinger"] = Pinger(privileged)
    return pinger


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    assert cfg.reply_timeout is not None
    pinger = _pinger(cfg, ctx)
    try:
        rounds = await pinger.round(
            [t.address for t in cfg.targets], cfg.count, cfg.packet_interval, cfg.reply_timeout, cfg.rate
        )
    except SocketPermissionError as exc:
        raise ProbeError(f"ICMP failed: {exc} (raw ICMP needs root or CAP_NET_RAW; see privileged)") from exc
    unsendable = [r for r in rounds if r.outcome == UNSENDABLE]
    net = LocalNetwork() if unsendable else None
    obs = [_target(cfg, t, r, net) for t, r in zip(cfg.targets, rounds, strict=True)]
    obs.append(_agent_network(ctx, rounds, net))
    return obs


def _first(counter: Counter[str]) -> str:
    return counter.most_common(1)[0][0]


def _target(cfg: Config, target: Target, r: TargetRound, net: LocalNetwork | None) -> Observation:
    impact = Impact(
        department=target.department, departments=target.departments, hospital_critical=target.hospital_critical
    )
    detail: dict[str, Any] = {"outcome": r.outcome, "sent": r.sent, "received": r.received, "limit": cfg.down_loss}
    if r.ip and r.ip != target.address:
        detail["ip"] = r.ip
    if r.rtts_ms:
        detail.update(
            rtt_min_ms=round(min(r.rtts_ms), 3),
            rtt_avg_ms=round(sum(r.rtts_ms) / len(r.rtts_ms), 3),
            rtt_max_ms=round(max(r.rtts_ms), 3),
        )
    if r.icmp_errors:
        detail["icmp"] = dict(r.icmp_errors)
        detail["error"] = f"ICMP {_first(r.icmp_errors)}"
    if r.send_errors:
        detail["send_errors"] = dict(r.send_errors)
        detail.setdefault("error", _first(r.send_errors))
    if r.neighbour_silent:
        detail["neighbour"] = "no ARP/neighbour-discovery answer on the link"
    if r.outcome == UNSENDABLE and net is not None and r.ip:
        detail["route"] = net.route(r.ip)
        if down := net.interfaces_down([r.ip], everywhere=False):
            detail["interfaces_down"] = down
    ok = r.loss is not None and r.received > 0 and r.loss < cfg.down_loss
    return Observation("ping.reachable", target.address, ok, impact, value=r.loss, name=target.name, detail=detail)


def _agent_network(ctx: ProbeContext, rounds: list[TargetRound], net: LocalNetwork | None) -> Observation:
    """Nothing could be sent to any target: this host's own network (interface, route) is failing."""
    unsendable = [r for r in rounds if r.outcome == UNSENDABLE]
    if len(unsendable) < len(rounds) or net is None:
        detail = {"targets": len(rounds), "unsendable": len(unsendable)}
        return Observation("ping.agent_network", ctx.host, True, ctx.impact, name=ctx.host, detail=detail)
    ips = [r.ip for r in rounds if r.ip]
    down = net.interfaces_down(ips, everywhere=True)
    route = net.route(ips[0]) if ips else "no route"
    errors = Counter(_first(r.send_errors) for r in rounds)
    label = (", ".join(down[:3]) + " down") if down else (route if route != "no route" else _first(errors))
    detail = {
        "outcome": UNSENDABLE,
        "targets": len(rounds),
        "unsendable": len(rounds),
        "errors": dict(errors),
        "interfaces_down": down,
        "route": route,
        "example": rounds[0].address,
    }
    return Observation("ping.agent_network", ctx.host, False, ctx.impact, name=label, detail=detail)


def describe(obs: Observation) -> str:
    """One line, Chinese then English, on what a ping observation saw (`hisguard-agent once`, `doctor`)."""
    d = obs.detail
    if obs.check == "ping.agent_network":
        if obs.ok:
            return f"本机网络正常 own network ok ({d.get('targets')} targets, {d.get('unsendable', 0)} not sendable)"
        return (
            f"本机网络故障 own network failing: nothing could be sent to any target ({obs.label}; "
            f"route: {d.get('route')})"
        )
    outcome = str(d.get("outcome", ""))
    text = OUTCOMES.get(outcome, Text(outcome, outcome))
    line = f"{text.zh} {text.en} {d.get('received', 0)}/{d.get('sent', 0)}"
    if outcome == ANSWERED and d.get("rtt_avg_ms") is not None:
        line += f", {d['rtt_avg_ms']:.2f} ms" + (f", {obs.value:.0%} lost" if obs.value else "")
    elif d.get("error"):
        line += f": {d['error']}"
        if d.get("interfaces_down"):
            line += f" ({', '.join(d['interfaces_down'])} down)"
        elif d.get("route"):
            line += f" (route: {d['route']})"
    elif d.get("neighbour"):
        line += ": no ARP/ND answer"
    return line
