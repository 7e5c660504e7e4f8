"""POST /api/v1/reports: agents deliver batches of incident events and heartbeats.

A 200 means every item named is committed; anything else means the agent keeps the batch.
The hot path: the body is parsed straight from its bytes, and the token is checked by the
group-commit writer together with everyone else's (server/domain/intake.py) — no thread-pool
trip and no query of its own per request. A body that fails validation is answered only after
the token is checked, so a stranger learns nothing about the schema (401/403 before 422).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from hisguard.report import BatchAccepted, ReportBatch
from hisguard.server.domain.intake import Intake, Refused
from hisguard.server.domain.tokens import Principal, authenticate
from hisguard.server.storage.db import Database

router = APIRouter(tags=["agents"])

UNAVAILABLE = {"Retry-After": "5"}
BEARER = {"WWW-Authenticate": "Bearer"}
_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReportBatch"}}},
}


def _authenticate(db: Database, token: str) -> Principal | None:
    with db.session() as s:
        return authenticate(s, token)


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers=BEARER)
    return token.strip()


@router.post(
    "/reports",
    response_model=BatchAccepted,
    summary="Deliver a batch of reports (idempotent)",
    openapi_extra={"requestBody": _BODY},
    responses={
        401: {"description": "Missing, unknown or revoked token"},
        403: {"description": "Not an agent token, or the batch names another agent"},
        422: {"description": "The batch does not match the schema; nothing was stored"},
        503: {"description": "Storage unavailable or busy: nothing was stored, keep the batch and retry"},
    },
)
async def post_reports(request: Request) -> Response:
    token = _bearer(request)
    body = await request.body()
    try:
        batch = ReportBatch.model_validate_json(body)
    except ValidationError as exc:
        who = await run_in_threadpool(_authenticate, request.app.state.db, token)
        if who is None:
            raise HTTPException(401, "unknown or revoked token", headers=BEARER) from None
        if who.kind != "agent":
            raise HTTPException(403, "this endpoint needs an agent token") from None
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)], body=body
        ) from None
    intake: Intake = request.app.state.intake
    try:
        accepted = await intake.submit(token, batch)
    except Refused as exc:
        headers = BEARER if exc.status == 401 else UNAVAILABLE if exc.status == 503 else None
        raise HTTPException(exc.status, exc.detail, headers=headers) from None
    return Response(accepted.model_dump_json(), media_type="application/json")


def document(app: FastAPI) -> None:
    """Put the report body's schema in the OpenAPI document (the route reads the body itself)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "ReportBatch" not in components:
            body = ReportBatch.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, nested in body.pop("$defs", {}).items():
                components.setdefault(name, nested)
            components["ReportBatch"] = body
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
