"""The one shape every probe has: `async def probe(config, ctx) -> list[Observation]`.

A probe reports what it saw; it never decides trigger or severity (the classifier does).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Impact(BaseModel):
    """Where a monitored thing sits in the hospital: which department it serves, or the whole hospital."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    department: str | None = Field(None, description="Department served, e.g. 门诊收费 (outpatient billing)")
    departments: tuple[str, ...] = Field((), description="Several departments served")
    hospital_critical: bool = Field(False, description="Its loss paralyses the whole hospital")

    def all_departments(self) -> list[str]:
        named = [self.department] if self.department else []
        return list(dict.fromkeys([*named, *self.departments]))


@dataclass
class Observation:
    """One thing a probe saw about one subject.

    `ok` is the healthy state of the condition `check` on `subject` (None: a measurement only).
    Conditions are debounced by the agent and classified from the table in agent/classify.py.
    """

    check: str
    subject: str
    ok: bool | None
    impact: Impact = field(default_factory=Impact)
    value: float | None = None
    name: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.subject


class ProbeConfig(BaseModel):
    """Settings every probe job has; a probe's own config extends it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Job name (defaults to the probe type)")
    interval: float = Field(30.0, gt=0, le=86400, description="Seconds between runs")
    timeout: float = Field(10.0, gt=0, description="A run taking longer is a probe failure")
    fail_after: int = Field(1, ge=1, description="Bad rounds (N) within the window before a condition fails")
    fail_window: int = Field(1, ge=1, description="Window of rounds (M) for the N-of-M confirmation")
    clear_after: int = Field(1, ge=1, description="Consecutive good rounds before a failed condition clears")
    confirm_after: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="A round that leaves a condition half-way (failed but unconfirmed, or recovering but not "
        "cleared) runs again after this many seconds instead of a full interval; none: wait for the interval",
    )

    @model_validator(mode="after")
    def _coherent(self) -> ProbeConfig:
        if self.timeout > self.interval:
            raise ValueError(f"timeout ({self.timeout}s) must not exceed interval ({self.interval}s)")
        if self.fail_after > self.fail_window:
            raise ValueError(f"fail_after ({self.fail_after}) must not exceed fail_window ({self.fail_window})")
        return self


C = TypeVar("C", bound=ProbeConfig)


class ProbeError(Exception):
    """A probe could not observe (bad credentials, garbage answer…): reported, never an incident by itself."""


class ProbeBusy(ProbeError):
    """The previous blocking call under this key is still stuck in its thread."""


@dataclass
class ProbeContext:
    """What the agent lends a probe: where it may keep state, and a guarded thread runner."""

    host: str
    state_dir: Path
    impact: Impact = field(default_factory=Impact)
    memory: dict[str, Any] = field(default_factory=dict)
    # Set by the agent: ask for the scheduled probe to run now (e.g. a trap asks for a confirming poll).
    poll_now: Callable[[], None] = lambda: None
    partial: bool = False

    def mark_partial(self) -> None:
        """This round saw only part of what the job watches (e.g. the database did not answer): conditions
        it did not report keep their state instead of being forgotten."""
        self.partial = True

    _busy: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def blocking(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking call in a thread, at most one per key.

        A call that outlives its timeout keeps its thread (threads cannot be killed); a new
        call under the same key is refused while it is stuck, so threads never pile up.
        """
        with self._lock:
            if key in self._busy:
                raise ProbeBusy(f"{key}: the previous call has not returned yet")
            self._busy.add(key)

        def run() -> Any:
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._busy.discard(key)

        return await asyncio.to_thread(run)


ProbeFn = Callable[[C, ProbeContext], Awaitable[list[Observation]]]
Emit = Callable[[list[Observation]], None]
# A probe may also watch continuously (traps, file events): `async def watch(cfg, ctx, emit)` runs for
# the agent's life and hands what it sees to `emit`, which classifies it at once like a round's results.
WatchFn = Callable[[C, ProbeContext, Emit], Awaitable[None]]


@dataclass(frozen=True)
class ProbeSpec(Generic[C]):
    name: str
    config: type[C]
    run: ProbeFn
    watch: WatchFn | None = None
