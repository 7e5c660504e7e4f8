"""Line charts as plain SVG drawn on the server: no script, no library, readable offline and on a phone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563")
W, H = 600, 160
PAD_L, PAD_R, PAD_T, PAD_B = 40, 8, 8, 20


@dataclass(frozen=True)
class Line:
    name: str
    color: str
    points: str  # "x,y x,y …" for <polyline points=…>
    count: int
    last: float


@dataclass(frozen=True)
class Chart:
    lines: tuple[Line, ...]
    ymax: float
    yticks: tuple[tuple[float, str], ...]  # (y pixel, label)
    xticks: tuple[tuple[float, str, str], ...]  # (x pixel, label, ISO time for the browser's local clock)
    width: int = W
    height: int = H


def _nice(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if v <= step:
            return float(step)
    return float(int(v) + 1)


def line_chart(
    series: dict[str, list[tuple[datetime, float]]],
    since: datetime,
    until: datetime,
    ymax: float | None = None,
    label: str = "",
) -> Chart:
    """Each series a polyline over [since, until]; y from 0 to ymax (default: a round number over the peak)."""
    peak = max((v for pts in series.values() for _, v in pts), default=0.0)
    top = ymax if ymax is not None else _nice(peak * 1.1)
    top = max(top, peak) or 1.0
    span = max((until - since).total_seconds(), 1.0)
    iw, ih = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(at: datetime) -> float:
        return PAD_L + iw * min(max((at - since).total_seconds() / span, 0.0), 1.0)

    def y(v: float) -> float:
        return PAD_T + ih * (1 - min(max(v / top, 0.0), 1.0))

    lines = []
    for i, (name, pts) in enumerate(sorted(series.items())):
        if not pts:
            continue
        coords = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in pts)
        short = name.removeprefix("rtt:")
        lines.append(Line(short + label, COLORS[i % len(COLORS)], coords, len(pts), pts[-1][1]))
    yticks = tuple((y(top * f), f"{top * f:g}") for f in (0, 0.5, 1))
    hours = span / 3600
    xticks = []
    for k in range(5):
        at = since + (until - since) * (k / 4)
        xticks.append((x(at), at.strftime("%H:%M") if hours <= 48 else at.strftime("%m-%d"), at.isoformat()))
    return Chart(tuple(lines), top, yticks, tuple(xticks))
