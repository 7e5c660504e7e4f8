"""N-of-M confirmation: a condition fails after N bad rounds within the last M, clears after K good ones.

A condition half-way — its latest round bad but not yet confirmed failed, or good while still
failed — is *unsettled*: the scheduler runs a confirming round soon (the job's `confirm_after`)
rather than a full interval later, so confirmation costs seconds, not intervals.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hisguard.checks.base import Observation, ProbeConfig

CondKey = tuple[str, str, str]  # (job, check, subject)


@dataclass
class _State:
    recent: deque[bool]
    failing: bool = False
    good_streak: int = 0
    last: Observation | None = None


@dataclass
class Debouncer:
    states: dict[CondKey, _State] = field(default_factory=dict)

    def update(self, job: str, cfg: ProbeConfig, obs: Observation) -> bool:
        """Record one observation; True if its condition is now unsettled (a confirming round would decide)."""
        if obs.ok is None:
            return False
        key = (job, obs.check, obs.subject)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = _State(deque(maxlen=cfg.fail_window))
        st.last = obs
        st.recent.append(not obs.ok)
        if obs.ok:
            st.good_streak += 1
            if st.failing and st.good_streak >= cfg.clear_after:
                st.failing = False
                st.recent.clear()
        else:
            st.good_streak = 0
            if not st.failing and sum(st.recent) >= cfg.fail_after:
                st.failing = True
        return st.failing == obs.ok

    def assume_failing(self, key: CondKey, cfg: ProbeConfig) -> None:
        """After a restart, a condition the agent had reported stays failed until it is seen healthy."""
        st = self.states.setdefault(key, _State(deque(maxlen=cfg.fail_window)))
        st.failing = True

    def failing(self) -> list[tuple[str, Observation]]:
        return [(k[0], st.last) for k, st in self.states.items() if st.failing and st.last is not None]

    def is_failing(self, key: CondKey) -> bool:
        st = self.states.get(key)
        return bool(st and st.failing)

    def forget_job(self, job: str) -> None:
        for key in [k for k in self.states if k[0] == job]:
            del self.states[key]
