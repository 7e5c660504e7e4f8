"""POST /api/v1/reports: agents deliver batches of incident events and heartbeats.

A 200 means every item named is committed; anything else means the agent keeps the batch.

Every agent calls this every heartbeat, so it is served by a small ASGI lane of its own
(`ReportLane`, inside the security edge: size and rate limits and headers still apply) rather than
through the router and dependency machinery, and the token is checked by the group-commit writer
together with everyone else's (server/domain/intake.py): no thread-pool trip and no query of its
own per request. A body that fails validation is answered only after the token is checked, so a
stranger learns nothing about the schema (401/403 before 422).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from pydantic_core import to_json
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from hisguard.report import API_PREFIX, BatchAccepted, ReportBatch
from hisguard.server.domain.intake import Intake, Refused
from hisguard.server.domain.tokens import Principal, authenticate
from hisguard.server.storage.db import Database

PATH = f"{API_PREFIX}/reports"
RETRY = ((b"retry-after", b"5"),)
BEARER = ((b"www-authenticate", b"Bearer"),)

Reply = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]


def _detail(status: int, detail: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    return status, to_json({"detail": detail}, fallback=str), headers


def _authenticate(db: Database, token: str) -> Principal | None:
    with db.session() as s:
        return authenticate(s, token)


async def receive_reports(state: State, authorization: str, body: bytes) -> Reply:
    """The whole exchange: bearer token and body in, status, JSON and headers out."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _detail(401, "missing bearer token", BEARER)
    try:
        batch = ReportBatch.model_validate_json(body)
    except ValidationError as exc:
        try:
            who = await run_in_threadpool(_authenticate, state.db, token)
        except DBAPIError:
            return _detail(503, "storage unavailable; retry later", RETRY)
        if who is None:
            return _detail(401, "unknown or revoked token", BEARER)
        if who.kind != "agent":
            return _detail(403, "this endpoint needs an agent token")
        return _detail(422, [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False)])
    intake: Intake = state.intake
    try:
        accepted = await intake.submit(token, batch)
    except Refused as exc:
        headers = BEARER if exc.status == 401 else RETRY if exc.status == 503 else ()
        return _detail(exc.status, exc.detail, headers)
    return 200, accepted.model_dump_json().encode(), ()


class ReportLane:
    """Serves PATH itself; everything else goes on to the application."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            status, data, headers = _detail(405, "Method Not Allowed", ((b"allow", b"POST"),))
        else:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            status, data, headers = await receive_reports(self.state, authorization.decode("latin-1"), b"".join(chunks))
        base = ((b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": [*base, *headers]})
        await send({"type": "http.response.body", "body": data})


def install(app: FastAPI) -> None:
    """Serve the lane (call before the security edge is installed, so the edge wraps it) and document it."""
    app.add_middleware(ReportLane, state=app.state)
    _document(app)


def _document(app: FastAPI) -> None:
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        if PATH in schema.get("paths", {}):
            return schema
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = ReportBatch.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in body.pop("$defs", {}).items():
            components.setdefault(name, nested)
        components["ReportBatch"] = body
        components["BatchAccepted"] = BatchAccepted.model_json_schema(mode="serialization")
        components.setdefault("HTTPValidationError", _VALIDATION_ERROR)
        components.setdefault("ValidationError", _VALIDATION_ITEM)
        schema["components"].setdefault("securitySchemes", {}).setdefault(
            "HTTPBearer", {"type": "http", "scheme": "bearer", "description": "Agent or engineer token"}
        )

        def error(text: str) -> dict[str, Any]:
            return {"description": text, "content": {"application/json": {"schema": _ERROR}}}

        schema.setdefault("paths", {})[PATH] = {
            "post": {
                "tags": ["agents"],
                "summary": "Deliver a batch of reports (idempotent)",
                "description": "A 200 means every item named is stored; anything else: keep the batch and retry.",
                "operationId": "post_reports",
                "security": [{"HTTPBearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReportBatch"}}},
                },
                "responses": {
                    "200": {
                        "description": "Stored (or stored before)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchAccepted"}}},
                    },
                    "401": error("Missing, unknown or revoked token"),
                    "403": error("Not an agent token, or the batch names another agent"),
                    "413": error("Body over the size limit"),
                    "422": {
                        "description": "The batch does not match the schema; nothing was stored",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
                        },
                    },
                    "429": error("Too many requests for this token; see Retry-After"),
                    "503": error("Storage unavailable or busy: nothing was stored, keep the batch and retry"),
                },
            }
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
_VALIDATION_ITEM = {
    "type": "object",
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
    "required": ["loc", "msg", "type"],
}
_VALIDATION_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}},
}
