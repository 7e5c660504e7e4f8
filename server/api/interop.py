"""POST /api/v1/interop/{alertmanager,zabbix}: alerts from Prometheus Alertmanager and Zabbix webhooks.

Authenticated like an agent: the bearer token made for the source's name (its site comes with
it), and `[server.interop.NAME]` in the server settings says how its alerts map to the plan.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from hisguard.server.api.deps import database, require
from hisguard.server.domain import interop
from hisguard.server.domain.tokens import Principal
from hisguard.server.settings import InteropSource
from hisguard.server.storage.db import Database

router = APIRouter(tags=["interop"])


def _source(request: Request, who: Principal, kind: str) -> InteropSource:
    source = request.app.state.settings.interop.get(who.name)
    if source is None:
        raise HTTPException(403, f"no [server.interop.{who.name}] section: this token is not an alert source")
    if source.kind != kind:
        raise HTTPException(403, f"source {who.name} is configured as {source.kind}, not {kind}")
    return source


def _parse(model: type[interop._Peer], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None


def _store(db: Database, who: Principal, source: InteropSource, alerts: list[interop.Alert]) -> dict[str, Any]:
    assert who.site is not None
    with db.session() as s:
        out = interop.apply_alerts(s, who.site, who.agent_id, who.name, source, alerts)
    return {"opened": out.opened, "resolved": out.resolved, "ignored": out.ignored}


@router.post("/interop/alertmanager", summary="Prometheus Alertmanager webhook (payload version 4)")
async def alertmanager(
    request: Request, who: Principal = Depends(require("agent")), db: Database = Depends(database)
) -> dict[str, Any]:
    source = _source(request, who, "alertmanager")
    hook = _parse(interop.AmWebhook, await _json(request))
    return await run_in_threadpool(_store, db, who, source, interop.alerts_from_alertmanager(who.name, hook))


@router.post("/interop/zabbix", summary="Zabbix webhook media type")
async def zabbix(
    request: Request, who: Principal = Depends(require("agent")), db: Database = Depends(database)
) -> dict[str, Any]:
    source = _source(request, who, "zabbix")
    event = _parse(interop.ZabbixEvent, await _json(request))
    return await run_in_threadpool(_store, db, who, source, interop.alerts_from_zabbix(who.name, event))


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise HTTPException(422, "body is not JSON") from None
