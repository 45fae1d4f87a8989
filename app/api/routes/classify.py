"""``POST /v1/classify`` and ``POST /v1/classify/batch``: routing decisions, each recorded in the audit log."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from app.api.deps import AuditWriterDep, ClassifierDep, ClassifyClient, MetricsDep, SettingsDep
from app.api.errors import ERROR_RESPONSES, error_detail, validation_details, validation_message
from app.api.metrics import ServiceMetrics
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
from app.artifact import MODEL_FILE
from app.audit.repository import DecisionRecord
from app.audit.writer import AuditWriter
from app.errors import AuditUnavailable, BatchTooLarge, InvalidInput
from app.inference.classifier import Classification, Classifier

router = APIRouter(prefix="/v1", tags=["classification"])

ALTERNATIVES = 3


def classification_response(
    classification: Classification, *, request_id: str, model_version: str, latency_ms: float
) -> ClassifyResponse:
    """The API answer for a classification."""
    prediction = classification.prediction
    department = prediction.department[0]
    return ClassifyResponse(
        request_id=request_id,
        department=DepartmentResult(
            label=department.label,
            name=department.name,
            score=department.score,
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
        model_version=model_version,
        latency_ms=latency_ms,
    )


async def _decide(
    item: ReportItem,
    *,
    request_id: str,
    client: str,
    metadata: dict[str, Any] | None,
    started_at: float,
    classifier: Classifier,
    writer: AuditWriter,
    metrics: ServiceMetrics,
) -> ClassifyResponse:
    """Classify one report, record the decision in the audit log, and only then answer (fail closed)."""
    classification = await classifier.classify(item.text)
    latency_ms = (time.perf_counter() - started_at) * 1000
    manifest = classifier.manifest
    response = classification_response(
        classification, request_id=request_id, model_version=manifest.model_version, latency_ms=latency_ms
    )
    record = DecisionRecord(
        request_id=request_id,
        created_at=datetime.now(UTC),
        client=client,
        case_id=item.case_id,
        model_version=manifest.model_version,
        artifact_sha256=manifest.files[MODEL_FILE],
        text=item.text,
        department=response.department.label,
        department_score=response.department.score,
        department_alternatives=[{"label": a.label, "score": a.score} for a in response.department.alternatives],
        sentiment=response.sentiment.label,
        sentiment_score=response.sentiment.score,
        severity=response.severity.label,
        severity_score=response.severity.score,
        keywords=[keyword.model_dump() for keyword in response.keywords],
        needs_review=response.needs_review,
        routed_to=response.routed_to,
        latency_ms=latency_ms,
        metadata=metadata,
    )
    try:
        await writer.write(record)
    except AuditUnavailable:
        metrics.audit_write_failures.inc()
        raise
    metrics.predictions.labels(department=response.department.label).inc()
    return response


@router.post("/classify", responses=ERROR_RESPONSES, summary="Classify one report")
async def classify_report(
    body: ClassifyRequest,
    request: Request,
    client: ClassifyClient,
    classifier: ClassifierDep,
    writer: AuditWriterDep,
    metrics: MetricsDep,
) -> ClassifyResponse:
    """Route one citizen report: department and destination, sentiment, severity and keywords."""
    return await _decide(
        body,
        request_id=request.state.request_id,
        client=client,
        metadata=body.metadata,
        started_at=request.state.started_at,
        classifier=classifier,
        writer=writer,
        metrics=metrics,
    )


@router.post(
    "/classify/batch", responses=ERROR_RESPONSES, response_model_exclude_none=True, summary="Classify several reports"
)
async def classify_batch(
    body: BatchRequest,
    request: Request,
    client: ClassifyClient,
    classifier: ClassifierDep,
    writer: AuditWriterDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> BatchResponse:
    """Route several reports; results keep the order of the items, a bad item gets an error in its place."""
    if len(body.items) > settings.max_batch_items:
        raise BatchTooLarge(f"the batch has {len(body.items)} items; at most {settings.max_batch_items} are accepted")

    async def result(raw: Any) -> ClassifyResponse | ErrorResponse:
        try:
            item = ReportItem.model_validate(raw)
        except ValidationError as exc:
            details = validation_details(exc.errors())
            message = validation_message(details)
            return ErrorResponse(error=ErrorDetail(code="validation_error", message=message, details=details))
        try:
            # Each item is a decision of its own, with its own id in the audit log.
            return await _decide(
                item,
                request_id=str(uuid.uuid4()),
                client=client,
                metadata=None,
                started_at=request.state.started_at,
                classifier=classifier,
                writer=writer,
                metrics=metrics,
            )
        except InvalidInput as exc:
            return ErrorResponse(error=error_detail(exc))

    # Submitted together, the items share model calls through the micro-batcher. An audit failure fails the
    # whole request (503): no decision leaves without its row.
    return BatchResponse(results=list(await asyncio.gather(*(result(raw) for raw in body.items))))
