"""What an agent sends the server: incident events and health heartbeats (the wire schema).

Both sides validate against these models, so a report the agent can build is a report the
server accepts, and a malformed one is refused with the field that is wrong.
"""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from hisguard.plan import BusinessFunction, Scope, Severity, Trigger

API_PREFIX = "/api/v1"
MAX_BATCH = 500

def visible(v: str) -> str:
    """Names and keys people read: no control characters, not blank."""
    if not v.strip() or any(unicodedata.category(c) == "Cc" for c in v):
        raise ValueError("must be visible text (not blank, no control characters)")
    return v


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(visible)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware_time(v: datetime) -> datetime:
    """A time with a zone, within what every backend stores (1970–9998 in UTC)."""
    if v.tzinfo is None:
        raise ValueError("needs a time zone (e.g. 2026-01-01T08:00:00+08:00)")
    try:
        utc = v.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("out of range (years 1970–9998)") from None
    if not 1970 <= utc.year <= 9998:
        raise ValueError("out of range (years 1970–9998)")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class IncidentEvent(_Strict):
    """An incident opening (or re-detected) or clearing on the agent's side, under a stable key."""

    type: Literal["incident"] = "incident"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per event; the server stores each id once")
    key: Annotated[str, Field(min_length=1, max_length=400), AfterValidator(visible)] = Field(
        description="Stable identity of the fault: re-detection reuses it"
    )
    state: Literal["open", "resolved"]
    trigger: Trigger
    severity: Severity
    scope: Scope
    host: Name
    department: Annotated[str, Field(max_length=200)] | None = None
    departments: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=200)
    functions: list[BusinessFunction] = Field(default_factory=list)
    title_zh: Annotated[str, Field(min_length=1, max_length=500)]
    title_en: Annotated[str, Field(min_length=1, max_length=500)]
    observed_at: datetime
    evidence: dict[str, Any] = Field(default_factory=dict)
    drill: bool = Field(False, description="A simulated incident of a drill (2.8): real workflow, marked, not counted")

    @field_validator("observed_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return aware_time(v)


class Heartbeat(_Strict):
    """The agent is alive; a compact health snapshot of what it last observed."""

    type: Literal["heartbeat"] = "heartbeat"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    observed_at: datetime
    interval_s: Annotated[float, Field(gt=0, le=86400)]
    department: Annotated[str, Field(max_length=200)] | None = None
    hospital_critical: bool = False
    snapshot: dict[str, Any] = Field(default_factory=dict)

    @field_validator("observed_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return aware_time(v)


Item = Annotated[IncidentEvent | Heartbeat, Field(discriminator="type")]


class ReportBatch(_Strict):
    """One POST from an agent: a batch of items, oldest first."""

    agent: Name
    version: Annotated[str, Field(max_length=50)]
    items: list[Item] = Field(min_length=1, max_length=MAX_BATCH)


class BatchAccepted(BaseModel):
    """The server stored (or had already stored) every item it names."""

    stored: list[uuid.UUID]
    duplicates: int = 0
