"""After and around a case: on-site dispatch and arrival (2.9), the review and its exports (2.10)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from hisguard.server.api.deps import database
from hisguard.server.api.roles import PEOPLE, STAFF, person, sees_site
from hisguard.server.domain import cases, clocks, dispatch, review
from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Case

router = APIRouter(tags=["dispatch & review"])
Long = Annotated[str, Field(max_length=20000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DispatchBody(_Body):
    engineer: Annotated[str, Field(min_length=1, max_length=200)]


class ArrivalBody(_Body):
    dispatch_id: int | None = None


class ReviewBody(_Body):
    cause: Long | None = None
    prevention: Long | None = None
    corrective_actions: Long | None = None
    preventive_actions: Long | None = None
    accountability: Long | None = None


def _case(s: Session, who: Principal, case_id: int) -> Case:
    case = s.get(Case, case_id)
    if case is None or not sees_site(who, case.site):
        raise HTTPException(404, "no such case")
    return case


def _dispatch_view(request: Request, s: Session, case: Case) -> dict[str, Any]:
    now = clocks.now()
    site = request.app.state.settings.site(case.site)
    return {
        "case_id": case.id,
        "city": site.city,
        "vendor_city": request.app.state.settings.vendor_city,
        "location": site.location,
        "advice": dispatch.advice_json(dispatch.advice_for(request.app.state.settings, case)),
        "dispatches": [dispatch.dispatch_json(d, now) for d in dispatch.dispatches_of(s, case.id)],
    }


@router.get("/cases/{case_id}/dispatch", summary="Travel advice for the case, dispatches and arrivals vs deadline")
def get_dispatch(
    case_id: int, request: Request, who: Principal = Depends(person(*PEOPLE)), db: Database = Depends(database)
) -> dict[str, Any]:
    with db.session() as s:
        return _dispatch_view(request, s, _case(s, who, case_id))


@router.post("/cases/{case_id}/dispatch", status_code=201, summary="Send an engineer on site (deadline per 2.9)")
def post_dispatch(
    case_id: int,
    body: DispatchBody,
    request: Request,
    who: Principal = Depends(person(*STAFF)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    try:
        with db.session() as s:
            case = _case(s, who, case_id)
            dispatch.dispatch(s, request.app.state.settings, case, who, body.engineer, clocks.now())
            return _dispatch_view(request, s, case)
    except cases.CaseError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.post("/cases/{case_id}/arrival", summary="Record the dispatched engineer's arrival on site")
def post_arrival(
    case_id: int,
    request: Request,
    body: ArrivalBody | None = None,
    who: Principal = Depends(person(*PEOPLE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    try:
        with db.session() as s:
            case = _case(s, who, case_id)
            dispatch.arrived(s, case, who, body.dispatch_id if body else None, clocks.now())
            return _dispatch_view(request, s, case)
    except cases.CaseError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/cases/{case_id}/review", summary="The review: automatic timeline and the investigation's fields")
def get_review(
    case_id: int, who: Principal = Depends(person(*PEOPLE)), db: Database = Depends(database)
) -> dict[str, Any]:
    with db.session() as s:
        return review.review_json(s, _case(s, who, case_id))


@router.put(
    "/cases/{case_id}/review", summary="Fill in cause, prevention, corrective/preventive actions, accountability"
)
def put_review(
    case_id: int, body: ReviewBody, who: Principal = Depends(person(*STAFF)), db: Database = Depends(database)
) -> dict[str, Any]:
    values = {k: v for k, v in body.model_dump().items() if v is not None}
    try:
        with db.session() as s:
            case = _case(s, who, case_id)
            review.save(s, case, who, values, clocks.now())
            s.flush()
            return review.review_json(s, case)
    except review.ReviewError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/cases/{case_id}/review.md", response_class=PlainTextResponse, summary="The review as Markdown")
def review_markdown(
    case_id: int, who: Principal = Depends(person(*PEOPLE)), db: Database = Depends(database)
) -> PlainTextResponse:
    with db.session() as s:
        text = review.markdown(s, _case(s, who, case_id))
    return PlainTextResponse(
        text,
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="review-{case_id}.md"'},
    )


@router.get("/cases/{case_id}/review.pdf", summary="The review as PDF (Chinese font embedded)")
def review_pdf(case_id: int, who: Principal = Depends(person(*PEOPLE)), db: Database = Depends(database)) -> Response:
    try:
        with db.session() as s:
            data = review.pdf(s, _case(s, who, case_id))
    except review.ReviewError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return Response(
        data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="review-{case_id}.pdf"'},
    )
