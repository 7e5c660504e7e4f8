"""The host page's graphs without a browser: time ranges (presets, custom, zoom, bad input), downsampling
per range, legends in the user's words, thresholds where a probe has one."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hisguard.report import utcnow
from hisguard.server.domain import history
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import HealthRollup, HealthSample
from hisguard.server.web import charts, timerange
from tests.test_history import _agent
from tests.test_web import Console
from tests.test_web import console as web_console  # noqa: F401 - a fixture, used by this name

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


# -- time ranges ---------------------------------------------------------------------------------------


def test_presets_custom_ranges_and_bad_input() -> None:
    r = timerange.from_query({"range": "7d"}, NOW)
    assert (r.since, r.until, r.key, r.chosen, r.error) == (NOW - timedelta(days=7), NOW, "7d", True, False)
    for key, hours in (("1h", 1), ("6h", 6), ("24h", 24), ("30d", 720)):
        assert timerange.from_query({"range": key}, NOW).span == timedelta(hours=hours)
    # A zoom: ISO times with their zone.
    z = timerange.from_query({"from": "2026-03-08T06:00:00.000Z", "to": "2026-03-09T06:00:00Z"}, NOW)
    assert (z.key, z.since.hour, z.span) == ("custom", 6, timedelta(days=1))
    # The custom form: the browser's local time (Beijing: getTimezoneOffset() = -480).
    c = timerange.from_query({"from": "2026-03-09T08:00", "to": "2026-03-09T20:30", "tz": "-480"}, NOW)
    assert c.since == datetime(2026, 3, 9, 0, 0, tzinfo=timezone.utc) and c.until.hour == 12
    assert timerange.from_query({"from": "2026-03-09T08:00"}, NOW).until == NOW  # open end: now
    for bad in (
        {"range": "3y"},
        {"from": "yesterday"},
        {"from": "2026-03-09T10:00", "to": "2026-03-09T09:00"},  # backwards
        {"from": "2026-03-09T10:00", "to": "2026-03-09T10:00:30"},  # shorter than a minute
        {"from": "2020-01-01T00:00", "to": "2026-03-09T00:00"},  # years
        {"from": "2026-03-09T08:00", "tz": "99999"},
        {"from": "2027-01-01T00:00", "to": "2027-01-02T00:00"},  # the future
    ):
        r = timerange.from_query(bad, NOW)
        assert r.error and r.key == "24h" and r.span == timedelta(hours=24), bad
    assert not timerange.from_query({}, NOW).error


def test_the_default_range_fits_a_new_hosts_history() -> None:
    default = timerange.from_query({}, NOW)
    assert default.fitted(NOW - timedelta(minutes=20)).key == "1h"  # a new host fills the chart
    assert default.fitted(NOW - timedelta(hours=5)).key == "6h"
    assert default.fitted(NOW - timedelta(days=3)).key == "24h"
    assert default.fitted(None).key == "24h"
    chosen = timerange.from_query({"range": "24h"}, NOW)
    assert chosen.fitted(NOW - timedelta(minutes=20)).key == "24h"  # what the user chose stays


# -- downsampling ----------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    d.migrate()
    yield d
    d.dispose()


def test_thirty_days_of_five_minute_rows_come_back_as_at_most_600_weighted_means(db: Database) -> None:
    aid = _agent(db)
    start = NOW - timedelta(days=30)
    rows = [
        {"agent_id": aid, "at": start + timedelta(minutes=5 * i), "data": {"host.cpu/cpu": float(i % 100), "_n": 10}}
        for i in range(30 * 288)
    ]
    with db.session() as s:
        s.execute(HealthSample.__table__.insert(), rows)
    with db.session() as s:
        got = history.load(s, aid, start, NOW, ("host.cpu/",))
    pts = got["host.cpu/cpu"]
    assert 590 <= len(pts) <= 600
    assert all(start < at < NOW for at, _ in pts) and [at for at, _ in pts] == sorted(at for at, _ in pts)
    # Each bucket is 72 minutes: 14 or 15 stored rows, their mean.
    i0 = [i for i in range(30 * 288) if start + timedelta(minutes=5 * i) < start + timedelta(minutes=72)]
    assert pts[0][1] == pytest.approx(sum(i % 100 for i in i0) / len(i0))
    with db.session() as s:  # a short range is not averaged: one point per stored row
        short = history.load(s, aid, NOW - timedelta(hours=6), NOW, ("host.",))
    assert len(short["host.cpu/cpu"]) == 72 and short["host.cpu/cpu"][0][1] == float((30 * 288 - 72) % 100)


def test_weights_of_averaged_rows_count(db: Database) -> None:
    aid = _agent(db)
    with db.session() as s:
        for i in range(700):  # more than a chart holds: averaged
            data = {"x/y": 10.0, "_n": 9} if i % 2 == 0 else {"x/y": 20.0}
            s.add(HealthSample(agent_id=aid, at=NOW - timedelta(seconds=700 - i), data=data))
    with db.session() as s:
        got = history.load(s, aid, NOW - timedelta(seconds=700), NOW, ("x/",), max_points=1)
    assert got["x/y"][0][1] == pytest.approx((350 * 9 * 10 + 350 * 20) / (350 * 10))


def _values(i: int) -> dict[str, float]:
    """A saw for exact means, a day's smooth wave for comparing charts, a value no chart draws."""
    return {"host.cpu/cpu": float(i % 240), "host.memory/memory": 50 + 40 * math.sin(i / 2880 * 2 * math.pi), "x/y": 1}


def _seed_days(db: Database, aid: int, days: int, end: datetime = NOW) -> None:
    start = end - timedelta(days=days)
    rows = [
        {
            "agent_id": aid,
            "at": start + timedelta(seconds=30 * i),
            "data": _values(i),
        }
        for i in range(days * 2880)
    ]
    with db.session() as s:
        for k in range(0, len(rows), 5000):
            s.execute(HealthSample.__table__.insert(), rows[k : k + 5000])


def _rollups(db: Database, aid: int, step_s: int) -> dict[datetime, dict[str, float]]:
    with db.session() as s:
        q = select(HealthRollup.at, HealthRollup.data).where(
            HealthRollup.agent_id == aid, HealthRollup.step_s == step_s
        )
        return {at: data for at, data in s.execute(q)}


@pytest.fixture
def fresh_history() -> Iterator[None]:
    history._done_before.clear()
    history._rolled_upto.clear()
    yield
    history._done_before.clear()
    history._rolled_upto.clear()


def test_long_ranges_read_rollups_that_match_the_samples(db: Database, fresh_history: None) -> None:
    aid = _agent(db)
    _seed_days(db, aid, 8)
    week = (NOW - timedelta(days=7), NOW)
    with db.session() as s:  # before any rollup: from the samples
        from_samples = history.load(s, aid, *week, ("host.memory/",))["host.memory/memory"]
    stats = history.compact(db, NOW, timedelta(days=30))  # downsamples the older days too
    assert (
        stats["behind"] == 0 and stats["rollups"] == 8 * 96 - 1 + 8 * 24 - 1 + 2 * 288 - 1
    )  # 15 min, 1 h, 5 min (2 days); the newest not over
    quarter = _rollups(db, aid, 900)
    first = min(quarter)
    assert quarter[first]["_n"] == 30 and quarter[first]["host.cpu/cpu"] == pytest.approx(14.5)  # samples 0…29
    assert "x/y" in quarter[first]  # every value is kept, as in the samples
    hour = _rollups(db, aid, 3600)
    assert hour[min(hour)]["_n"] == 120 and hour[min(hour)]["host.cpu/cpu"] == pytest.approx(59.5)
    with db.session() as s:
        rows = history._rows(s, aid, *week)
        from_rollups = history.load(s, aid, *week, ("host.memory/",))["host.memory/memory"]
    assert len(rows) <= 7 * 96 + 30  # a week: 671 rollups and the last quarter hour's samples, not 20,160 samples
    assert len(from_rollups) == len(from_samples) == 600
    # The same chart, up to where a quarter hour's mean falls (the wave moves at most 1.6 in 7.5 minutes).
    assert max(abs(a[1] - b[1]) for a, b in zip(from_rollups[5:-5], from_samples[5:-5], strict=True)) < 2
    with db.session() as s:  # a day: the 5-minute rollups and the last minutes' samples
        assert len(history._rows(s, aid, NOW - timedelta(days=1), NOW)) <= 288 + 10
    # A second pass has nothing to do; a month reads the hourly rollups.
    assert history.compact(db, NOW, timedelta(days=30))["rollups"] == 0
    with db.session() as s:
        assert len(history._rows(s, aid, NOW - timedelta(days=30), NOW)) <= 8 * 24 + 120  # + the last hour


def test_a_late_sample_corrects_its_rollups_and_a_backlog_continues(db: Database, fresh_history: None) -> None:
    aid = _agent(db)
    _seed_days(db, aid, 2)
    _, written, behind = history.rollup(db, NOW, budget=1)  # after an upgrade: one agent a pass
    assert behind is False and written > 0  # one agent: done in its first turn
    bucket = NOW - timedelta(hours=20)
    before = _rollups(db, aid, 3600)[bucket]["host.cpu/cpu"]
    with db.session() as s:  # an agent's spool delivers an old sample late
        s.add(HealthSample(agent_id=aid, at=bucket + timedelta(minutes=7), data={"host.cpu/cpu": 100000.0}))
    assert history.rollup(db, NOW)[1] == 3  # its 5-minute, 15-minute and hourly buckets, written again
    after = _rollups(db, aid, 3600)[bucket]
    assert after["_n"] == 121 and after["host.cpu/cpu"] == pytest.approx((before * 120 + 100000) / 121)
    # Several agents and a small budget: the pass stops and says so; the next goes on.
    other = _agent(db, "his-app2")
    _seed_days(db, other, 1)
    history._rolled_upto.clear()
    with db.session() as s:
        s.execute(HealthRollup.__table__.delete())
    assert history.rollup(db, NOW, budget=1)[2] is True
    assert _rollups(db, other, 900) == {}
    assert history.rollup(db, NOW, budget=1)[2] is False and len(_rollups(db, other, 900)) == 95
    with db.session() as s:  # partly rolled up or not, the same chart
        assert len(history.load(s, other, NOW - timedelta(days=7), NOW, ("host.",))["host.cpu/cpu"]) > 90


def test_values_no_chart_can_scale_are_left_out(db: Database) -> None:
    """A careless or hostile agent's NaN, infinity or 1e308 neither breaks the page nor flattens the chart."""
    aid = _agent(db)
    bad = [float("nan"), float("inf"), -float("inf"), 1e308, True, "12"]
    with db.session() as s:
        for i, value in enumerate([*bad, 42.0]):
            s.add(HealthSample(agent_id=aid, at=NOW - timedelta(minutes=10 - i), data={"host.cpu/cpu": value}))
    for max_points in (600, 2):  # stored rows as they are, and averaged
        with db.session() as s:
            got = history.load(s, aid, NOW - timedelta(hours=1), NOW, ("host.",), max_points=max_points)
        assert [v for _, v in got["host.cpu/cpu"]] == [42.0], max_points


# -- legends and thresholds ------------------------------------------------------------------------------

SNAPSHOT = {
    "observations": [
        {"check": "host.cpu", "subject": "cpu", "ok": True, "value": 30, "limit": 95},
        {
            "check": "ping.reachable",
            "subject": "198.18.250.1",
            "name": "核心交换机",
            "ok": True,
            "value": 0,
            "limit": 0.5,
        },
        {"check": "ping.reachable", "subject": "198.18.250.2", "ok": True, "value": 0},
        {"check": "service.answer", "subject": "http://10.0.0.8/", "name": "HIS 应用", "ok": True, "value": 12},
        {"check": "service.latency", "subject": "http://10.0.0.8/", "name": "HIS 应用", "ok": True, "limit": 40},
    ]
}


def _history() -> dict[str, dict[str, list[tuple[datetime, float]]]]:
    pts = [(NOW - timedelta(minutes=50 - i), 0.1 * (i % 3)) for i in range(50)]
    return {
        "cpu": {"host.cpu/cpu": [(at, 30.0) for at, _ in pts]},
        "ping_loss": {"ping.reachable/198.18.250.1": pts, "ping.reachable/198.18.250.2": pts},
        "ping_rtt": {"rtt:ping.reachable/198.18.250.1": [(at, 1.5) for at, _ in pts]},
        "service_latency": {"service.answer/http://10.0.0.8/": [(at, 12.0) for at, _ in pts]},
    }


def test_legends_name_the_target_in_the_users_language_and_thresholds_are_drawn() -> None:
    span, drawn = charts.host_charts(_history(), timerange.from_query({}, NOW), SNAPSHOT, "zh")
    assert span.key == "1h"
    ping = drawn["ping_loss"]
    assert [line.name for line in ping.lines] == ["核心交换机", "198.18.250.2"]  # the name, else the address
    assert ping.lines[0].detail == "丢包率 · 198.18.250.1"
    assert drawn["cpu"].lines[0].name == "CPU 使用率" and drawn["ping_rtt"].lines[0].name == "核心交换机"
    _, english = charts.host_charts(_history(), timerange.from_query({}, NOW), SNAPSHOT, "en")
    assert (
        english["cpu"].lines[0].name == "CPU" and english["ping_loss"].lines[0].detail == "Packet loss · 198.18.250.1"
    )
    # Loss is stored as a fraction and drawn in percent, its threshold too.
    assert max(float(p.split(",")[1]) for p in ping.lines[0].points.split()) < ping.height  # on the chart
    data = json.loads(ping.data)
    assert max(data["series"][0]["v"]) == pytest.approx(20.0)
    (th,) = ping.thresholds
    assert th.value == 50 and th.label == "阈值 50%" and th.y is not None
    assert drawn["cpu"].thresholds[0].value == 95
    assert drawn["service_latency"].thresholds[0].label == "阈值 40ms"
    assert drawn["ping_rtt"].thresholds == ()  # a round trip has no limit of its own


def test_a_threshold_above_the_values_is_in_the_legend_not_off_the_chart() -> None:
    snap = {"observations": [{"check": "service.latency", "subject": "u", "limit": 3000}]}
    hist = {"service_latency": {"service.answer/u": [(NOW - timedelta(minutes=1), 5.0), (NOW, 6.0)]}}
    _, drawn = charts.host_charts(hist, timerange.from_query({"range": "1h"}, NOW), snap, "zh")
    (th,) = drawn["service_latency"].thresholds
    assert th.y is None and th.value == 3000


def test_tick_labels_follow_the_range() -> None:
    assert charts.tick_format(3600) == "hm"
    assert charts.tick_format(7 * 86400) == "mdhm"
    assert charts.tick_format(30 * 86400) == "md"


# -- the page --------------------------------------------------------------------------------------------


def heartbeat(at: datetime, cpu: float) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "observed_at": at.isoformat(),
        "interval_s": 30,
        "snapshot": {
            "observations": [
                {"check": "host.cpu", "subject": "cpu", "ok": True, "value": cpu, "limit": 90},
                {"check": "ping.reachable", "subject": "198.18.250.1", "name": "核心交换机", "ok": True, "value": 0.0},
            ]
        },
    }


def test_the_host_page_shows_the_range_asked_for(web_console: Console) -> None:  # noqa: F811 - the fixture
    console = web_console
    now = utcnow()
    beats = [heartbeat(now - timedelta(hours=3 * i), cpu=float(i)) for i in range(56)]  # a week, every 3 h
    console.report("renmin", "his-db1", sorted(beats, key=lambda b: b["observed_at"]))
    c = console.login("eng")
    day = c.get("/hosts/1").text
    assert 'class="on" aria-current="true">24 小时' in day and len(_points(day, "cpu")) == 8
    week = c.get("/hosts/1?range=7d").text
    assert "近 7 天" in week and 'class="on" aria-current="true">7 天' in week
    assert len(_points(week, "cpu")) == 56 and 'data-fmt="mdhm"' in week
    assert "核心交换机" in week and "ping.reachable/" not in week.replace('data-name="', "")
    assert 'class="threshold"' in week and "阈值 90%" in week
    zoom = c.get("/hosts/1", params={"from": (now - timedelta(days=2)).isoformat(), "to": now.isoformat()}).text
    assert "自定义时段" in zoom and len(_points(zoom, "cpu")) == 17  # both ends included
    bad = c.get("/hosts/1?from=tomorrow").text
    assert 'id="range-error"' in bad and "时间范围无效" in bad


def _points(page: str, chart: str) -> list[str]:
    found = re.search(rf'data-chart="{chart}".*?<polyline[^>]*points="([^"]+)"', page, re.S)
    return found.group(1).split() if found else []
