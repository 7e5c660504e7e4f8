"""Server settings: defaults for the embedded set-up, overridable by a TOML file and the command line."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hisguard.agent.tomlconfig import read_toml, validate
from hisguard.plan import Scope, Severity, Trigger

DEFAULT_PORT = 8470


def default_data_dir() -> Path:
    return Path(os.environ.get("HISGUARD_DATA", "var/server")).resolve()


# -- Inbound interop: Alertmanager and Zabbix webhooks become plan incidents (server/domain/interop.py) --
class InteropRule(BaseModel):
    """Alerts whose labels (Alertmanager) or tags (Zabbix) all match start this trigger."""

    model_config = ConfigDict(extra="forbid")

    match: dict[str, str] = Field(default_factory=dict, description="label or tag → regular expression (full match)")
    trigger: Trigger
    scope: Scope | None = Field(None, description="Default: from the department / hospital_critical labels")
    severity: Severity | None = Field(None, description="Default: the peer's severity mapped, else from the scope")
    department: str | None = None

    @model_validator(mode="after")
    def _patterns(self) -> InteropRule:
        for name, pattern in self.match.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match.{name}: bad regular expression {pattern!r}: {exc}") from None
        return self


class InteropSource(BaseModel):
    """A monitoring system posting to /api/v1/interop/KIND with the agent token of this source's name."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["alertmanager", "zabbix"]
    rules: list[InteropRule] = Field(default_factory=list, description="First match wins")
    default_trigger: Trigger | None = Field(None, description="For alerts no rule matches; unset: ignored")
    host_label: str | None = Field(None, description="Default: instance (Alertmanager), host (Zabbix)")
    department_label: str = "department"
    hospital_critical_label: str = "hospital_critical"
    severity_label: str = "severity"
    severity_map: dict[str, Severity] = Field(default_factory=dict, description="Peer severity → plan severity")


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir")
    silence_heartbeats: int = Field(3, ge=1, le=100, description="Missed heartbeats before an agent is silent")
    watchdog_interval: float = Field(5.0, gt=0, le=600, description="Seconds between silence checks")
    interop: dict[str, InteropSource] = Field(
        default_factory=dict, description="Inbound alert sources, keyed by the name their agent token was made for"
    )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hisguard.sqlite3'}"


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: ServerSettings = Field(default_factory=ServerSettings)


def load_settings(path: str | Path | None) -> ServerSettings:
    if path is None:
        return ServerSettings()
    path = Path(path)
    data, text = read_toml(path)
    return validate(_File, data, path, text).server
