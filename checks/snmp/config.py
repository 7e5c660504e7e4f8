"""What the SNMP job is told: its devices (address, credentials, place in the hospital, uplinks) and limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hisguard.checks.base import Impact, ProbeConfig
from hisguard.checks.snmp.client import Credentials


class V3(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1)
    auth_protocol: Literal["MD5", "SHA", "SHA256", "SHA512"] = "SHA"
    auth_key: str = Field(min_length=8, description="Authentication pass phrase (≥ 8 characters)")
    priv_protocol: Literal["AES", "AES256", "DES"] = "AES"
    priv_key: str = Field(min_length=8, description="Privacy pass phrase (≥ 8 characters)")
    context: str = Field("", description="Context name (empty for most devices)")
    engine_id: str | None = Field(None, description="Hex engine ID of a trap sender (traps only)")

    def credentials(self) -> Credentials:
        return Credentials(
            "3",
            user=self.user,
            auth_protocol=self.auth_protocol,
            auth_key=self.auth_key,
            priv_protocol=self.priv_protocol,
            priv_key=self.priv_key,
            context=self.context,
        )


class Device(Impact):
    """A switch, server or UPS the agent reads over SNMP, and where it sits in the hospital."""

    name: str = Field(min_length=1, description="What staff call it (核心交换机, 门诊楼接入交换机 2)")
    address: str = Field(min_length=1)
    port: int = Field(161, ge=1, le=65535)
    kind: Literal["switch", "server", "ups"] = "switch"
    vendor: Literal["auto", "huawei", "h3c", "cisco", "generic"] = "auto"
    version: Literal["2c", "3"] = "2c"
    community: str = Field("public", min_length=1)
    v3: V3 | None = None
    timeout: float = Field(2.0, gt=0, le=30, description="Seconds per request")
    retries: int = Field(1, ge=0, le=5)
    uplinks: list[str] = Field(
        default_factory=list,
        description="Uplink ports: ifName, ifDescr or ifAlias, or '#ifIndex' where names repeat",
    )
    uplink_groups: list[list[str]] = Field(
        default_factory=list,
        description="Redundant uplinks: one member down is redundancy lost, all down the outage",
    )
    interfaces: Literal["uplinks", "all"] | None = Field(
        None, description="Ports whose loss is a fault (default: uplinks on switches, all on servers)"
    )
    ping: bool = Field(True, description="When SNMP is silent, ping to tell a dead agent from a dead device")
    cpu_max: float | None = Field(None, gt=0, le=100, description="% (default: the device's own threshold, else 90)")
    memory_max: float | None = Field(None, gt=0, le=100, description="% (default: the device's own, else 90)")
    temperature_max: float | None = Field(
        None, gt=0, le=150, description="°C; above it: over-temperature (default: the device's own, else 65)"
    )

    @model_validator(mode="after")
    def _v3(self) -> Device:
        if self.version == "3" and self.v3 is None:
            raise ValueError(f"device {self.name}: version 3 needs a v3 table (user, auth_key, priv_key)")
        for group in self.uplink_groups:
            if len(group) < 2:
                raise ValueError(f"device {self.name}: an uplink group needs two or more ports, got {group}")
        return self

    @property
    def watch(self) -> str:
        return self.interfaces or ("all" if self.kind == "server" else "uplinks")

    def credentials(self) -> Credentials:
        if self.version == "3" and self.v3 is not None:
            return self.v3.credentials()
        return Credentials("2c", community=self.community)

    def impact(self) -> Impact:
        return Impact(
            department=self.department, departments=self.departments, hospital_critical=self.hospital_critical
        )


class Config(ProbeConfig):
    interval: float = Field(30.0, gt=0, le=86400)
    timeout: float = Field(20.0, gt=0)
    fail_after: int = Field(2, ge=1)
    fail_window: int = Field(3, ge=1)
    clear_after: int = Field(2, ge=1)
    devices: list[Device] = Field(min_length=1)
    concurrency: int = Field(32, ge=1, le=1000, description="Devices polled at once")
    restart_hold: float = Field(900.0, gt=0, description="Seconds a device restart stays reported")
    reboot_loop_count: int = Field(3, ge=2, description="Restarts within the window that make a reboot loop")
    reboot_loop_window: float = Field(3600.0, gt=0)
    if_errors_max: int = Field(1000, ge=1, description="Uplink errors per round above which the link is failing")
    flap_count: int = Field(3, ge=1, description="Uplink state changes within flap_window that make it flapping")
    flap_window: float = Field(900.0, gt=0, description="Seconds")
    max_rows: int = Field(5000, ge=10, description="Rows of one table walk beyond which the device is misbehaving")
    ups_runtime_warn: float = Field(15.0, ge=0, description="Minutes on battery below which severity rises")
    ups_runtime_critical: float = Field(5.0, ge=0, description="Minutes below which the UPS is about to drop")
    # Trap receiver (runs for the agent's life when enabled)
    traps: bool = Field(False, description="Receive traps (linkDown/linkUp, cold/warm start, UPS on battery)")
    trap_listen: str = Field("0.0.0.0")
    trap_port: int = Field(162, ge=1, le=65535)
    trap_communities: list[str] = Field(default_factory=lambda: ["public"])
    trap_users: list[V3] = Field(default_factory=list, description="SNMPv3 trap senders (with engine_id)")
    trap_rate: float = Field(50.0, gt=0, le=10000, description="Traps a second decoded; beyond it only counted")
    trap_storm: int = Field(200, ge=10, description="Traps a minute from one device that make a trap storm")

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: list[Device]) -> list[Device]:
        seen: set[str] = set()
        for d in devices:
            if d.name in seen:
                raise ValueError(f"device name {d.name!r} is used twice")
            seen.add(d.name)
        # One engine holds one key set per SNMPv3 user name.
        keys: dict[str, tuple[Device, tuple[str, ...]]] = {}
        for d in devices:
            if d.version == "3" and d.v3 is not None:
                k = (d.v3.auth_protocol, d.v3.auth_key, d.v3.priv_protocol, d.v3.priv_key)
                other = keys.setdefault(d.v3.user, (d, k))
                if other[1] != k:
                    raise ValueError(
                        f"devices {other[0].name!r} and {d.name!r} use SNMPv3 user {d.v3.user!r} with different "
                        "keys; give each key set its own user name"
                    )
        return devices
