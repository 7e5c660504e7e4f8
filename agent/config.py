"""The agent's configuration: TOML validated into typed objects (see config.example.toml)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hisguard.agent.topology import TopologyConfig, activate
from hisguard.checks import PROBES, Impact, ProbeConfig, ProbeSpec, load
from hisguard.tomlconfig import ConfigError, explain, read_toml, validate


class AgentSection(Impact):
    """This machine: its name, and where it sits in the hospital (department / hospital-critical)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    state_dir: Path = Field(Path("var/agent"), description="Outbox, incident state and probe memory")
    heartbeat_interval: float = Field(30.0, ge=1, le=3600)
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    role: Literal["workstation", "app_server", "db_server"] | None = Field(
        None, description="What this machine is; probes with a role setting take it unless they set their own"
    )


class ServerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="Base URL of the hisguard server")
    token: str | None = Field(None, description="Agent token (prefer token_file or token_env)")
    token_file: Path | None = None
    token_env: str | None = None
    timeout: float = Field(10.0, gt=0, le=300)
    batch_size: int = Field(200, ge=1, le=500)
    retry_max: float = Field(60.0, ge=1, le=3600, description="Longest wait between delivery attempts (s)")
    ca_bundle: Path | None = Field(None, description="CA file to verify an https server against")
    pin_sha256: list[Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$")]] = Field(
        default_factory=list, description="Accept only server certificates with one of these SHA-256 fingerprints"
    )

    @model_validator(mode="after")
    def _one_token(self) -> ServerSection:
        given = [k for k in ("token", "token_file", "token_env") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of token, token_file, token_env")
        return self

    def resolve_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file:
            try:
                return self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"server.token_file: cannot read {self.token_file}: {exc.strerror}") from None
        value = os.environ.get(self.token_env or "", "").strip()
        if not value:
            raise ConfigError(f"server.token_env: environment variable {self.token_env} is not set")
        return value


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: AgentSection = Field(default_factory=AgentSection)
    server: ServerSection
    probe: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    topology: TopologyConfig | None = None  # the network's shape (agent/topology.py)


@dataclass(frozen=True)
class ProbeJob:
    name: str
    spec: ProbeSpec
    config: ProbeConfig


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    agent: AgentSection
    server: ServerSection
    jobs: tuple[ProbeJob, ...]
    topology: TopologyConfig | None = None

    @property
    def token(self) -> str:
        return self.server.resolve_token()


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the agent's TOML; raise ConfigError naming every bad key and its line."""
    path = Path(path)
    data, text = read_toml(path)
    top: _Top = validate(_Top, data, path, text)
    problems: list[str] = []
    jobs: list[ProbeJob] = []
    names: set[str] = set()
    for kind, entries in top.probe.items():
        if kind not in PROBES:
            problems.append(f"{path}: probe.{kind}: unknown probe (known: {', '.join(sorted(PROBES))})")
            continue
        spec = load(kind)
        for i, entry in enumerate(entries):
            if top.agent.role and "role" in spec.config.model_fields and isinstance(entry, dict):
                entry = {"role": top.agent.role, **entry}
            try:
                cfg = spec.config.model_validate(entry)
            except ValidationError as exc:
                problems.extend(explain(path, text, exc, ("probe", kind, i)))
                continue
            name = cfg.name or (kind if len(entries) == 1 else f"{kind}-{i + 1}")
            if name in names:
                problems.append(f"{path}: probe.{kind}[{i}].name: job name {name!r} is used twice")
            names.add(name)
            jobs.append(ProbeJob(name, spec, cfg))
    if problems:
        raise ConfigError("\n".join(problems))
    state_dir = top.agent.state_dir
    if not state_dir.is_absolute():
        state_dir = (path.parent / state_dir).resolve()
    agent = top.agent.model_copy(update={"state_dir": state_dir})
    activate(top.topology)  # the classifier folds incidents along this agent's network shape
    return AgentConfig(path=path, agent=agent, server=top.server, jobs=tuple(jobs), topology=top.topology)
