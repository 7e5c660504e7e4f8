"""The time range a host's charts show: a preset (1 h … 30 d), or from/to (a custom range or a zoom)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

PRESETS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT = "24h"
SHORTEST = timedelta(minutes=1)
LONGEST = timedelta(days=400)


@dataclass(frozen=True)
class TimeRange:
    since: datetime
    until: datetime
    key: str  # a preset's name, or "custom"
    chosen: bool = False  # by the user (else the default, fitted to the history there is)
    error: bool = False  # the user asked for a range that makes no sense: the default is shown instead

    @property
    def span(self) -> timedelta:
        return self.until - self.since

    def fitted(self, oldest: datetime | None) -> TimeRange:
        """Not chosen: the shortest of 1 h, 6 h and 24 h that holds the host's history (new hosts fill the chart)."""
        if self.chosen or oldest is None:
            return self
        for key in ("1h", "6h"):
            if self.until - PRESETS[key] <= oldest:
                return replace(self, since=self.until - PRESETS[key], key=key)
        return self


def parse_time(value: str, tz_offset_min: int = 0) -> datetime:
    """ISO 8601; without a zone, the browser's local time (`tz`: JavaScript's getTimezoneOffset, UTC − local)."""
    at = datetime.fromisoformat(value.strip())
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone(timedelta(minutes=-tz_offset_min)))
    return at.astimezone(timezone.utc)


def from_query(params: Mapping[str, str], now: datetime) -> TimeRange:
    """`?range=7d`, or `?from=…&to=…[&tz=-480]`; anything else is the default with `error` set."""
    default = TimeRange(now - PRESETS[DEFAULT], now, DEFAULT)
    start, end = params.get("from", "").strip(), params.get("to", "").strip()
    if start or end:
        try:
            tz = int(params.get("tz") or 0)
            if not -24 * 60 <= tz <= 24 * 60:
                raise ValueError(tz)
            since = parse_time(start, tz) if start else now - PRESETS[DEFAULT]
            until = parse_time(end, tz) if end else now
        except ValueError:
            return replace(default, error=True)
        if not SHORTEST <= until - since <= LONGEST or until > now + timedelta(days=1):
            return replace(default, error=True)
        return TimeRange(since, until, "custom", chosen=True)
    key = params.get("range", "")
    if key in PRESETS:
        return TimeRange(now - PRESETS[key], now, key, chosen=True)
    return replace(default, error=bool(key))
