"""Line charts as plain SVG drawn on the server: readable offline, on a phone, and without a script.

app.js adds what a Grafana user expects on top of the same SVG: the values under the pointer (from
the chart's `data-series`) and zoom by dragging across a time span.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hisguard.plan import Text
from hisguard.server.web import i18n
from hisguard.server.web.timerange import TimeRange

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563")
W, H = 600, 160
PAD_L, PAD_R, PAD_T, PAD_B = 40, 8, 8, 20

# How each chart reads: its unit, a fixed top for percentages, a scale for values stored as fractions,
# and the check whose `limit` is the threshold drawn (a service's slow_ms sits on service.latency).
UNIT = {"cpu": "%", "memory": "%", "disk": "%", "ping_loss": "%", "ping_rtt": "ms", "db": "ms", "service_latency": "ms"}
YMAX = {"cpu": 100.0, "memory": 100.0, "disk": 100.0, "ping_loss": 100.0}
SCALE = {"ping_loss": 100.0}  # packet loss is stored as a fraction 0–1
LIMIT_CHECK = {"service_latency": "service.latency"}
# Checks whose subject is an internal word (host.cpu/cpu): the legend names the check instead.
NAMED_BY_CHECK = {"host.cpu", "host.memory"}
CHECK_TEXT: dict[str, Text] = {
    "host.cpu": Text("CPU 使用率", "CPU"),
    "host.memory": Text("内存使用率", "Memory"),
    "host.disk": Text("磁盘使用率", "Disk"),
    "ping.reachable": Text("丢包率", "Packet loss"),
    "rtt:ping.reachable": Text("往返时延", "Round trip"),
    "db.connect": Text("数据库登录耗时", "Database login time"),
    "service.answer": Text("响应时间", "Response time"),
}


@dataclass(frozen=True)
class Line:
    name: str  # the legend: the target's name, else its address, else the check's name
    color: str
    points: str  # "x,y x,y …" for <polyline points=…>
    count: int
    last: float
    detail: str = ""  # what the legend's tooltip adds: the check, and the address behind a name

    @property
    def last_text(self) -> str:
        return number(self.last)


@dataclass(frozen=True)
class Threshold:
    value: float  # in the chart's unit
    y: float | None  # pixel row, None when above the chart's top
    label: str


@dataclass(frozen=True)
class Chart:
    lines: tuple[Line, ...]
    ymax: float
    yticks: tuple[tuple[float, str], ...]  # (y pixel, label)
    xticks: tuple[tuple[float, str, str], ...]  # (x pixel, label, ISO time for the browser's local clock)
    width: int = W
    height: int = H
    thresholds: tuple[Threshold, ...] = ()
    unit: str = ""
    data: str = "{}"  # JSON for app.js: the time axis and each series' points (hover, zoom)
    tick_format: str = "hm"  # how the browser writes tick times: hm (HH:MM), mdhm (MM-DD HH:MM), md


def number(v: float) -> str:
    """Three significant digits, never an exponent: 43.233 → 43.2, 1234.5 → 1230, 0.9431 → 0.943."""
    return f"{float(f'{v:.3g}'):g}" if abs(v) < 1e6 else f"{v:.0f}"


def _nice(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if v <= step:
            return float(step)
    return float(int(v) + 1)


def tick_format(seconds: float) -> str:
    hours = seconds / 3600
    return "hm" if hours <= 36 else ("mdhm" if hours <= 24 * 10 else "md")


def _tick_label(at: datetime, fmt: str) -> str:
    return at.strftime({"hm": "%H:%M", "mdhm": "%m-%d %H:%M", "md": "%m-%d"}[fmt])


def line_chart(
    series: Mapping[str, list[tuple[datetime, float]]],
    since: datetime,
    until: datetime,
    ymax: float | None = None,
    label: str = "",
    names: Mapping[str, tuple[str, str]] | None = None,
    limits: list[tuple[float, str]] | None = None,
    unit: str = "",
) -> Chart:
    """Each series a polyline over [since, until]; y from 0 to ymax (default: a round number over the peak).

    `names`: series → (legend, tooltip detail); `limits`: (value, label) thresholds drawn as dashed lines.
    """
    peak = max((v for pts in series.values() for _, v in pts), default=0.0)
    top = ymax if ymax is not None else _nice(peak * 1.1)
    top = max(top, peak) or 1.0
    span = max((until - since).total_seconds(), 1.0)
    iw, ih = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(at: datetime) -> float:
        return PAD_L + iw * min(max((at - since).total_seconds() / span, 0.0), 1.0)

    def y(v: float) -> float:
        return PAD_T + ih * (1 - min(max(v / top, 0.0), 1.0))

    lines, hover = [], []
    t0, sx, sy = since.timestamp(), iw / span, ih / top
    for i, (key, pts) in enumerate(sorted(series.items())):
        if not pts:
            continue
        coords, offsets = [], []  # offsets: seconds after `since`, for the hover (short)
        for at, v in pts:  # x(at), y(v) inlined: a month of 50 series is 30,000 points
            dt = at.timestamp() - t0
            offsets.append(round(dt))
            px = PAD_L + (0.0 if dt < 0 else iw if dt > span else dt * sx)
            py = PAD_T + ih - (0.0 if v < 0 else ih if v > top else v * sy)
            coords.append(f"{px:.1f},{py:.1f}")
        name, detail = (names or {}).get(key) or (key.removeprefix("rtt:") + label, "")
        color = COLORS[i % len(COLORS)]
        lines.append(Line(name, color, " ".join(coords), len(pts), pts[-1][1], detail))
        hover.append({"n": name, "c": color, "t": offsets, "v": [round(v, 3) for _, v in pts]})
    thresholds = tuple(
        Threshold(value, y(value) if value <= top else None, text) for value, text in sorted(set(limits or []))
    )
    yticks = tuple((y(top * f), f"{top * f:g}") for f in (0, 0.5, 1))
    fmt = tick_format(span)
    xticks = []
    for k in range(5):
        at = since + (until - since) * (k / 4)
        xticks.append((x(at), _tick_label(at, fmt), at.isoformat()))
    data = {
        "since": int(since.timestamp() * 1000),
        "until": int(until.timestamp() * 1000),
        "left": PAD_L,
        "right": W - PAD_R,
        "width": W,
        "unit": unit,
        "series": hover,
    }
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Chart(tuple(lines), top, yticks, tuple(xticks), W, H, thresholds, unit, text, fmt)


def _observed(snapshot: Mapping[str, Any] | None) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The latest snapshot's rows by (check, subject): their names and thresholds."""
    rows = (snapshot or {}).get("observations") or []
    return {
        (r["check"], str(r.get("subject"))): r for r in rows if isinstance(r, dict) and isinstance(r.get("check"), str)
    }


def legend(key: str, observed: Mapping[tuple[str, str], Mapping[str, Any]], lang: str) -> tuple[str, str]:
    """(legend, tooltip detail) of a stored series: the target's name, else its address, in the user's words."""
    rtt = key.startswith("rtt:")
    check, _, subject = key.removeprefix("rtt:").partition("/")
    what = CHECK_TEXT.get(("rtt:" if rtt else "") + check)
    said = what.get(lang) if what else check
    if check in NAMED_BY_CHECK:
        return said, said
    name = (observed.get((check, subject)) or {}).get("name")
    if isinstance(name, str) and name.strip() and name != subject:
        return name, f"{said} · {subject}"
    return subject, said


def host_charts(
    history: Mapping[str, Mapping[str, list[tuple[datetime, float]]]],
    span: TimeRange,
    snapshot: Mapping[str, Any] | None,
    lang: str,
) -> tuple[TimeRange, dict[str, Chart]]:
    """The host page's charts: legends from the latest snapshot's names, thresholds from its limits.

    The range drawn is `span`, or, when the user chose none, the default fitted to the history there is.
    """
    span = span.fitted(min((pts[0][0] for series in history.values() for pts in series.values() if pts), default=None))
    observed = _observed(snapshot)
    out = {}
    for chart, series in history.items():
        if not series:
            continue
        scale = SCALE.get(chart, 1.0)
        scaled = {k: [(at, v * scale) for at, v in pts] for k, pts in series.items()} if scale != 1 else series
        names = {k: legend(k, observed, lang) for k in series}
        limits = []
        for key in series:
            check, _, subject = key.removeprefix("rtt:").partition("/")
            row = observed.get((LIMIT_CHECK.get(chart, check), subject)) or {}
            limit = row.get("limit")
            if isinstance(limit, (int, float)) and not isinstance(limit, bool) and not key.startswith("rtt:"):
                value = round(limit * scale, 3)
                limits.append((value, f"{i18n.t('threshold', lang)} {value:g}{UNIT.get(chart, '')}"))
        out[chart] = line_chart(
            scaled, span.since, span.until, YMAX.get(chart), names=names, limits=limits, unit=UNIT.get(chart, "")
        )
    return span, out
