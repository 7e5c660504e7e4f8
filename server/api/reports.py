"""POST /api/v1/reports: agents deliver batches of incident events and heartbeats.

A 200 means every item named is committed; anything else means the agent keeps the batch.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.concurrency import run_in_threadpool

from hisguard.report import BatchAccepted, ReportBatch
from hisguard.server.domain.ingest import WrongAgent, apply_batch
from hisguard.server.domain.tokens import Principal, authenticate
from hisguard.server.storage.db import Database, retryable

router = APIRouter(tags=["agents"])
log = logging.getLogger("hisguard.server.ingest")

ATTEMPTS = 4
UNAVAILABLE = {"Retry-After": "5"}


_bearer = HTTPBearer(auto_error=False, description="Agent or engineer token")


def _authenticate(db: Database, token: str) -> Principal | None:
    with db.session() as s:
        return authenticate(s, token)


async def agent(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    """The agent token (the hot path: one trip to the thread pool, not one per dependency)."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    who = await run_in_threadpool(_authenticate, request.app.state.db, creds.credentials)
    if who is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if who.kind != "agent":
        raise HTTPException(403, "this endpoint needs an agent token")
    return who


@router.post(
    "/reports",
    response_model=BatchAccepted,
    summary="Deliver a batch of reports (idempotent)",
    responses={503: {"description": "Storage unavailable: nothing was stored, keep the batch and retry"}},
)
async def post_reports(batch: ReportBatch, request: Request, who: Principal = Depends(agent)) -> BatchAccepted:
    return await run_in_threadpool(ingest, request.app.state.db, who, batch)


def ingest(db: Database, who: Principal, batch: ReportBatch) -> BatchAccepted:
    for attempt in range(ATTEMPTS):
        try:
            with db.write_session() as s:
                stored, duplicates, touched = apply_batch(s, who, batch)
            log.debug(
                "agent %s/%s: %d items, %d repeats, incidents %s", who.site, who.name, len(stored), duplicates, touched
            )
            return BatchAccepted(stored=stored, duplicates=duplicates)
        except WrongAgent as exc:
            raise HTTPException(403, str(exc)) from None
        except IntegrityError:
            # Another replica opened the same incident at the same moment; the retry updates it instead.
            log.info("concurrent write on ingest of %s; retrying", who.name)
        except DBAPIError as exc:
            if not retryable(exc):
                log.error("ingest failed, asking agent %s to keep its data: %s", who.name, exc.__class__.__name__)
                log.debug("ingest failure detail", exc_info=True)
                raise HTTPException(503, "storage unavailable; keep the reports and retry", UNAVAILABLE) from None
            log.info("deadlock or serialization failure on ingest of %s; retrying", who.name)
        except TimeoutError:
            log.error("ingest of %s waited too long for the database lock", who.name)
            raise HTTPException(503, "storage busy; keep the reports and retry", UNAVAILABLE) from None
        if attempt == ATTEMPTS - 1:
            break
    raise HTTPException(503, "conflicting concurrent writes; retry", UNAVAILABLE)
