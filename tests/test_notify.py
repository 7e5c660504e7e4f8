"""Notifications against real peers: an aiosmtpd SMTP server and a local HTTP receiver answering like a
webhook, a WeCom group robot and a DingTalk robot. Shapes follow the robots' published formats."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hisguard.server.domain.clocks import ManualClock
from tests.test_cases import (  # the fixtures smtp and http come with their functions
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    incident,
    site_settings,
    smtp_fixture,  # noqa: F401
    wait_for,
)


def _server(smtp: SmtpSink, http: HttpSink, tmp_path: Path, contacts: dict[str, Any] | None = None, **notify: Any):
    settings = site_settings(smtp, http, tmp_path)
    data = settings.model_dump()
    site = data["sites"]["renmin"]
    if contacts is not None:
        site["contacts"] = contacts
        site["tiers"] = [list(contacts)]
        site["managers"], site["hospital"] = [], []
    data["notify"].update(notify)
    srv = Server(type(settings).model_validate(data), ManualClock())
    srv.token("his-db-01", agent=True)
    srv.token("li", "engineer")
    return srv


def _shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not contents."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def test_every_channel_delivers_bilingual_messages_in_the_published_shapes(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    srv = _server(smtp, http, tmp_path)
    try:
        srv.report(incident(srv.clock))
        # Tier 1 (li: e-mail) and the manager (mgr: e-mail + DingTalk) hear of the activation,
        # the hospital (xxk: e-mail + webhook) that the plan started.
        mails = wait_for(lambda: len(smtp.messages) >= 3 and smtp.messages, what="three e-mails")
        msg = smtp.to("li@vendor.example")[0]
        assert msg["Subject"] == (
            "【应急预案已启动】【全面加急】人民医院：核心交换机 网络不可达 / "
            "[Emergency plan activated] [Critical] Renmin Hospital: Core switch unreachable"
        )
        body = msg.get_content()
        assert "级别：全面加急（10 分钟内响应）" in body and "Severity: Critical (respond within 10 min)" in body
        assert msg.get_content_charset() == "utf-8" and msg["X-Hisguard-Event"] == "activated"
        assert len(mails) == 3

        (hook,) = wait_for(lambda: http.at("/hook"), what="webhook")
        assert _shape(hook["body"]) == {
            "source": "str",
            "notification_id": "int",
            "event": "str",
            "site": "str",
            "case_id": "int",
            "subject": {"zh": "str", "en": "str"},
            "text": {"zh": "str", "en": "str"},
            "data": {
                "case": {
                    "id": "int",
                    "site": "str",
                    "trigger": "int",
                    "severity": "str",
                    "scope": "str",
                    "departments": ["str"],
                    "functions": ["str"],
                    "title": {"zh": "str", "en": "str"},
                    "status": "str",
                    "drill": "bool",
                }
            },
        }
        assert hook["body"]["event"] == "plan_started_hospital" and hook["body"]["data"]["case"]["trigger"] == 1

        # DingTalk custom robot: markdown {title, text} + at {atMobiles, isAtAll}; signed URL accepted.
        (ding,) = wait_for(lambda: http.at("/dingtalk"), what="DingTalk")
        assert _shape(ding["body"]) == {
            "msgtype": "str",
            "markdown": {"title": "str", "text": "str"},
            "at": {"atMobiles": ["str"], "isAtAll": "bool"},
        }
        assert ding["body"]["msgtype"] == "markdown" and ding["body"]["at"] == {
            "atMobiles": ["13800000000"],
            "isAtAll": False,
        }
        assert "@13800000000" in ding["body"]["markdown"]["text"]
        assert ding["query"]["access_token"] == ["DT1"] and ding["query"]["timestamp"][0].isdigit()
        sent = wait_for(lambda: [n for n in srv.notifications(channel="dingtalk") if n.status == "sent"], what="sent")
        assert sent[0].attempts == 1  # the receiver checked the signature and answered errcode 0

        # WeCom group robot, reached at tier 2 after ten minutes: markdown {content} ≤ 4096 bytes.
        srv.clock.advance(minutes=10)
        srv.tick()
        (wecom,) = wait_for(lambda: http.at("/wecom"), what="WeCom")
        assert wecom["query"]["key"] == ["WK1"]
        assert _shape(wecom["body"]) == {"msgtype": "str", "markdown": {"content": "str"}}
        content = wecom["body"]["markdown"]["content"]
        assert len(content.encode()) <= 4096 and "升级至第 2 梯队" in content and "Escalated to tier 2" in content
        # What people see of a robot's address never includes its key.
        assert {n.target for n in srv.notifications(channel="wecom")} == {f"{http.url}/wecom/send"}
    finally:
        srv.close()


def test_wecom_text_message_mentions_a_mobile(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    contacts = {"duty": {"wecom": f"{http.url}/wecom/send?key=K2", "mobile": "13900000000"}}
    srv = _server(smtp, http, tmp_path, contacts)
    try:
        srv.report(incident(srv.clock, severity="routine", scope="host", functions=[], departments=[]))
        (req,) = wait_for(lambda: http.at("/wecom"), what="WeCom text")
        assert _shape(req["body"]) == {"msgtype": "str", "text": {"content": "str", "mentioned_mobile_list": ["str"]}}
        assert req["body"]["text"]["mentioned_mobile_list"] == ["13900000000"]
        assert len(req["body"]["text"]["content"].encode()) <= 2048
    finally:
        srv.close()


def test_failing_channel_is_retried_with_backoff_recorded_and_blocks_nothing(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    contacts = {
        "duty": {
            "email": "duty@vendor.example",
            "wecom": f"{http.url}/wecom/send?key=K3",
            "webhook": "http://127.0.0.1:9/nothing-listens-here",
        }
    }
    http.fail["/wecom/send"] = 2  # the robot refuses twice (errcode 45009), then accepts
    srv = _server(smtp, http, tmp_path, contacts)
    try:
        srv.report(incident(srv.clock, severity="routine", scope="host", functions=[], departments=[]))
        wait_for(lambda: smtp.to("duty@vendor.example"), what="e-mail despite failing channels")

        def row(channel: str) -> Any:
            (n,) = srv.notifications(channel=channel)
            return n

        wait_for(lambda: row("wecom").attempts == 1 and row("wecom").status == "pending", what="first failure")
        first = row("wecom")
        assert "45009" in first.last_error
        assert first.next_attempt_at == srv.clock.now() + timedelta(seconds=30)
        srv.clock.advance(seconds=30)
        wait_for(lambda: row("wecom").attempts == 2 and row("wecom").status == "pending", what="second failure")
        assert row("wecom").next_attempt_at == srv.clock.now() + timedelta(seconds=60)  # doubled
        srv.clock.advance(seconds=60)
        wait_for(lambda: row("wecom").status == "sent", what="delivered on the third attempt")
        assert [entry["ok"] for entry in row("wecom").log] == [False, False, True]
        assert len(http.at("/wecom")) == 3

        # Nothing listens on the webhook's port: given up after max_attempts (3), with the reason.
        srv.clock.advance(seconds=120)
        wait_for(lambda: row("webhook").status == "failed", what="webhook given up")
        dead = row("webhook")
        assert dead.attempts == 3 and "ConnectError" in dead.last_error and len(dead.log) == 3
        assert row("email").status == "sent" and row("email").attempts == 1
        api = srv.get("/notifications", "li", status="failed").json()
        assert [(n["channel"], n["attempts"]) for n in api] == [("webhook", 3)]
    finally:
        srv.close()


def test_a_hanging_channel_does_not_delay_the_others(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    release = threading.Event()
    hang = HttpSinkHanging(release)
    contacts = {"duty": {"email": "duty@vendor.example", "webhook": f"{hang.url}/hook"}}
    srv = _server(smtp, http, tmp_path, contacts, timeout=2)
    try:
        started = time.monotonic()
        srv.report(incident(srv.clock, severity="routine", scope="host", functions=[], departments=[]))
        wait_for(lambda: smtp.to("duty@vendor.example"), what="e-mail")
        assert time.monotonic() - started < 1.5  # not waiting for the webhook's 2-s timeout
        wait_for(lambda: srv.notifications(channel="webhook")[0].last_error, timeout=10, what="webhook timeout")
        assert "no answer within 2 s" in srv.notifications(channel="webhook")[0].last_error
    finally:
        release.set()
        srv.close()
        hang.stop()


class HttpSinkHanging:
    """An HTTP server that accepts the request and never answers until released."""

    def __init__(self, release: threading.Event) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                release.wait(30)
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("bad", [{"email": "not-an-address"}, {"wecom": "ftp://x"}])
def test_contact_configuration_errors_are_clear(bad: dict[str, str], tmp_path: Path) -> None:
    from pydantic import ValidationError

    from hisguard.server.settings import ServerSettings

    with pytest.raises(ValidationError) as err:
        ServerSettings.model_validate({"sites": {"renmin": {"contacts": {"x": bad}, "tiers": [["x"]]}}})
    assert next(iter(bad)) in str(err.value)
    with pytest.raises(ValidationError, match="unknown contact"):
        ServerSettings.model_validate({"sites": {"renmin": {"tiers": [["nobody"]]}}})


def test_dingtalk_wrong_signing_secret_is_a_recorded_failure(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    contacts = {"group": {"dingtalk": f"{http.url}/dingtalk/send?access_token=DT9", "dingtalk_secret": "wrong"}}
    srv = _server(smtp, http, tmp_path, contacts)
    try:
        srv.report(incident(srv.clock, severity="routine", scope="host", functions=[], departments=[]))
        wait_for(lambda: srv.notifications(channel="dingtalk")[0].last_error, what="refused")
        (n,) = srv.notifications(channel="dingtalk")
        assert n.status == "pending" and "310000" in n.last_error and "wrong" not in n.last_error
    finally:
        srv.close()
