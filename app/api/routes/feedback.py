"""``POST /v1/feedback``: a person's correction of a routing decision, stored linked to it."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import DbSession, DecisionsDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import ErrorResponse, FeedbackRequest, FeedbackResponse
from app.api.security import FeedbackClient
from app.decisions import Correction

router = APIRouter(prefix="/v1", tags=["audit"])


@router.post(
    "/feedback",
    status_code=201,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "No decision with this request id"}},
)
def post_feedback(
    body: FeedbackRequest, client: FeedbackClient, session: DbSession, decisions: DecisionsDep
) -> FeedbackResponse:
    """Store a reviewer's correction of a decision (no corrected field at all confirms the whole decision)."""
    correction = Correction(
        reviewer=body.reviewer,
        department=body.department,
        sentiment=body.sentiment,
        severity=body.severity,
        keywords=None if body.keywords is None else [keyword.model_dump() for keyword in body.keywords],
    )
    feedback = decisions.record_feedback(session, request_id=body.request_id, client=client, correction=correction)
    return FeedbackResponse.model_validate(feedback)
