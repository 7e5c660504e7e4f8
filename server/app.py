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
from hisguard.server.api import incidents, interop, metrics, reports
from hisguard.server.domain.ingest import raise_silent_agents
from hisguard.server.settings import ServerSettings
from hisguard.server.storage.db import Database

log = logging.getLogger("hisguard.server")


async def _watchdog(app: FastAPI) -> None:
    settings: ServerSettings = app.state.settings
    db: Database = app.state.db

    def check() -> list[int]:
        with db.session() as s:
            return raise_silent_agents(s, utcnow(), settings.silence_heartbeats)

    while True:
        await asyncio.sleep(settings.watchdog_interval)
        try:
            opened = await run_in_threadpool(check)
            if opened:
                log.warning("agents fell silent: incidents %s", opened)
        except Exception:
            log.exception("silence check failed")


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db.migrate()
        task = asyncio.create_task(_watchdog(app))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        app.state.db.dispose()

    app = FastAPI(
        title="hisguard server",
        version=__version__,
        description="Receives hisguard agents' reports and runs the HIS emergency plan (应急预案).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = Database(settings.db_url)
    app.include_router(reports.router, prefix=API_PREFIX)
    app.include_router(incidents.router, prefix=API_PREFIX)
    app.include_router(metrics.router)  # GET /metrics (Prometheus)
    app.include_router(interop.router, prefix=API_PREFIX)  # Alertmanager / Zabbix webhooks

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
