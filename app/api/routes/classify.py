"""``POST /v1/classify`` and ``POST /v1/classify/batch``: routing decisions, each recorded in the audit log."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from app.api.deps import DecisionsDep
from app.api.errors import ERROR_RESPONSES, error_detail, validation_details, validation_message
from app.api.schemas import (
    BatchRequest,
    BatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    DepartmentResult,
    ErrorDetail,
    ErrorResponse,
    KeywordResult,
    ReportItem,
    ScoredLabel,
    SentimentResult,
    SeverityResult,
)
from app.api.security import ClassifyClient
from app.decisions import ALTERNATIVES, ReportInput, RoutingDecision
from app.errors import InvalidInput

router = APIRouter(prefix="/v1", tags=["classification"])


def classification_response(decision: RoutingDecision) -> ClassifyResponse:
    """The API answer for a decision."""
    classification = decision.classification
    prediction = classification.prediction
    department = prediction.department[0]
    return ClassifyResponse(
        request_id=decision.request_id,
        department=DepartmentResult(
            label=department.label,
            name=department.name,
            score=department.score,
            confidence_band=classification.confidence_band,
            alternatives=[
                ScoredLabel(label=other.label, name=other.name, score=other.score)
                for other in prediction.department[1 : 1 + ALTERNATIVES]
            ],
        ),
        routed_to=classification.routed_to,
        needs_review=classification.needs_review,
        sentiment=SentimentResult(label=prediction.sentiment.label, score=prediction.sentiment.score),
        severity=SeverityResult(
            label=prediction.severity.label, level=prediction.severity.index + 1, score=prediction.severity.score
        ),
        keywords=[KeywordResult(**dataclasses.asdict(keyword)) for keyword in prediction.keywords],
        language=classification.language,
        model_version=decision.model_version,
        latency_ms=decision.latency_ms,
    )


def _batch_item(raw: Any) -> ReportInput | ErrorResponse:
    """A batch item as a report, or the validation error that takes its place in the answer."""
    try:
        item = ReportItem.model_validate(raw)
    except ValidationError as exc:
        details = validation_details(exc.errors())
        return ErrorResponse(
            error=ErrorDetail(code="validation_error", message=validation_message(details), details=details)
        )
    return ReportInput(text=item.text, case_id=item.case_id)


def _batch_result(outcome: RoutingDecision | InvalidInput) -> ClassifyResponse | ErrorResponse:
    if isinstance(outcome, InvalidInput):
        return ErrorResponse(error=error_detail(outcome))
    return classification_response(outcome)


@router.post("/classify", responses=ERROR_RESPONSES, summary="Classify one report")
async def classify_report(
    body: ClassifyRequest, request: Request, client: ClassifyClient, decisions: DecisionsDep
) -> ClassifyResponse:
    """Route one citizen report: department and destination, sentiment, severity and keywords."""
    report = ReportInput(text=body.text, case_id=body.case_id, metadata=body.metadata)
    decision = await decisions.decide(
        report, client=client, request_id=request.state.request_id, started_at=request.state.started_at
    )
    return classification_response(decision)


@router.post(
    "/classify/batch", responses=ERROR_RESPONSES, response_model_exclude_none=True, summary="Classify several reports"
)
async def classify_batch(
    body: BatchRequest, request: Request, client: ClassifyClient, decisions: DecisionsDep
) -> BatchResponse:
    """Route several reports; results keep the order of the items, a bad item gets an error in its place."""
    decisions.check_batch_size(len(body.items))
    items = [_batch_item(raw) for raw in body.items]
    reports = [item for item in items if isinstance(item, ReportInput)]
    outcomes = iter(await decisions.decide_batch(reports, client=client, started_at=request.state.started_at))
    results = [item if isinstance(item, ErrorResponse) else _batch_result(next(outcomes)) for item in items]
    return BatchResponse(results=results)
