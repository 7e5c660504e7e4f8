"""ICMP reachability (icmplib): many targets a round, loss and round-trip times per target."""

from __future__ import annotations

import socket
import sys
from typing import Literal

from icmplib import async_multiping
from icmplib.exceptions import ICMPLibError
from pydantic import Field, field_validator, model_validator

from hisguard.checks.base import Impact, Observation, ProbeConfig, ProbeContext, ProbeError


class Target(Impact):
    address: str = Field(min_length=1, description="IP address or host name")
    name: str | None = Field(None, description="What it is, as staff call it (核心交换机, HIS 数据库服务器)")


class Config(ProbeConfig):
    interval: float = Field(10.0, gt=0, le=86400)
    timeout: float = Field(5.0, gt=0)
    fail_after: int = Field(2, ge=1, description="Failed rounds before a target is down (no incident from one loss)")
    fail_window: int = Field(3, ge=1)
    clear_after: int = Field(2, ge=1)
    count: int = Field(5, ge=1, le=100, description="Echo requests per target per round")
    packet_interval: float = Field(0.05, ge=0.0, le=5.0, description="Seconds between a target's requests")
    reply_timeout: float | None = Field(
        None, gt=0, le=30, description="Seconds to wait for each reply (default: what fits the timeout, ≤ 0.8)"
    )
    down_loss: float = Field(1.0, gt=0, le=1.0, description="Loss fraction at which a round counts as failed")
    concurrency: int = Field(200, ge=1, le=5000, description="Targets pinged at once")
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

    @model_validator(mode="after")
    def _fits_timeout(self) -> Config:
        # A dead target waits out every request: that worst case must fit in the job's timeout.
        if self.reply_timeout is None:
            fit = self.timeout * 0.9 / self.count - self.packet_interval
            if fit <= 0:
                raise ValueError(f"{self.count} requests {self.packet_interval:g}s apart do not fit in timeout")
            self.reply_timeout = min(0.8, fit)
        worst = self.count * (self.reply_timeout + self.packet_interval)
        if worst > self.timeout:
            raise ValueError(
                f"count × (reply_timeout + packet_interval) = {worst:g}s exceeds timeout ({self.timeout:g}s): "
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


async def probe(cfg: Config, ctx: ProbeContext) -> list[Observation]:
    try:
        hosts = await async_multiping(
            [t.address for t in cfg.targets],
            count=cfg.count,
            interval=cfg.packet_interval,
            timeout=cfg.reply_timeout,
            concurrent_tasks=cfg.concurrency,
            privileged=_privileged(cfg.privileged),
        )
    except (ICMPLibError, OSError) as exc:
        raise ProbeError(f"ICMP failed: {exc} (raw ICMP needs root or CAP_NET_RAW; see privileged)") from exc
    obs = []
    for target, host in zip(cfg.targets, hosts, strict=True):
        impact = Impact(
            department=target.department, departments=target.departments, hospital_critical=target.hospital_critical
        )
        detail = {"sent": host.packets_sent, "received": host.packets_received, "limit": cfg.down_loss}
        if host.packets_received:
            detail.update(rtt_min_ms=host.min_rtt, rtt_avg_ms=host.avg_rtt, rtt_max_ms=host.max_rtt)
        obs.append(
            Observation(
                "ping.reachable",
                target.address,
                host.packet_loss < cfg.down_loss,
                impact,
                value=host.packet_loss,
                name=target.name,
                detail=detail,
            )
        )
    return obs
