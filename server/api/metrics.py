"""GET /metrics: the server's state in the Prometheus text format, for the hospital's or vendor's Prometheus.

Read from the database at scrape time, so every server process behind one database reports
the same figures and nothing is lost on restart. Counts only (no patient data, no titles), so
the endpoint needs no token, like any Prometheus exporter; restrict it at the network if wanted.
Rates are Prometheus' job: `rate(hisguard_reports_received_total[5m])`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from hisguard.plan import Severity, Trigger
from hisguard.report import utcnow
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Agent, Case, CaseClock, HealthSample, Incident, PlanInstance, Receipt

router = APIRouter(tags=["ops"])


class StateCollector(Collector):
    """Cases and incidents by trigger and severity, the plan's clocks, agents and ingest counters."""

    def __init__(self, db: Database, silence_heartbeats: int) -> None:
        self.db = db
        self.silence_heartbeats = silence_heartbeats

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        open_by = GaugeMetricFamily(
            "hisguard_incidents_open", "Open incidents by plan trigger and severity", labels=["trigger", "severity"]
        )
        opened = CounterMetricFamily(
            "hisguard_incidents_opened", "Incidents opened since the database was created", labels=["trigger"]
        )
        overdue = GaugeMetricFamily(
            "hisguard_incidents_overdue",
            "Open incidents older than their severity's response deadline (10/30/60 min)",
            labels=["severity"],
        )
        oldest = GaugeMetricFamily(
            "hisguard_incident_oldest_open_seconds", "Age of the oldest open incident", labels=["severity"]
        )
        agents = GaugeMetricFamily("hisguard_agents", "Agents known to the server", labels=["state"])
        received = CounterMetricFamily(
            "hisguard_reports_received", "Report items stored (each item id once)", labels=["type"]
        )
        cases_open = GaugeMetricFamily(
            "hisguard_cases_open",
            "Open cases (the plan's unit of work) by trigger and severity",
            labels=["trigger", "severity"],
        )
        unacked = GaugeMetricFamily(
            "hisguard_cases_unacknowledged", "Open cases nobody has acknowledged yet", labels=["severity"]
        )
        plans = GaugeMetricFamily("hisguard_plans_active", "Emergency plans started and not completed")
        clocks = GaugeMetricFamily(
            "hisguard_clocks_pending",
            "Plan deadlines waiting (response, continuity, written_reply); 'late' ones are past due",
            labels=["kind", "state"],
        )
        with self.db.session() as s:
            case_counts = {
                (t, sev): n
                for t, sev, n in s.execute(
                    select(Case.trigger, Case.severity, func.count())
                    .where(Case.status == "open", Case.drill.is_(False))  # drills are not the hospital's faults
                    .group_by(Case.trigger, Case.severity)
                )
            }
            unacked_counts = dict(
                s.execute(
                    select(Case.severity, func.count())
                    .where(Case.status == "open", Case.acknowledged_at.is_(None), Case.drill.is_(False))
                    .group_by(Case.severity)
                ).all()
            )
            active_plans = s.scalar(select(func.count()).where(PlanInstance.status == "active")) or 0
            pending: dict[tuple[str, str], int] = {}
            for name, due in s.execute(select(CaseClock.name, CaseClock.due_at).where(CaseClock.status == "pending")):
                if due.tzinfo is None:
                    due = due.replace(tzinfo=now.tzinfo)
                key = (name.split(":", 1)[0], "late" if due < now else "waiting")
                pending[key] = pending.get(key, 0) + 1
            counts = {
                (t, sev): n
                for t, sev, n in s.execute(
                    select(Incident.trigger, Incident.severity, func.count())
                    .where(Incident.status == "open")
                    .group_by(Incident.trigger, Incident.severity)
                )
            }
            total = dict(s.execute(select(Incident.trigger, func.count()).group_by(Incident.trigger)).all())
            first_open = dict(
                s.execute(
                    select(Incident.severity, func.min(Incident.opened_at))
                    .where(Incident.status == "open")
                    .group_by(Incident.severity)
                ).all()
            )
            late = {}
            for sev in Severity:
                late[sev] = s.scalar(
                    select(func.count()).where(
                        Incident.status == "open",
                        Incident.severity == sev.value,
                        Incident.opened_at < now - sev.response_within,
                    )
                )
            silent = reporting = never = 0
            for last_seen, interval in s.execute(select(Agent.last_seen, Agent.interval_s)):
                if last_seen is None:
                    never += 1
                elif now - last_seen > timedelta(seconds=(interval or 30.0) * self.silence_heartbeats):
                    silent += 1
                else:
                    reporting += 1
            items = s.scalar(select(func.count()).select_from(Receipt)) or 0
            heartbeats = s.scalar(select(func.count()).select_from(HealthSample)) or 0
        # Every trigger × severity is exported (0 when none), so alerts and dashboards see the series.
        for trig in Trigger:
            for sev in Severity:
                open_by.add_metric([str(int(trig)), sev.value], counts.get((int(trig), sev.value), 0))
            opened.add_metric([str(int(trig))], total.get(int(trig), 0))
            for sev in Severity:
                cases_open.add_metric([str(int(trig)), sev.value], case_counts.get((int(trig), sev.value), 0))
        for sev in Severity:
            unacked.add_metric([sev.value], unacked_counts.get(sev.value, 0))
        plans.add_metric([], active_plans)
        for kind in ("response", "continuity", "written_reply"):
            for state in ("waiting", "late"):
                clocks.add_metric([kind, state], pending.get((kind, state), 0))
        for sev in Severity:
            overdue.add_metric([sev.value], late[sev] or 0)
            started = first_open.get(sev.value)
            if started is not None:
                if started.tzinfo is None:  # SQLite hands aggregates back without the zone
                    started = started.replace(tzinfo=now.tzinfo)
                oldest.add_metric([sev.value], max(0.0, (now - started).total_seconds()))
        agents.add_metric(["reporting"], reporting)
        agents.add_metric(["silent"], silent)
        agents.add_metric(["never_reported"], never)
        received.add_metric(["heartbeat"], heartbeats)
        received.add_metric(["incident"], max(0, items - heartbeats))
        yield from (cases_open, unacked, plans, clocks, open_by, opened, overdue, oldest, agents, received)


def registry_for(request: Request) -> CollectorRegistry:
    state = request.app.state
    reg = getattr(state, "metrics_registry", None)
    if reg is None:
        reg = CollectorRegistry()
        reg.register(StateCollector(state.db, state.settings.silence_heartbeats))
        state.metrics_registry = reg
    return reg


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(registry_for(request)), media_type=CONTENT_TYPE_LATEST)
