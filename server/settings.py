"""Server settings: defaults for the embedded set-up, overridable by a TOML file and the command line."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from hisguard.agent.tomlconfig import read_toml, validate

DEFAULT_PORT = 8470


def default_data_dir() -> Path:
    return Path(os.environ.get("HISGUARD_DATA", "var/server")).resolve()


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir")
    silence_heartbeats: int = Field(3, ge=1, le=100, description="Missed heartbeats before an agent is silent")
    watchdog_interval: float = Field(5.0, gt=0, le=600, description="Seconds between silence checks")

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
