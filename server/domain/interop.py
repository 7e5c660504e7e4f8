"""Alerts from the monitoring a hospital already runs (Prometheus Alertmanager, Zabbix) → plan incidents.

Each source is configured under `[server.interop.NAME]` (see ServerSettings.interop) and posts
with the agent token made for NAME (`hisguard-server token create --agent NAME --site SITE`):
the token fixes the hospital (site), the settings fix how labels or tags map to the plan's
trigger, scope and severity. A firing alert opens (or re-detects) the incident under a stable
key; a resolved one resolves it.

Alertmanager: a `webhook_configs` receiver (payload version 4), URL …/api/v1/interop/alertmanager,
with `http_config.authorization.credentials` set to the token. One incident per alert fingerprint.

Zabbix: a webhook media type whose script posts JSON to …/api/v1/interop/zabbix with header
`Authorization: Bearer TOKEN` (deploy/zabbix-hisguard-mediatype.js); fields:
    event_id {EVENT.ID}   event_value {EVENT.VALUE} (1 problem, 0 recovered)   event_name {EVENT.NAME}
    host {HOST.NAME}      severity {EVENT.NSEVERITY} (0-5)   tags {EVENT.TAGSJSON}   url (optional)
One incident per problem event: the recovery message carries the problem's {EVENT.ID}.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from hisguard.plan import Scope, Severity, Text, Trigger, functions_of, scope_for, severity_for
from hisguard.report import utcnow
from hisguard.server.domain import cases, clocks, incidents
from hisguard.server.settings import InteropRule, InteropSource

log = logging.getLogger("hisguard.server.interop")

# Peer severities → plan severities when a source sets no severity_map.
DEFAULT_SEVERITY_MAP: dict[str, dict[str, Severity]] = {
    "alertmanager": {
        "critical": Severity.CRITICAL,
        "page": Severity.CRITICAL,
        "error": Severity.URGENT,
        "warning": Severity.URGENT,
        "info": Severity.ROUTINE,
        "none": Severity.ROUTINE,
    },
    # {EVENT.NSEVERITY}: 0 not classified, 1 information, 2 warning, 3 average, 4 high, 5 disaster
    "zabbix": {
        "5": Severity.CRITICAL,
        "4": Severity.CRITICAL,
        "3": Severity.URGENT,
        "2": Severity.URGENT,
        "1": Severity.ROUTINE,
        "0": Severity.ROUTINE,
    },
}
DEFAULT_HOST_LABEL = {"alertmanager": "instance", "zabbix": "host"}
SOURCE_TEXT = {
    "alertmanager": Text("Prometheus 告警", "Prometheus alert"),
    "zabbix": Text("Zabbix 告警", "Zabbix alert"),
}


class InteropError(ValueError):
    """A post that cannot be used (wrong source kind, unexpanded macros …): 4xx, nothing stored."""


# -- payloads -------------------------------------------------------------------------------------
class _Peer(BaseModel):
    # Peers add fields over versions; accept them, read only what is needed.
    model_config = ConfigDict(extra="ignore")


class AmAlert(_Peer):
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime  # Alertmanager's field names
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=64)


class AmWebhook(_Peer):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0
    externalURL: str = ""
    alerts: list[AmAlert] = Field(max_length=10000)


class ZabbixTag(_Peer):
    tag: str
    value: str = ""


class ZabbixEvent(_Peer):
    event_id: str = Field(min_length=1, max_length=64)
    event_value: Literal["0", "1"]
    event_name: str = Field("", max_length=2000)
    host: str = Field("", max_length=200)
    severity: str = ""
    tags: list[ZabbixTag] = Field(default_factory=list)
    url: str = ""

    @field_validator("event_id", "event_value", "severity", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> Any:
        # {EVENT.TAGSJSON} arrives as a JSON string when the script forwards it untouched.
        if isinstance(v, str):
            try:
                return json.loads(v) if v.strip() else []
            except ValueError:
                raise ValueError("tags: not JSON (use {EVENT.TAGSJSON})") from None
        return v

    @field_validator("event_id", "event_value", "event_name", "host")
    @classmethod
    def _expanded(cls, v: str) -> str:
        if re.search(r"\{(EVENT|HOST|TRIGGER|ITEM)\.[A-Z.]+\}", v):
            raise ValueError(f"unexpanded Zabbix macro in {v!r}: check the media type's parameters")
        return v


# -- one normalized alert ------------------------------------------------------------------------
@dataclass
class Alert:
    key: str
    firing: bool
    name: str
    host: str
    labels: dict[str, str]
    at: datetime
    evidence: dict[str, Any] = field(default_factory=dict)


def alerts_from_alertmanager(source_name: str, hook: AmWebhook) -> list[Alert]:
    if hook.truncatedAlerts:
        log.warning("%s: Alertmanager truncated %d alerts (max_alerts)", source_name, hook.truncatedAlerts)
    out = []
    for a in hook.alerts:
        firing = a.status == "firing"
        at = a.startsAt if firing or a.endsAt is None else a.endsAt
        summary = a.annotations.get("summary") or a.annotations.get("description") or ""
        out.append(
            Alert(
                key=f"interop/{source_name}/{a.fingerprint}",
                firing=firing,
                name=a.labels.get("alertname", "alert") + (f": {summary}" if summary else ""),
                host="",
                labels=a.labels,
                at=at,
                evidence={
                    "source": "alertmanager",
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "fingerprint": a.fingerprint,
                    "generator_url": a.generatorURL,
                    "receiver": hook.receiver,
                },
            )
        )
    return out


def alerts_from_zabbix(source_name: str, ev: ZabbixEvent) -> list[Alert]:
    labels = {t.tag: t.value for t in ev.tags}
    # Zabbix's own fields are matchable too, unless a tag of the same name says otherwise.
    labels = {"host": ev.host, "event_name": ev.event_name, "severity": ev.severity, **labels}
    return [
        Alert(
            key=f"interop/{source_name}/{ev.event_id}",
            firing=ev.event_value == "1",
            name=ev.event_name or f"event {ev.event_id}",
            host=ev.host,
            labels=labels,
            at=utcnow(),
            evidence={"source": "zabbix", "event_id": ev.event_id, "tags": labels, "url": ev.url},
        )
    ]


# -- mapping to the plan ---------------------------------------------------------------------------
def matching_rule(source: InteropSource, labels: dict[str, str]) -> InteropRule | None:
    for rule in source.rules:
        if all(re.fullmatch(p, labels.get(k, "")) for k, p in rule.match.items()):
            return rule
    return None


def incident_fields(source_name: str, source: InteropSource, alert: Alert) -> dict[str, Any] | None:
    """The incident an alert amounts to, or None when no rule maps it (and no default trigger)."""
    rule = matching_rule(source, alert.labels)
    trigger = rule.trigger if rule else source.default_trigger
    if trigger is None:
        return None
    trigger = Trigger(trigger)
    dept_label = alert.labels.get(source.department_label)
    departments = [rule.department] if rule and rule.department else ([dept_label] if dept_label else [])
    critical = alert.labels.get(source.hospital_critical_label, "").strip().lower() in ("1", "true", "yes")
    scope = (rule.scope if rule else None) or scope_for(critical, departments)
    peer = alert.labels.get(source.severity_label, "").strip().lower()
    mapped = (source.severity_map or DEFAULT_SEVERITY_MAP[source.kind]).get(peer)
    severity = (rule.severity if rule else None) or mapped or severity_for(Scope(scope))
    host = alert.host or alert.labels.get(source.host_label or DEFAULT_HOST_LABEL[source.kind]) or source_name
    what = SOURCE_TEXT[source.kind]
    return {
        "key": alert.key,
        "host": host[:200],
        "trigger": int(trigger),
        "severity": Severity(severity).value,
        "scope": Scope(scope).value,
        "department": departments[0] if len(departments) == 1 else None,
        "departments": departments,
        "functions": [f.value for f in functions_of(departments)],
        "title_zh": f"{what.zh}：{alert.name}（{host}）"[:500],
        "title_en": f"{what.en}: {alert.name} ({host})"[:500],
        "evidence": {**alert.evidence, "source_name": source_name, "rule": rule.match if rule else None},
    }


@dataclass
class Outcome:
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    ignored: int = 0


def apply_alerts(
    s: Session, site: str, agent_id: int | None, source_name: str, source: InteropSource, alerts: list[Alert]
) -> Outcome:
    out = Outcome()
    for alert in alerts:
        if not alert.firing:
            inc = incidents.resolve(s, site, alert.key, alert.at)
            if inc is not None:
                out.resolved.append(inc.id)
            continue
        fields = incident_fields(source_name, source, alert)
        if fields is None:
            out.ignored += 1
            continue
        out.opened.append(incidents.open_or_update(s, site, agent_id, fields, alert.at).id)
    # The plan, as for agents' reports: cases, activation, clocks, notifications, in this transaction.
    cases.sync(s, [*out.opened, *out.resolved], clocks.now())
    return out
