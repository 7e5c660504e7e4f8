"""Queueing notifications: one row per contact and channel, written in the transaction that decided it.

Delivery happens afterwards (dispatcher.py), so a slow or failing channel never holds up the plan,
and a message decided is never lost: it waits in the table until delivered or given up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event, or_, select
from sqlalchemy.orm import Session

from hisguard.plan import Text
from hisguard.server.settings import Contact, ServerSettings
from hisguard.server.storage.models import MaintenanceWindow, Notification

CHANNELS = ("email", "webhook", "wecom", "dingtalk")
# Called after a transaction that queued messages commits (the dispatcher sends them at once).
WAKERS: list[Callable[[], None]] = []


@dataclass(frozen=True)
class Message:
    event: str
    subject: Text
    body: Text
    data: dict[str, Any] = field(default_factory=dict)


def target_of(contact: Contact, channel: str) -> str | None:
    """What a person may see of the address: e-mail as is, robot/webhook URLs without their keys."""
    value = getattr(contact, channel)
    if value is None:
        return None
    if channel == "email":
        return value
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def in_maintenance(s: Session, site: str, hosts: Iterable[str], at: datetime) -> MaintenanceWindow | None:
    hosts = [h for h in hosts if h]
    q = select(MaintenanceWindow).where(
        MaintenanceWindow.site == site,
        MaintenanceWindow.cancelled_at.is_(None),
        MaintenanceWindow.starts_at <= at,
        MaintenanceWindow.ends_at > at,
        or_(MaintenanceWindow.host.is_(None), MaintenanceWindow.host.in_(hosts)),
    )
    return s.scalars(q.limit(1)).first()


def _wake(s: Session) -> None:
    s.info.pop("hisguard_notify_wake", None)
    for wake in list(WAKERS):
        wake()


def enqueue(
    s: Session,
    settings: ServerSettings,
    site: str,
    case_id: int | None,
    audience: Iterable[str],
    msg: Message,
    at: datetime,
    hosts: Iterable[str] = (),
) -> list[Notification]:
    """Queue `msg` for every channel of every contact in `audience` (contact keys of the site).

    In a maintenance window the rows are recorded as suppressed and not sent.
    """
    conf = settings.site(site)
    window = in_maintenance(s, site, hosts, at)
    rows = []
    for name in dict.fromkeys(audience):
        contact = conf.contacts.get(name)
        if contact is None:
            continue
        for channel in CHANNELS:
            target = target_of(contact, channel)
            if target is None:
                continue
            row = Notification(
                case_id=case_id,
                site=site,
                event=msg.event,
                contact=name,
                channel=channel,
                target=target[:500],
                subject_zh=msg.subject.zh,
                subject_en=msg.subject.en,
                body_zh=msg.body.zh,
                body_en=msg.body.en,
                data=msg.data,
                status="suppressed" if window else "pending",
                attempts=0,
                next_attempt_at=at,
                last_error=f"maintenance window {window.id}: {window.reason}" if window else None,
                log=[],
                created_at=at,
            )
            s.add(row)
            rows.append(row)
    if any(r.status == "pending" for r in rows) and not s.info.get("hisguard_notify_wake"):
        s.info["hisguard_notify_wake"] = True
        event.listen(s, "after_commit", _wake, once=True)
    return rows
