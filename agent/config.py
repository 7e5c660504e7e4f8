"""The agent's configuration: TOML validated into typed objects (see config.example.toml)."""

from __future__ import annotations

import os
import re
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hisguard.agent.topology import TopologyConfig, activate
from hisguard.bilingual import WARNINGS, both, heading
from hisguard.checks import PROBES, Impact, ProbeConfig, ProbeSpec, load
from hisguard.plan import BusinessFunction, Text, business_function
from hisguard.tomlconfig import ConfigError, explain, key_lines, locate, paths_in, read_toml, resolve_paths, where


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
                said = Text("无法读取令牌文件 {path}（{why}）", "cannot read the token file {path} ({why})")
                raise ConfigError(both(said, one_line=True, path=self.token_file, why=exc.strerror)) from None
        value = os.environ.get(self.token_env or "", "").strip()
        if not value:
            said = Text("环境变量 {name} 未设置", "environment variable {name} is not set")
            raise ConfigError(both(said, one_line=True, name=self.token_env)) from None
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
    warnings: tuple[str, ...] = ()  # nothing wrong enough to refuse, worth a look (a department typo)

    @property
    def token(self) -> str:
        return self.server.resolve_token()

    def paths(self) -> list[Path]:
        """Every file and folder the configuration names (absolute), the state directory first."""
        found = [self.agent.state_dir, *paths_in(self.server)]
        for job in self.jobs:
            found += paths_in(job.config)
        return list(dict.fromkeys(found))


def load_config(path: str | Path, *, check_token: bool = False) -> AgentConfig:
    """Read and validate the agent's TOML; raise ConfigError naming every bad key and its line.

    Every problem is reported at once (a misspelt key does not hide a bad probe setting). Relative
    paths are relative to the file's folder. `check_token`: the token must also be readable.
    """
    path = Path(path)
    data, text = read_toml(path)
    base = path.resolve().parent
    problems: list[str] = []
    top: _Top | None = None
    try:
        top = _Top.model_validate(data)
    except ValidationError as exc:
        problems.extend(explain(path, text, exc))
    # Each section on its own as well, so that one bad key does not hide the problems of the others.
    agent_raw, server_raw, probes_raw = (data.get(k) if isinstance(data.get(k), dict) else {} for k in _SECTIONS)
    role = top.agent.role if top else agent_raw.get("role") if isinstance(agent_raw.get("role"), str) else None
    jobs = _jobs(path, text, probes_raw, role, problems)
    server = top.server if top else _valid(ServerSection, server_raw)
    server = resolve_paths(server, base) if server is not None else None
    if server is not None and check_token:
        try:
            server.resolve_token()
        except ConfigError as exc:
            key = next((k for k in ("token_file", "token_env") if getattr(server, k)), "token")
            line = locate(key_lines(text), ("server", key))
            problems.append(f"{where(path, line, ('server', key))}: {exc}")
    warnings = department_warnings(path, text, data)
    if problems or top is None or server is None:
        problems.sort(key=_line_of)
        more = [heading(WARNINGS), *(f"  {w}" for w in warnings)] if warnings else []
        raise ConfigError("\n".join([*problems, *more]))
    agent = resolve_paths(top.agent, base)
    activate(top.topology)  # the classifier folds incidents along this agent's network shape
    return AgentConfig(
        path=path,
        agent=agent,
        server=server,
        jobs=tuple(jobs),
        topology=top.topology,
        warnings=tuple(warnings),
    )


_SECTIONS = ("agent", "server", "probe")


def _line_of(problem: str) -> int:
    """Problems in file order ("file:LINE: key: …"); those without a line first."""
    found = re.match(r"[^\n]*?:(\d+): ", problem)
    return int(found.group(1)) if found else 0


def _valid(model: type[ServerSection], raw: dict[str, Any]) -> ServerSection | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None  # its problems are reported with the whole file's


UNKNOWN_PROBE = Text("未知的探针类型（可用：{known}）", "unknown probe (known: {known})")


def _jobs(path: Path, text: str, probes: dict[str, Any], role: str | None, problems: list[str]) -> list[ProbeJob]:
    """Each [[probe.TYPE]] block validated on its own, so that every block's problems are reported."""
    base = path.resolve().parent
    jobs: list[ProbeJob] = []
    names: set[str] = set()
    for kind, entries in probes.items():
        if kind not in PROBES:
            line = locate(key_lines(text), ("probe", kind, 0))
            said = both(UNKNOWN_PROBE, one_line=True, known=", ".join(sorted(PROBES)))
            problems.append(f"{where(path, line, ('probe', kind))}: {said}")
            continue
        if not isinstance(entries, list):
            continue  # the top level already said: [[probe.TYPE]] blocks, not [probe.TYPE]
        spec = load(kind)
        for i, entry in enumerate(entries):
            if role and "role" in spec.config.model_fields and isinstance(entry, dict):
                entry = {"role": role, **entry}
            try:
                cfg = resolve_paths(spec.config.model_validate(entry), base)
            except ValidationError as exc:
                problems.extend(explain(path, text, exc, ("probe", kind, i)))
                continue
            name = cfg.name or (kind if len(entries) == 1 else f"{kind}-{i + 1}")
            if name in names:
                loc = ("probe", kind, i, "name")
                said = both(Text("任务名 {name!r} 重复", "job name {name!r} is used twice"), one_line=True, name=name)
                problems.append(f"{where(path, locate(key_lines(text), loc), loc)}: {said}")
            names.add(name)
            jobs.append(ProbeJob(name, spec, cfg))
    return jobs


# -- departments: the plan's names (2.7), and a likely typo of one -------------------------------------
def _distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _departments(value: Any, loc: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(key path, name) of every department named anywhere in the raw TOML."""
    found: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(value, dict):
        for key, v in value.items():
            if key == "department" and isinstance(v, str):
                found.append(((*loc, key), v))
            elif key == "departments" and isinstance(v, list):
                found += [((*loc, key, i), d) for i, d in enumerate(v) if isinstance(d, str)]
            else:
                found += _departments(v, (*loc, key))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _departments(v, (*loc, i))
    return found


def closest_department(name: str, known: list[str]) -> str | None:
    """The known name one typo away (two for long names), if `name` is not itself known."""
    if business_function(name) is not None or name in known:
        return None
    cutoff = 1 if len(name) <= 8 else 2
    folded = name.strip().lower()
    best = min(known, key=lambda k: _distance(folded, k.lower()), default=None)
    return best if best is not None and _distance(folded, best.lower()) <= cutoff else None


def department_warnings(path: Path, text: str, data: dict[str, Any]) -> list[str]:
    """A department named once, a typo away from a plan name (or a name used elsewhere in the file)."""
    named = _departments(data)
    counts = Counter(name for _, name in named)
    plan_names = [n for f in BusinessFunction for n in (f.text.zh, f.text.en, f.value)]
    own = [n for n, c in counts.items() if c > 1 and business_function(n) is None]
    lines = key_lines(text)
    out = []
    for loc, name in named:
        if counts[name] > 1:
            continue
        guess = closest_department(name, plan_names + own)
        if guess is not None:
            said = Text("未知科室“{name}”，是否为“{guess}”？", "unknown department {name!r}: did you mean {guess!r}?")
            out.append(f"{where(path, locate(lines, loc), loc)}: {both(said, one_line=True, name=name, guess=guess)}")
    return out
