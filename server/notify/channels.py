"""Channels: how one message reaches one contact. Each raises ChannelError on failure.

Robot formats follow the services' published group-robot messages:
- WeCom (企业微信群机器人): POST {"msgtype": "markdown", "markdown": {"content": …}} (≤ 4096 bytes), or
  "text" with "mentioned_mobile_list" to @ someone; the answer is {"errcode": 0, "errmsg": "ok"}.
- DingTalk (钉钉自定义机器人): POST {"msgtype": "markdown", "markdown": {"title", "text"},
  "at": {"atMobiles": […], "isAtAll": false}}; with a signing secret, the URL carries timestamp (ms)
  and sign = base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")); the answer has errcode 0.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import smtplib
import time
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any
from urllib.parse import quote_plus

import httpx

from hisguard.server.settings import Contact, NotifySettings
from hisguard.server.storage.models import Notification

WECOM_MARKDOWN_MAX = 4096
WECOM_TEXT_MAX = 2048


class ChannelError(Exception):
    """Delivery failed; the message says why (no secrets in it)."""


def _clip(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", errors="ignore") + "…"


def plain_text(n: Notification) -> str:
    return f"{n.subject_zh}\n{n.body_zh}\n\n{n.subject_en}\n{n.body_en}"


def webhook_payload(n: Notification) -> dict[str, Any]:
    return {
        "source": "hisguard",
        "notification_id": n.id,
        "event": n.event,
        "site": n.site,
        "case_id": n.case_id,
        "subject": {"zh": n.subject_zh, "en": n.subject_en},
        "text": {"zh": n.body_zh, "en": n.body_en},
        "data": n.data,
    }


def wecom_payload(n: Notification, contact: Contact) -> dict[str, Any]:
    if contact.mobile:
        # Markdown messages cannot @ anyone; a text message can.
        return {
            "msgtype": "text",
            "text": {"content": _clip(plain_text(n), WECOM_TEXT_MAX), "mentioned_mobile_list": [contact.mobile]},
        }
    md = f"**{n.subject_zh}**\n{n.body_zh}\n\n**{n.subject_en}**\n{n.body_en}"
    return {"msgtype": "markdown", "markdown": {"content": _clip(md, WECOM_MARKDOWN_MAX)}}


def dingtalk_payload(n: Notification, contact: Contact) -> dict[str, Any]:
    text = f"### {n.subject_zh}\n\n{n.body_zh}\n\n### {n.subject_en}\n\n{n.body_en}"
    mobiles = [contact.mobile] if contact.mobile else []
    if mobiles:
        text += "\n\n" + " ".join(f"@{m}" for m in mobiles)  # DingTalk shows the @ only if it is in the text
    return {
        "msgtype": "markdown",
        "markdown": {"title": n.subject_zh, "text": text},
        "at": {"atMobiles": mobiles, "isAtAll": False},
    }


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(mac).decode())


def dingtalk_url(url: str, secret: str | None) -> str:
    if not secret:
        return url
    ts = int(time.time() * 1000)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={ts}&sign={dingtalk_sign(secret, ts)}"


def email_message(n: Notification, conf: NotifySettings, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"{n.subject_zh} / {n.subject_en}"
    msg["From"] = formataddr(("hisguard", conf.smtp_from))
    msg["To"] = to
    msg["Message-ID"] = make_msgid(domain="hisguard")
    msg["X-Hisguard-Notification"] = str(n.id)
    msg["X-Hisguard-Event"] = n.event
    if n.case_id is not None:
        msg["X-Hisguard-Case"] = str(n.case_id)
    msg.set_content(f"{n.body_zh}\n\n———\n\n{n.body_en}\n", charset="utf-8")
    return msg


def _smtp_send(msg: EmailMessage, conf: NotifySettings) -> None:
    try:
        with smtplib.SMTP(conf.smtp_host, conf.smtp_port, timeout=conf.timeout) as smtp:
            if conf.smtp_starttls:
                smtp.starttls()
            if conf.smtp_user:
                smtp.login(conf.smtp_user, conf.smtp_password or "")
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError(f"smtp {conf.smtp_host}:{conf.smtp_port}: {type(exc).__name__}: {exc}") from None


async def _post(client: httpx.AsyncClient, url: str, payload: dict[str, Any], robot: bool) -> None:
    shown = url.split("?", 1)[0]
    try:
        r = await client.post(url, json=payload)
    except httpx.HTTPError as exc:
        raise ChannelError(f"{shown}: {type(exc).__name__}: {exc}") from None
    if r.status_code // 100 != 2:
        raise ChannelError(f"{shown}: HTTP {r.status_code}")
    if robot:
        try:
            body = r.json()
        except ValueError:
            raise ChannelError(f"{shown}: answer is not JSON") from None
        if not isinstance(body, dict) or body.get("errcode") != 0:
            err = body.get("errmsg") if isinstance(body, dict) else body
            raise ChannelError(f"{shown}: errcode {body.get('errcode') if isinstance(body, dict) else '?'}: {err}")


async def _deliver(n: Notification, contact: Contact, conf: NotifySettings, client: httpx.AsyncClient) -> None:
    if n.channel == "email":
        if not contact.email:
            raise ChannelError("contact has no e-mail address any more")
        await asyncio.to_thread(_smtp_send, email_message(n, conf, contact.email), conf)
    elif n.channel == "webhook":
        if not contact.webhook:
            raise ChannelError("contact has no webhook any more")
        await _post(client, contact.webhook, webhook_payload(n), robot=False)
    elif n.channel == "wecom":
        if not contact.wecom:
            raise ChannelError("contact has no WeCom robot any more")
        await _post(client, contact.wecom, wecom_payload(n, contact), robot=True)
    elif n.channel == "dingtalk":
        if not contact.dingtalk:
            raise ChannelError("contact has no DingTalk robot any more")
        url = dingtalk_url(contact.dingtalk, contact.dingtalk_secret)
        await _post(client, url, dingtalk_payload(n, contact), robot=True)
    else:
        raise ChannelError(f"unknown channel {n.channel!r}")


async def send(n: Notification, contact: Contact, conf: NotifySettings, client: httpx.AsyncClient) -> None:
    """Deliver one notification over its channel, within the configured timeout."""
    try:
        await asyncio.wait_for(_deliver(n, contact, conf, client), conf.timeout)
    except asyncio.TimeoutError:
        raise ChannelError(f"{n.channel}: no answer within {conf.timeout:g} s") from None
