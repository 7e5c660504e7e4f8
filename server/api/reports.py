"""POST /api/v1/reports: agents deliver batches of incident events and heartbeats."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy.exc import IntegrityError, OperationalError

from hisguard.report import BatchAccepted, ReportBatch
from hisguard.server.api.deps import database, require
from hisguard.server.domain.ingest import WrongAgent, apply_batch
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import Database

router = APIRouter(tags=["agents"])
log = logging.getLogger("hisguard.server.ingest")


@router.post("/reports", response_model=BatchAccepted, summary="Deliver a batch of reports (idempotent)")
def post_reports(
    batch: ReportBatch, who: Principal = Depends(require("agent")), db: Database = Depends(database)
) -> BatchAccepted:
    for attempt in range(3):
        try:
            with db.session() as s:
                stored, duplicates, _ = apply_batch(s, who, batch)
            return BatchAccepted(stored=stored, duplicates=duplicates)
        except WrongAgent as exc:
            raise HTTPException(403, str(exc)) from None
        except IntegrityError:
            # Another writer stored some of these at the same moment; the retry sees them as repeats.
            if attempt == 2:
                raise HTTPException(503, "conflicting concurrent write; retry") from None
        except OperationalError as exc:
            log.error("ingest failed, asking the agent to keep its data: %s", exc)
            raise HTTPException(503, "storage unavailable; keep the reports and retry") from None
    raise HTTPException(503, "retry")  # pragma: no cover
