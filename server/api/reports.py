"""POST /api/v1/reports: agents deliver batches of incident events and heartbeats.

A 200 means every item named is committed; anything else means the agent keeps the batch.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy.exc import DBAPIError, IntegrityError

from hisguard.report import BatchAccepted, ReportBatch
from hisguard.server.api.deps import database, require
from hisguard.server.domain.ingest import WrongAgent, apply_batch
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import Database, retryable

router = APIRouter(tags=["agents"])
log = logging.getLogger("hisguard.server.ingest")

ATTEMPTS = 4
UNAVAILABLE = {"Retry-After": "5"}


@router.post(
    "/reports",
    response_model=BatchAccepted,
    summary="Deliver a batch of reports (idempotent)",
    responses={503: {"description": "Storage unavailable: nothing was stored, keep the batch and retry"}},
)
def post_reports(
    batch: ReportBatch, who: Principal = Depends(require("agent")), db: Database = Depends(database)
) -> BatchAccepted:
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
