"""The web console in a real browser (Debian's Chromium driven by Playwright) against a real server process.

Screenshots of the main pages go to test-artifacts/web/ (not committed).
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hisguard.report import utcnow
from tests.support.peers import need, need_binary
from tests.support.procs import ServerProc

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PASSWORD = "browser-pass-1"
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    tmp = tmp_path_factory.mktemp("web-e2e")
    srv = ServerProc(tmp / "server")
    pw = tmp / "pw"
    pw.write_text(PASSWORD + "\n", encoding="utf-8")
    for name, role, site in [
        ("mgr", "service_manager", None),
        ("eng", "engineer", None),
        ("zy-it", "viewer", "zhongyi"),
    ]:
        srv.cli(
            "user",
            "create",
            "--name",
            name,
            "--role",
            role,
            "--password-file",
            str(pw),
            *(["--site", site] if site else []),
        )
    srv.tokens = {"renmin": srv.agent_token("his-db1", "renmin"), "zhongyi": srv.agent_token("zy-app1", "zhongyi")}
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    need(sync_playwright is not None, "needs playwright (pip install -e .[test])")
    need_binary(CHROMIUM)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def post(server: ServerProc, site: str, agent: str, items: list[dict[str, Any]]) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/reports",
        json={"agent": agent, "version": "0.1", "items": items},
        headers={"Authorization": f"Bearer {server.tokens[site]}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def heartbeat(minutes_ago: float, i: int) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "id": str(uuid.uuid4()),
        "observed_at": (utcnow() - timedelta(minutes=minutes_ago)).isoformat(),
        "interval_s": 30,
        "snapshot": {
            "observations": [
                {"check": "host.cpu", "subject": "cpu", "ok": True, "value": 20 + (i * 7) % 50},
                {"check": "host.memory", "subject": "memory", "ok": True, "value": 55 + i % 5},
                {"check": "host.disk", "subject": "/", "ok": True, "value": 61.0},
                {
                    "check": "ping.reachable",
                    "subject": "10.1.0.1",
                    "ok": True,
                    "value": (i % 4) * 5,
                    "rtt_ms": 1 + i % 3,
                },
                {"check": "db.connect", "subject": "his", "ok": True, "value": 10 + i % 6},
                {"check": "snmp.reachable", "subject": "core-sw", "ok": True},
                *[
                    {
                        "check": "snmp.interface",
                        "subject": f"core-sw/Gi1/0/{p}",
                        "ok": p != 7,
                        "value": 1 if p != 7 else 2,
                    }
                    for p in range(1, 25)
                ],
                {"check": "av.protection", "subject": "clamd", "ok": True},
            ]
        },
    }


def login(browser: Browser, server: ServerProc, name: str, **context: Any) -> Page:
    page = browser.new_context(**context).new_page()
    page.goto(f"{server.url}/")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_console_end_to_end(server: ServerProc, browser: Browser) -> None:
    post(server, "renmin", "his-db1", [heartbeat(60 - 2 * i, i) for i in range(30)])
    post(server, "zhongyi", "zy-app1", [heartbeat(1, 0)])

    # A service manager watches the overview; the tile turns red without a reload when an agent reports.
    page = login(browser, server, "mgr")
    tile = page.locator('.tile[data-site="renmin"]')
    assert "sev-ok" in tile.get_attribute("class")
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector("#live-dot.on")  # the event stream is connected
    post(
        server,
        "renmin",
        "his-db1",
        [
            {
                "type": "incident",
                "key": "host/his-db1/down",
                "state": "open",
                "trigger": 1,
                "severity": "critical",
                "scope": "hospital",
                "host": "his-db1",
                "title_zh": "HIS 数据库服务器宕机",
                "title_en": "HIS database server down",
                "observed_at": utcnow().isoformat(),
            }
        ],
    )
    page.wait_for_selector('.tile.sev-critical[data-site="renmin"]', timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded
    background = tile.evaluate("el => getComputedStyle(el).backgroundColor")
    assert background == "rgb(220, 38, 38)"  # red
    page.wait_for_function("document.querySelector('.tile[data-site=renmin] .countdown').textContent.includes(':')")
    shot(page, "overview")

    # Open the case and do the activation steps that are the manager's (and the engineer's, as a deputy).
    page.click('.tile[data-site="renmin"] a.case-link')
    page.wait_for_url("**/cases/*")
    case_url = page.url
    activation = page.locator("ol.steps").first.locator("li.step")  # 2.5: the activation steps
    n = activation.count()
    assert n >= 3
    for _ in range(n):
        buttons = page.locator("ol.steps").first.locator("button.step-btn")
        if buttons.count() == 0:
            break
        buttons.first.click()
        page.wait_for_load_state()
    done = page.locator("ol.steps").first.locator("li.step.done")
    assert done.count() >= 1
    assert page.locator("ol.steps").first.locator("li.step:not(.done) button.step-btn").count() == 0
    assert "mgr" in page.locator("ol.timeline").inner_text()
    shot(page, "case")

    page.goto(f"{server.url}/sites/renmin")
    assert page.locator(".port.down").count() == 1 and page.locator(".port.up").count() == 23
    shot(page, "site")
    page.click("text=his-db1")
    page.wait_for_url("**/hosts/*")
    cpu_points = page.locator('[data-chart="cpu"] polyline').first.get_attribute("points").split()
    assert len(cpu_points) == 30
    shot(page, "host")

    # A hospital's IT person of another site sees neither the case nor its site.
    zy = login(browser, server, "zy-it")
    assert zy.locator('.tile[data-site="renmin"]').count() == 0
    assert zy.locator('.tile[data-site="zhongyi"]').count() == 1
    assert zy.goto(case_url).status in (403, 404)
    assert zy.goto(f"{server.url}/sites/renmin").status in (403, 404)

    # Language switch, remembered for the user on another device.
    eng = login(browser, server, "eng")
    assert eng.locator("header .brand").inner_text() == "HIS 应急监测"
    eng.click("#lang-switch")
    eng.wait_for_selector("text=HIS emergency console")
    again = login(browser, server, "eng")
    assert again.locator("header .brand").inner_text() == "HIS emergency console"
    shot(again, "overview-en")

    # A phone: 375 px wide, no horizontal scroll on the main pages.
    phone = login(browser, server, "mgr", viewport={"width": 375, "height": 812}, device_scale_factor=2)
    for path, name in [("/", "phone-overview"), (case_url, "phone-case"), ("/sites/renmin", "phone-site")]:
        phone.goto(path if path.startswith("http") else f"{server.url}{path}")
        assert no_horizontal_scroll(phone), f"{path} scrolls sideways at 375 px"
        shot(phone, name)
    phone.goto(f"{server.url}/hosts/1")
    assert no_horizontal_scroll(phone)
    shot(phone, "phone-host")


def test_an_open_event_stream_does_not_hold_up_a_restart(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "server")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD, encoding="utf-8")
    srv.cli("user", "create", "--name", "eng", "--role", "engineer", "--password-file", str(pw))
    srv.start()
    try:
        client = httpx.Client(base_url=srv.url, timeout=30)
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"name": "eng", "password": PASSWORD, "csrf": csrf})
        hello = threading.Event()

        def listen() -> None:
            try:
                with client.stream("GET", "/events?page=overview") as r:
                    for line in r.iter_lines():
                        if line.startswith("event: hello"):
                            hello.set()
            except httpx.HTTPError:
                pass

        threading.Thread(target=listen, daemon=True).start()
        assert hello.wait(10)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(10)  # a stream lasts 30 s: the server must not wait for it
        except subprocess.TimeoutExpired:
            pytest.fail("the server waited for an open event stream before stopping")
    finally:
        srv.stop()
