"""``GET /v1/audit`` and ``GET /v1/audit/{request_id}``: routing decisions with their feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.deps import DbSession
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import (
    LABEL_ID,
    REQUEST_ID,
    AuditKeyword,
    AuditPage,
    AuditRecord,
    ErrorResponse,
    FeedbackResponse,
    UtcTime,
)
from app.api.security import AuditClient
from app.audit.database import audit_database_errors
from app.audit.models import Decision
from app.audit.repository import get_decision, list_decisions

router = APIRouter(prefix="/v1", tags=["audit"])

RequestId = Annotated[str, Path(pattern=REQUEST_ID, description="The request id of the decision.")]


def audit_record(decision: Decision) -> AuditRecord:
    """The API view of an audit row (keyword spans get their text from the stored text)."""
    text = decision.text
    return AuditRecord(
        request_id=decision.id,
        created_at=decision.created_at,
        client=decision.client,
        case_id=decision.case_id,
        model_version=decision.model_version,
        artifact_sha256=decision.artifact_sha256,
        department=decision.department,
        department_score=decision.department_score,
        sentiment=decision.sentiment,
        sentiment_score=decision.sentiment_score,
        severity=decision.severity,
        severity_score=decision.severity_score,
        keywords=[
            AuditKeyword(**keyword, text=None if text is None else text[keyword["start"] : keyword["end"]])
            for keyword in decision.keywords
        ],
        needs_review=decision.needs_review,
        routed_to=decision.routed_to,
        latency_ms=decision.latency_ms,
        text_storage=decision.text_storage,
        text=text,
        text_sha256=decision.text_sha256,
        text_purged_at=decision.text_purged_at,
        metadata=decision.request_metadata,
        feedback=[FeedbackResponse.model_validate(feedback) for feedback in decision.feedback],
    )


@router.get("/audit", responses=ERROR_RESPONSES)
def list_audit(
    _client: AuditClient,
    session: DbSession,
    since: Annotated[UtcTime | None, Query(description="Decisions made at or after this time (ISO 8601).")] = None,
    until: Annotated[UtcTime | None, Query(description="Decisions made before this time (ISO 8601).")] = None,
    department: Annotated[str | None, Query(pattern=LABEL_ID, description="The department the model chose.")] = None,
    needs_review: Annotated[bool | None, Query(description="Only decisions that needed review, or not.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Decisions per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31, description="Decisions to skip (newest first).")] = 0,
) -> AuditPage:
    """Decisions filtered by time range, department and needs_review, newest first, with the total count."""
    with audit_database_errors():
        decisions, total = list_decisions(
            session,
            since=since,
            until=until,
            department=department,
            needs_review=needs_review,
            limit=limit,
            offset=offset,
        )
        items = [audit_record(decision) for decision in decisions]
    return AuditPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/audit/{request_id}",
    responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "No decision with this request id"}},
)
def get_audit(request_id: RequestId, _client: AuditClient, session: DbSession) -> AuditRecord:
    """One decision with every feedback it received."""
    with audit_database_errors():
        return audit_record(get_decision(session, request_id=request_id))
