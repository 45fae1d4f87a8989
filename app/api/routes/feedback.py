"""``POST /v1/feedback``: a person's correction of a routing decision, stored linked to it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header

from app.api.deps import ClassifierDep, DbSession, FeedbackClient
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import IDEMPOTENCY_KEY, ErrorResponse, FeedbackRequest, FeedbackResponse
from app.artifact import TASKS
from app.audit.database import audit_database_errors
from app.audit.repository import add_feedback

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
    classifier: ClassifierDep,
    idempotency_key: Annotated[str | None, Header(**IDEMPOTENCY_KEY)] = None,
) -> FeedbackResponse:
    """Store a reviewer's correction of a decision (no corrected field at all confirms the whole decision)."""
    manifest = classifier.manifest
    with audit_database_errors():
        feedback = add_feedback(
            session,
            request_id=body.request_id,
            client=client,
            created_at=datetime.now(UTC),
            reviewer=body.reviewer,
            department=body.department,
            sentiment=body.sentiment,
            severity=body.severity,
            keywords=None if body.keywords is None else [keyword.model_dump() for keyword in body.keywords],
            allowed_labels={task: manifest.tasks[task].label_ids for task in TASKS},
            idempotency_key=idempotency_key,
        )
        session.commit()
    return FeedbackResponse.model_validate(feedback)
