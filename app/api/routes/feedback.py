"""``POST /v1/feedback``: a person's correction of a routing decision, stored linked to it."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from app.api.deps import ClassifierDep, DbSession, FeedbackClient
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import ErrorResponse, FeedbackRequest, FeedbackResponse
from app.artifact import TASKS
from app.audit.database import audit_database_errors
from app.audit.repository import add_feedback

router = APIRouter(prefix="/v1", tags=["audit"])


@router.post(
    "/feedback",
    status_code=201,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "No decision with this request id"}},
)
def post_feedback(
    body: FeedbackRequest, client: FeedbackClient, session: DbSession, classifier: ClassifierDep
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
        )
        session.commit()
    return FeedbackResponse.model_validate(feedback)
