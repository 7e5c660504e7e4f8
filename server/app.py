"""The FastAPI application: API routers, schema migration on start, the silent-agent watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from hisguard import __version__
from hisguard.report import API_PREFIX, utcnow
from hisguard.server.api import cases as cases_api
from hisguard.server.api import drills as drills_api
from hisguard.server.api import incidents, interop, metrics, ops, reports
from hisguard.server.api import reviews as reviews_api
from hisguard.server.domain import cases, clocks, history
from hisguard.server.domain.clocks import Clock, ClockRunner
from hisguard.server.domain.ingest import raise_silent_agents
from hisguard.server.domain.intake import Intake
from hisguard.server.notify.dispatcher import Dispatcher
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.db import Database

log = logging.getLogger("hisguard.server")
SHUTDOWN_S = 10.0


async def _watchdog(app: FastAPI) -> None:
    settings: ServerSettings = app.state.settings
    db: Database = app.state.db
    started = utcnow()

    def check() -> list[int]:
        with db.session() as s:
            return raise_silent_agents(s, utcnow(), settings.silence_heartbeats, started)

    while True:
        await asyncio.sleep(settings.watchdog_interval)
        try:
            opened = await run_in_threadpool(check)
            if opened:
                log.warning("agents fell silent: incidents %s", opened)
        except Exception:
            log.exception("silence check failed")


def create_app(settings: ServerSettings | None = None, clock: Clock | None = None) -> FastAPI:
    """The server; `clock` replaces the wall clock of the plan engine (tests move it by hand)."""
    settings = settings or ServerSettings()
    clocks.use(clock or clocks.SystemClock())
    cases.configure(settings)
    cases.check_plan_texts(settings)  # a bad contract plan file stops the start with its name and entry

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db.migrate()
        tasks = [
            asyncio.create_task(_watchdog(app)),
            asyncio.create_task(app.state.clock_runner.run()),
            asyncio.create_task(app.state.dispatcher.run()),
            asyncio.create_task(
                history.run(
                    app.state.db,
                    settings.history_retention_days,
                    settings.history_interval,
                    settings.receipt_retention_days,
                )
            ),
        ]
        yield
        # What agents are waiting on is written first (bounded: a stop must never hang).
        await asyncio.to_thread(app.state.intake.stop, SHUTDOWN_S)
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_S)
        if stuck:
            log.warning("%d background tasks did not stop within %g s", len(stuck), SHUTDOWN_S)
        app.state.db.dispose()

    app = FastAPI(
        title="hisguard server",
        version=__version__,
        description="Receives hisguard agents' reports and runs the HIS emergency plan (应急预案).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    from hisguard.server import security

    reports.install(app)  # agents' reports: a lane of their own, inside the security edge below
    security.install(app, settings.security)  # size and rate limits, security headers, 503 when storage fails
    app.state.db = Database(settings.db_url)
    app.state.intake = Intake(app.state.db, settings.ingest_writers)
    app.state.clock_runner = ClockRunner(app.state.db, cases.on_clock, settings.clock_interval)
    app.state.dispatcher = Dispatcher(app.state.db, settings)
    app.include_router(incidents.router, prefix=API_PREFIX)
    app.include_router(cases_api.router, prefix=API_PREFIX)
    app.include_router(ops.router, prefix=API_PREFIX)
    app.include_router(metrics.router)  # GET /metrics (Prometheus)
    app.include_router(interop.router, prefix=API_PREFIX)  # Alertmanager / Zabbix webhooks
    app.include_router(drills_api.router, prefix=API_PREFIX)  # drills, training schedule, statistics (2.8)
    app.include_router(reviews_api.router, prefix=API_PREFIX)  # on-site dispatch (2.9), reviews and exports (2.10)

    from hisguard.server.web import mount as mount_console

    mount_console(app)  # the engineers' web console (pages, /static, /events)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
