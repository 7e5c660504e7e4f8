"""The agent at work: each probe job on its own schedule and timeout, debounced, classified, spooled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from hisguard import __version__
from hisguard.agent.classify import Failing, Incident, classify, functions
from hisguard.agent.config import AgentConfig, ProbeJob
from hisguard.agent.debounce import Debouncer
from hisguard.agent.delivery import Sender
from hisguard.agent.memory import release, settle
from hisguard.agent.store import StateStore
from hisguard.checks.base import Impact, Observation, ProbeContext, ProbeError
from hisguard.report import Heartbeat, IncidentEvent, utcnow

log = logging.getLogger("hisguard.agent")
MAX_SNAPSHOT_ROWS = 2000  # keeps a heartbeat under ~200 KB however much a probe watches


@dataclass
class JobStatus:
    ok: bool | None = None
    error: str | None = None
    duration_ms: float = 0.0
    at: float = 0.0
    runs: int = 0
    failures: int = 0


def _readable(text: str) -> str:
    """Control characters (a device's ifDescr, a file name) would make the server refuse the key."""
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in text)


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.host = cfg.agent.name
        self.store = StateStore(cfg.agent.state_dir / "agent.sqlite3")
        self.debouncer = Debouncer()
        impact = Impact(
            department=cfg.agent.department,
            departments=cfg.agent.departments,
            hospital_critical=cfg.agent.hospital_critical,
        )
        self.contexts = {
            job.name: ProbeContext(host=self.host, state_dir=cfg.agent.state_dir, impact=impact) for job in cfg.jobs
        }
        self.status = {job.name: JobStatus() for job in cfg.jobs}
        self.latest: dict[str, list[Observation]] = {job.name: [] for job in cfg.jobs}
        self.sender: Sender | None = None
        self._watched: dict[str, set[tuple[str, str, str]]] = {}
        self._poll_now = {job.name: asyncio.Event() for job in cfg.jobs}
        for job in cfg.jobs:
            self.contexts[job.name].poll_now = self._poll_now[job.name].set
        jobs = {job.name: job for job in cfg.jobs}
        for rec in self.store.active().values():
            for job_name, check, subject in rec["conditions"]:
                if job_name in jobs:
                    self.debouncer.assume_failing((job_name, check, subject), jobs[job_name].config)

    # -- one round of one probe ---------------------------------------------------------------
    async def run_round(self, job: ProbeJob, confirm: bool = True) -> bool:
        """Run one round of the job; True if it left a condition unsettled (a confirming round is due)."""
        st = self.status[job.name]
        started = time.monotonic()
        ctx = self.contexts[job.name]
        ctx.partial = False
        try:
            obs = await asyncio.wait_for(job.spec.run(job.config, ctx), job.config.timeout)
        except asyncio.TimeoutError:
            self._probe_failed(job, st, f"timed out after {job.config.timeout:g}s", started)
            return False
        except ProbeError as exc:
            self._probe_failed(job, st, str(exc), started)
            return False
        except Exception as exc:  # a probe bug must not stop the agent
            log.exception("probe %s crashed", job.name)
            self._probe_failed(job, st, f"{exc.__class__.__name__}: {exc}", started)
            return False
        st.ok, st.error, st.runs = True, None, st.runs + 1
        st.duration_ms, st.at = (time.monotonic() - started) * 1000, time.time()
        self.latest[job.name] = obs
        cfg = job.config
        if not confirm:
            cfg = cfg.model_copy(update={"fail_after": 1, "fail_window": 1, "clear_after": 1})
        unsettled = False
        for o in obs:
            unsettled |= self.debouncer.update(job.name, cfg, o)
        # Conditions a complete round no longer reports (a removed target) no longer exist; watched ones persist.
        reported = {(job.name, o.check, o.subject) for o in obs} | self._watched.get(job.name, set())
        if not ctx.partial:
            for key in [k for k in self.debouncer.states if k[0] == job.name and k not in reported]:
                del self.debouncer.states[key]
        self.reconcile()
        return unsettled

    def emit(self, job: ProbeJob, obs: list[Observation]) -> None:
        """Observations from a probe's watcher (a trap, a file event): classified at once."""
        watched = self._watched.setdefault(job.name, set())
        for o in obs:
            watched.add((job.name, o.check, o.subject))
            self.debouncer.update(job.name, job.config, o)
        self.reconcile()

    def _probe_failed(self, job: ProbeJob, st: JobStatus, error: str, started: float) -> None:
        st.ok, st.error = False, error
        st.runs, st.failures = st.runs + 1, st.failures + 1
        st.duration_ms, st.at = (time.monotonic() - started) * 1000, time.time()
        log.warning("probe %s failed: %s", job.name, error)

    # -- classification and the set of open incidents ----------------------------------------
    def current_incidents(self) -> list[Incident]:
        return classify(self.host, (Failing(job, obs) for job, obs in self.debouncer.failing()))

    def reconcile(self) -> None:
        """Tell the server what changed between the incidents now and those reported open."""
        desired = {i.key: i for i in self.current_incidents()}
        active = self.store.active()
        changed = False
        for key, inc in desired.items():
            signature = json.dumps(inc.signature(), ensure_ascii=False)
            if key not in active or active[key]["signature"] != signature:
                event = self._event(inc, "open")
                self.store.open_incident(key, signature, [list(c) for c in inc.conditions], event)
                log.warning(
                    "incident open: [T%d %s %s] %s / %s",
                    inc.trigger,
                    inc.severity.value,
                    inc.scope.value,
                    inc.title.zh,
                    inc.title.en,
                )
                changed = True
        for key, rec in active.items():
            if key in desired:
                continue
            if any(self.debouncer.is_failing(tuple(c)) for c in rec["conditions"]):
                continue  # still failed, awaiting a fresh observation after a restart
            event = {**rec["event"], "id": str(uuid.uuid4()), "state": "resolved", "observed_at": utcnow().isoformat()}
            self.store.resolve_incident(key, event)
            log.warning("incident resolved: %s / %s", rec["event"]["title_zh"], rec["event"]["title_en"])
            changed = True
        if changed and self.sender:
            self.sender.wake.set()

    def _event(self, inc: Incident, state: str) -> dict[str, Any]:
        return IncidentEvent(
            key=_readable(inc.key),
            state=state,
            trigger=inc.trigger,
            severity=inc.severity,
            scope=inc.scope,
            host=self.host,
            department=inc.department,
            departments=inc.departments,
            functions=functions(inc),
            title_zh=inc.title.zh,
            title_en=inc.title.en,
            observed_at=utcnow(),
            evidence=inc.evidence,
        ).model_dump(mode="json", exclude={"drill"})  # only drills say so: servers before drills refuse the key

    # -- health snapshot ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        probes = {}
        for job in self.cfg.jobs:
            st = self.status[job.name]
            probes[job.name] = {
                "type": job.spec.name,
                "ok": st.ok,
                "error": st.error,
                "ms": round(st.duration_ms, 1),
                "runs": st.runs,
                "failures": st.failures,
            }
        observations = []
        for job_name, obs in self.latest.items():
            for o in obs:
                row: dict[str, Any] = {
                    "job": job_name,
                    "check": o.check,
                    "subject": o.subject,
                    "ok": o.ok,
                    "value": None if o.value is None else round(o.value, 3),
                }
                if o.name:
                    row["name"] = o.name
                if (rtt := o.detail.get("rtt_avg_ms")) is not None:
                    row["rtt_ms"] = round(rtt, 3)
                if (missing := o.detail.get("not_provided")) is not None:  # what a device cannot be read for
                    row["not_provided"] = missing
                if (outcome := o.detail.get("outcome")) is not None:  # a ping round: answered, lost, refused…
                    row["outcome"] = outcome
                if isinstance(limit := o.detail.get("limit"), (int, float)):  # a threshold the console draws
                    row["limit"] = limit
                observations.append(row)
        snap: dict[str, Any] = {"version": __version__, "probes": probes, "backlog": self.store.backlog()}
        if len(observations) > MAX_SNAPSHOT_ROWS:  # failed conditions first; the rest as room allows
            observations.sort(key=lambda r: r["ok"] is not False)
            snap["truncated"] = len(observations) - MAX_SNAPSHOT_ROWS
            observations = observations[:MAX_SNAPSHOT_ROWS]
        snap["observations"] = observations
        return snap

    def enqueue_heartbeat(self) -> None:
        hb = Heartbeat(
            observed_at=utcnow(),
            interval_s=self.cfg.agent.heartbeat_interval,
            department=self.cfg.agent.department,
            hospital_critical=self.cfg.agent.hospital_critical,
            snapshot=self.snapshot(),
        ).model_dump(mode="json")
        self.store.enqueue(hb)
        if self.sender:
            self.sender.wake.set()

    # -- schedules -----------------------------------------------------------------------------
    async def _job_loop(self, job: ProbeJob) -> None:
        loop = asyncio.get_running_loop()
        interval, confirm_after = job.config.interval, job.config.confirm_after
        next_at = loop.time()
        while True:
            unsettled = await self.run_round(job)
            now = loop.time()
            while next_at <= now:  # the next tick of the cadence (a slow round skips the ticks it missed)
                next_at += interval
            wake = next_at
            if unsettled and confirm_after is not None:  # confirm soon; the cadence itself is unchanged
                wake = min(wake, now + confirm_after)
            poll_now = self._poll_now[job.name]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(poll_now.wait(), wake - now)  # a watcher may ask for a round now
            poll_now.clear()

    async def _watch(self, job: ProbeJob) -> None:
        assert job.spec.watch is not None
        while True:
            try:
                await job.spec.watch(job.config, self.contexts[job.name], lambda obs: self.emit(job, obs))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken watcher is reported and restarted, never fatal
                self.status[job.name].error = f"watcher: {exc.__class__.__name__}: {exc}"
                log.exception("watcher of %s failed; restarting in 5s", job.name)
                await asyncio.sleep(5)

    async def _heartbeat_loop(self) -> None:
        settle()  # start-up is over: its garbage goes back to the system
        while True:
            self.enqueue_heartbeat()
            await asyncio.sleep(self.cfg.agent.heartbeat_interval)
            release()  # what the rounds since the last heartbeat freed

    async def run(self) -> None:
        self.sender = Sender(self.cfg, self.store, self.cfg.token)
        log.info(
            "agent %s started: %d probe jobs, %d reports spooled", self.host, len(self.cfg.jobs), self.store.backlog()
        )
        tasks = [asyncio.create_task(self._job_loop(job), name=f"probe:{job.name}") for job in self.cfg.jobs]
        for job in self.cfg.jobs:
            if job.spec.watch is not None:
                tasks.append(asyncio.create_task(self._watch(job), name=f"watch:{job.name}"))
        tasks.append(asyncio.create_task(self.sender.run(), name="delivery"))
        await asyncio.sleep(1.0)  # let the first rounds finish so the first heartbeat says something
        tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self.sender.aclose()
            self.store.close()

    async def once(self) -> None:
        """Every probe once (a single round counts as confirmed), then one delivery attempt."""
        await asyncio.gather(*(self.run_round(job, confirm=False) for job in self.cfg.jobs))
        self.enqueue_heartbeat()
