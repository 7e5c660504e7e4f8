"""Server settings: defaults for the embedded set-up, overridable by a TOML file and the command line."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import make_url

from hisguard.plan import Scope, Severity, Trigger
from hisguard.tomlconfig import is_absolute, read_toml, resolve_paths, validate

DEFAULT_PORT = 8470


def default_data_dir() -> Path:
    return Path(os.environ.get("HISGUARD_DATA", "var/server")).resolve()


class Contact(BaseModel):
    """A person or a group robot, and the channels that reach it (any subset)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Display name (defaults to the key)")
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    webhook: str | None = Field(None, pattern=r"^https?://", description="Generic JSON webhook URL")
    wecom: str | None = Field(None, pattern=r"^https?://", description="WeCom group robot URL (…/webhook/send?key=…)")
    dingtalk: str | None = Field(None, pattern=r"^https?://", description="DingTalk robot URL (…/robot/send?…)")
    dingtalk_secret: str | None = Field(None, description="DingTalk robot signing secret (加签), if set")
    mobile: str | None = Field(None, description="Mobile number, @-mentioned in robot messages")


class SiteSettings(BaseModel):
    """One hospital: its contacts, on-call tiers and activation policy. In the server's TOML:

    [server]
    vendor_city = "郑州"                    # 2.9: the vendor's home city
    [server.notify]
    smtp_host = "mail.vendor.example"
    [server.sites.renmin]
    name_zh = "人民医院"
    tiers = [["li"], ["zhao"], ["mgr"]]      # escalation order when nobody acknowledges
    managers = ["mgr"]
    hospital = ["xxk"]
    urgent_triggers = [3, 4]                # urgent database / data-loss cases also start the plan
    plan_file = "/etc/hisguard/renmin-plan.toml"
    city = "洛阳"                           # outside vendor_city: go by chartered or service car
    [server.sites.renmin.contacts.li]
    email = "li@vendor.example"
    [server.sites.renmin.contacts.xxk]
    wecom = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"
    """

    model_config = ConfigDict(extra="forbid")

    name_zh: str | None = None
    name_en: str | None = None
    contacts: dict[str, Contact] = Field(default_factory=dict)
    tiers: list[list[str]] = Field(
        default_factory=list, description="On-call tiers in escalation order, each a list of contact keys"
    )
    managers: list[str] = Field(default_factory=list, description="Service managers told when the plan activates")
    hospital: list[str] = Field(default_factory=list, description="Hospital contacts: plan started, advisories")
    urgent_triggers: list[int] = Field(
        default_factory=list, description="Triggers whose urgent cases also activate the plan (critical always does)"
    )
    plan_file: Path | None = Field(None, description="Contract-specific plan text (TOML) overriding the default")
    # On-site dispatch (2.9): the hospital's city decides how engineers travel and the arrival deadline.
    city: str | None = Field(None, description="City of the hospital, e.g. 郑州 (compared with vendor_city)")
    location: str | None = Field(None, description="Address or directions for engineers going on site")

    @model_validator(mode="after")
    def _known_contacts(self) -> SiteSettings:
        named = [n for tier in self.tiers for n in tier] + self.managers + self.hospital
        unknown = sorted({n for n in named if n not in self.contacts})
        if unknown:
            raise ValueError(f"unknown contact(s) {unknown}: define them under contacts")
        bad = [t for t in self.urgent_triggers if not 1 <= t <= 6]
        if bad:
            raise ValueError(f"urgent_triggers: {bad} are not triggers 1-6")
        return self


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = "hisguard@localhost"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds per delivery attempt")
    max_attempts: int = Field(6, ge=1, le=50)
    backoff: float = Field(5.0, gt=0, le=3600, description="Seconds before the first retry; doubles each time")
    backoff_max: float = Field(600.0, gt=0, le=86400)
    interval: float = Field(1.0, gt=0, le=60, description="Seconds between outbox polls (new messages wake it)")
    console_url: str | None = Field(None, description="Link to the case in messages, e.g. https://hisguard/cases/")


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


class SecuritySettings(BaseModel):
    """Limits on what callers may send, and TLS (server/security.py). In the server's TOML: [server.security]."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="Larger requests: 413")
    rate_per_token: float = Field(20.0, gt=0, le=100000, description="Requests per second per token (or address)")
    rate_burst: int = Field(200, ge=1, le=1000000, description="Requests a token may send at once before 429")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) to serve https with")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir")
    silence_heartbeats: int = Field(3, ge=1, le=100, description="Missed heartbeats before an agent is silent")
    watchdog_interval: float = Field(5.0, gt=0, le=600, description="Seconds between silence checks")
    clock_interval: float = Field(1.0, gt=0, le=60, description="Seconds between checks for due plan clocks")
    # Virus outbreak (server/domain/outbreak.py): this many hosts of one site with detections within the window.
    outbreak_hosts: int = Field(3, ge=2, le=10000, description="Hosts with detections that make an outbreak")
    outbreak_window_min: float = Field(10.0, gt=0, le=1440, description="Minutes those detections fall within")
    # Probe history for the console's charts (server/domain/history.py): 5-minute averages after a day.
    history_retention_days: float = Field(30.0, gt=0, le=3650, description="Days of health samples kept")
    history_interval: float = Field(600.0, gt=0, le=86400, description="Seconds between history compactions")
    ingest_writers: int | None = Field(
        None, ge=1, le=32, description="Threads writing agents' report groups on PostgreSQL (SQLite: always 1)"
    )
    receipt_retention_days: float = Field(
        30.0,
        gt=0,
        le=3650,
        description="Days a report item's id is remembered (a resend within them is a repeat); pruned with history",
    )
    vendor_city: str | None = Field(None, description="The vendor's home city (2.9: outside it, travel by car)")
    sites: dict[str, SiteSettings] = Field(
        default_factory=dict, description='Per hospital; the key "*" is the default for sites not listed'
    )
    notify: NotifySettings = Field(default_factory=NotifySettings)
    interop: dict[str, InteropSource] = Field(
        default_factory=dict, description="Inbound alert sources, keyed by the name their agent token was made for"
    )
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    def site(self, name: str) -> SiteSettings:
        return self.sites.get(name) or self.sites.get("*") or SiteSettings()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hisguard.sqlite3'}"


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: ServerSettings = Field(default_factory=ServerSettings)


def load_settings(path: str | Path | None) -> ServerSettings:
    """Defaults, or the file's settings; relative paths (data_dir, plan_file, TLS, a SQLite URL) are the file's."""
    if path is None:
        return ServerSettings()
    path = Path(path)
    data, text = read_toml(path)
    settings = validate(_File, data, path, text).server
    base = path.resolve().parent
    settings = resolve_paths(settings, base)  # the default data_dir is absolute already (HISGUARD_DATA or cwd)
    url = make_url(settings.database_url) if settings.database_url else None
    if url is not None and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not is_absolute(Path(url.database)):
            absolute = url.set(database=str((base / url.database).resolve()))
            settings = settings.model_copy(update={"database_url": absolute.render_as_string(hide_password=False)})
    return settings
