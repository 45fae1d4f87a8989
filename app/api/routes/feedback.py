"""``POST /v1/feedback``: a person's correction of a routing decision, stored linked to it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from app.api.deps import DbSession, DecisionsDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import IDEMPOTENCY_KEY, ErrorResponse, FeedbackRequest, FeedbackResponse
from app.api.security import FeedbackClient
from app.decisions import Correction

router = APIRouter(prefix="/v1", tags=["audit"])


@router.post(
    "/feedback",
    status_code=201,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorResponse, "description": "No decision with this request id"},
        409: {
            "model": ErrorResponse,
            "description": "The correction does not fit its decision (feedback_conflict: a keyword outside the "
            "decision's text, or overlapping keywords), or the Idempotency-Key came with another request "
            "(idempotency_key_reused)",
        },
    },
)
def post_feedback(
    body: FeedbackRequest,
    client: FeedbackClient,
    session: DbSession,
    decisions: DecisionsDep,
    idempotency_key: Annotated[str | None, Header(**IDEMPOTENCY_KEY)] = None,
) -> FeedbackResponse:
    """Store a reviewer's correction of a decision (no corrected field at all confirms the whole decision)."""
    correction = Correction(
        reviewer=body.reviewer,
        department=body.department,
        sentiment=body.sentiment,
        severity=body.severity,
        keywords=None if body.keywords is None else [keyword.model_dump() for keyword in body.keywords],
    )
    feedback = decisions.record_feedback(
        session, request_id=body.request_id, client=client, correction=correction, idempotency_key=idempotency_key
    )
    return FeedbackResponse.model_validate(feedback)
