"""The host page's graphs in a real browser (Debian's Chromium driven by Playwright) against a real server
process holding a week of a host's history: switch to 7 days and see the range change, hover for values,
legends by the target's name, thresholds, drag to zoom, a custom range, and a phone's width.

The 7-day view is saved to docs/screenshots/graphs-7d.png (committed, shown in the README).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hisguard.report import utcnow
from tests.support.procs import ServerProc
from tests.test_web_browser import PASSWORD, login, no_horizontal_scroll
from tests.test_web_browser import browser as chromium  # noqa: F401 - a fixture, used by this name

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "graphs-7d.png"
TARGETS = (("198.18.250.1", "核心交换机"), ("198.18.250.2", "门诊楼接入交换机"), ("198.18.250.9", None))


def observations(at: datetime, i: int) -> list[dict[str, Any]]:
    """A plausible week: CPU follows the clinic's day, a disk fills slowly, the access switch has a bad hour."""
    hour = at.hour + at.minute / 60
    day = max(0.0, math.sin((hour - 7) / 12 * math.pi))  # busy 07:00–19:00
    outage = 3 * 24 * 12 <= i < 3 * 24 * 12 + 12  # one hour, three days in
    rows: list[dict[str, Any]] = [
        {
            "check": "host.cpu",
            "subject": "cpu",
            "ok": True,
            "value": round(12 + 60 * day + (i * 7) % 9, 1),
            "limit": 95,
        },
        {"check": "host.memory", "subject": "memory", "ok": True, "value": round(58 + 8 * day, 1), "limit": 95},
        {"check": "host.disk", "subject": "/", "ok": True, "value": round(61 + i / 300, 2), "limit": 90},
        {"check": "db.connect", "subject": "his", "name": "HIS 主数据库", "ok": True, "value": 8 + 20 * day},
    ]
    for n, (address, name) in enumerate(TARGETS):
        loss = 0.6 if outage and n == 1 else (0.2 if (i + n) % 97 == 0 else 0.0)
        row = {"check": "ping.reachable", "subject": address, "ok": loss < 0.5, "value": loss, "limit": 0.5}
        row["rtt_ms"] = round(0.4 + n * 0.3 + 1.2 * day, 2)
        if name:
            row["name"] = name
        rows.append(row)
    return rows


def week_of_heartbeats(now: datetime) -> list[dict[str, Any]]:
    start = now - timedelta(days=7)
    beats = []
    for i in range(7 * 24 * 12):  # every 5 minutes, as the server keeps history older than a day
        at = start + timedelta(minutes=5 * i)
        beats.append(
            {
                "type": "heartbeat",
                "id": str(uuid.uuid4()),
                "observed_at": at.isoformat(),
                "interval_s": 300,
                "snapshot": {"observations": observations(at, i)},
            }
        )
    return beats


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    tmp = tmp_path_factory.mktemp("graphs")
    srv = ServerProc(tmp / "server")
    pw = tmp / "pw"
    pw.write_text(PASSWORD + "\n", encoding="utf-8")
    srv.cli("user", "create", "--name", "eng", "--role", "engineer", "--password-file", str(pw))
    token = srv.agent_token("his-app1", "renmin")
    srv.start()
    beats = week_of_heartbeats(utcnow())
    for k in range(0, len(beats), 500):
        r = httpx.post(
            f"{srv.url}/api/v1/reports",
            json={"agent": "his-app1", "version": "0.1", "items": beats[k : k + 500]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    yield srv
    srv.stop()


def span_of(page: Any) -> timedelta:
    form = page.locator("#range-form")
    since, until = form.get_attribute("data-since"), form.get_attribute("data-until")
    return datetime.fromisoformat(until) - datetime.fromisoformat(since)


def test_a_week_of_graphs_ranges_hover_legends_thresholds_and_zoom(server: ServerProc, chromium: Any) -> None:  # noqa: F811
    page = login(chromium, server, "eng", viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/hosts/1")
    assert page.locator(".range-presets a.on").inner_text() == "24 小时"
    assert span_of(page) == timedelta(hours=24)

    # 7 days: the heading, the highlighted preset, the axis in dates, the data across the whole chart.
    page.click('.range-presets a[data-range="7d"]')
    page.wait_for_url("**/hosts/1?range=7d")
    assert page.locator("#range-title").inner_text().startswith("近 7 天")
    assert page.locator(".range-presets a.on").inner_text() == "7 天"
    assert span_of(page) == timedelta(days=7)
    ticks = page.locator('[data-chart="cpu"] text[data-hm]')
    first, last = ticks.first.get_attribute("data-hm"), ticks.last.get_attribute("data-hm")
    assert datetime.fromisoformat(last) - datetime.fromisoformat(first) == timedelta(days=7)
    assert "-" in ticks.first.text_content()  # MM-DD HH:MM, the browser's local time
    cpu = page.locator('[data-chart="cpu"] polyline.series').first
    xs = [float(p.split(",")[0]) for p in cpu.get_attribute("points").split()]
    assert xs[0] < 45 and xs[-1] > 585 and len(xs) <= 600  # the week fills the chart, downsampled to it

    # Legends: the target's name, else its address; never an internal key. Thresholds drawn and named.
    legend = page.locator('[data-chart="ping_loss"] .legend').inner_text()
    assert "核心交换机" in legend and "门诊楼接入交换机" in legend and "198.18.250.9" in legend
    assert "ping.reachable" not in page.locator(".charts").inner_text()
    assert page.locator('[data-chart="ping_loss"] line.threshold').count() == 1
    assert "阈值 50%" in legend and "阈值 95%" in page.locator('[data-chart="cpu"] .legend').inner_text()
    assert page.locator('[data-chart="disk"] line.threshold').count() == 1

    # Hover: the values under the pointer, by series name.
    svg = page.locator('[data-chart="ping_loss"] svg')
    box = svg.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    tip = page.locator('[data-chart="ping_loss"] .chart-tip')
    tip.wait_for(state="visible")
    said = tip.inner_text()
    assert "核心交换机: " in said and "门诊楼接入交换机: " in said and "%" in said
    cpu_svg = page.locator('[data-chart="cpu"] svg')
    cbox = cpu_svg.bounding_box()
    page.mouse.move(cbox["x"] + cbox["width"] * 0.45, cbox["y"] + cbox["height"] * 0.4)
    cpu_tip = page.locator('[data-chart="cpu"] .chart-tip')
    cpu_tip.wait_for(state="visible")
    value = cpu_tip.inner_text().split("CPU 使用率: ")[1].split("%")[0]
    assert 0 <= float(value) <= 100
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Zoom: drag across a quarter of the chart; that span is shown.
    y = cbox["y"] + cbox["height"] * 0.5
    page.mouse.move(cbox["x"] + cbox["width"] * 0.30, y)
    page.mouse.down()
    page.mouse.move(cbox["x"] + cbox["width"] * 0.55, y, steps=8)
    page.mouse.up()
    page.wait_for_url("**from=**")
    assert page.locator("#range-title").inner_text().startswith("自定义时段")
    zoomed = span_of(page)
    assert timedelta(days=1.4) < zoomed < timedelta(days=2.1), zoomed  # a quarter of the plot's width of 7 days
    assert page.locator(".range-presets a.on").count() == 0

    # A custom range from the form, in the browser's local time.
    page.fill("#range-form input[name=from]", "2026-01-01T08:00")
    page.fill("#range-form input[name=to]", "2026-01-01T20:00")
    page.click("#range-form button[type=submit]")
    page.wait_for_url("**tz=**")
    assert page.locator("#range-title").inner_text().startswith("自定义时段")
    assert span_of(page) == timedelta(hours=12)


def test_the_host_page_at_phone_width(server: ServerProc, chromium: Any) -> None:  # noqa: F811 - the fixture
    phone = login(
        chromium, server, "eng", viewport={"width": 375, "height": 812}, device_scale_factor=2, has_touch=True
    )
    phone.goto(f"{server.url}/hosts/1?range=7d")
    assert no_horizontal_scroll(phone)
    svg = phone.locator('[data-chart="cpu"] svg')
    box = svg.bounding_box()
    assert box["width"] <= 375
    phone.tap('[data-chart="cpu"] svg', position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    phone.locator('[data-chart="cpu"] .chart-tip').wait_for(state="visible")  # a tap shows the values
    assert no_horizontal_scroll(phone)
