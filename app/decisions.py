"""The decision service between the routes and inference/audit: classify reports, record each decision in the
audit log before it is answered (fail closed), count it, and record reviewers' corrections.

Routes validate, call one function of :class:`DecisionService` and map the domain answer (:class:`RoutingDecision`)
to their response schema. The audit record is built here, from the domain result, so the API's shape and the audit
log change independently. A staff UI or a bulk command uses the same functions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from app.artifact import MODEL_FILE, TASKS, Manifest
from app.audit.database import audit_database_errors
from app.audit.models import Feedback
from app.audit.repository import DecisionRecord, add_feedback
from app.audit.writer import AuditWriter
from app.errors import AuditUnavailable, BatchTooLarge, InvalidInput
from app.inference.classifier import Classification, Classifier

# How many next-most-likely departments an answer and the audit record carry (for reviewers).
ALTERNATIVES = 3


class DecisionCounters(Protocol):
    """What the service counts (the service's Prometheus metrics implement it)."""

    def decision_answered(self, department: str) -> None: ...

    def audit_write_failed(self) -> None: ...


@dataclass(frozen=True)
class ReportInput:
    """One report to decide on, as the caller sent it."""

    text: str
    case_id: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class RoutingDecision:
    """A decision as the service made it and recorded it: the classification and who asked, when, with what model."""

    request_id: str
    created_at: datetime
    client: str
    report: ReportInput
    classification: Classification
    model_version: str
    artifact_sha256: str
    latency_ms: float


@dataclass(frozen=True)
class Correction:
    """A reviewer's correction of a decision; None leaves a task unjudged (nothing at all confirms the decision).
    Keyword spans are ``{"start", "end", "type"}`` in the text as sent."""

    reviewer: str | None = None
    department: str | None = None
    sentiment: str | None = None
    severity: str | None = None
    keywords: Sequence[Mapping[str, Any]] | None = None


def audit_record(decision: RoutingDecision) -> DecisionRecord:
    """The audit log's record of a decision, before the text policy is applied."""
    prediction = decision.classification.prediction
    department = prediction.department[0]
    return DecisionRecord(
        request_id=decision.request_id,
        created_at=decision.created_at,
        client=decision.client,
        case_id=decision.report.case_id,
        model_version=decision.model_version,
        artifact_sha256=decision.artifact_sha256,
        text=decision.report.text,
        department=department.label,
        department_score=department.score,
        department_alternatives=[
            {"label": other.label, "score": other.score} for other in prediction.department[1 : 1 + ALTERNATIVES]
        ],
        sentiment=prediction.sentiment.label,
        sentiment_score=prediction.sentiment.score,
        severity=prediction.severity.label,
        severity_score=prediction.severity.score,
        keywords=[asdict(keyword) for keyword in prediction.keywords],
        needs_review=decision.classification.needs_review,
        routed_to=decision.classification.routed_to,
        latency_ms=decision.latency_ms,
        metadata=decision.report.metadata,
    )


class DecisionService:
    """The classify and feedback use cases of the service, over one classifier and one audit writer."""

    def __init__(
        self, classifier: Classifier, writer: AuditWriter, counters: DecisionCounters, *, max_batch_items: int
    ) -> None:
        self.classifier = classifier
        self.writer = writer
        self.counters = counters
        self.max_batch_items = max_batch_items

    @property
    def manifest(self) -> Manifest:
        return self.classifier.manifest

    async def decide(
        self, report: ReportInput, *, client: str, request_id: str | None = None, started_at: float | None = None
    ) -> RoutingDecision:
        """Classify one report and commit its decision to the audit log; only then is it returned.

        Raises :class:`~app.errors.InvalidInput` for unusable text and :class:`~app.errors.AuditUnavailable` when
        the decision cannot be recorded. ``started_at`` (``time.perf_counter()``) is where latency counts from.
        """
        started_at = time.perf_counter() if started_at is None else started_at
        classification = await self.classifier.classify(report.text)
        manifest = self.manifest
        decision = RoutingDecision(
            request_id=request_id or str(uuid.uuid4()),
            created_at=datetime.now(UTC),
            client=client,
            report=report,
            classification=classification,
            model_version=manifest.model_version,
            artifact_sha256=manifest.files[MODEL_FILE],
            latency_ms=(time.perf_counter() - started_at) * 1000,
        )
        try:
            await self.writer.write(audit_record(decision))
        except AuditUnavailable:
            self.counters.audit_write_failed()
            raise
        self.counters.decision_answered(decision.classification.prediction.department[0].label)
        return decision

    def check_batch_size(self, items: int) -> None:
        """Raise :class:`~app.errors.BatchTooLarge` for a batch of more than ``max_batch_items`` reports."""
        if items > self.max_batch_items:
            raise BatchTooLarge(f"the batch has {items} items; at most {self.max_batch_items} are accepted")

    async def decide_batch(
        self, reports: Sequence[ReportInput], *, client: str, started_at: float | None = None
    ) -> list[RoutingDecision | InvalidInput]:
        """Decide on several reports, in order; each is a decision of its own, with its own request id.

        A report with unusable text gets its :class:`~app.errors.InvalidInput` in its place. Submitted together,
        the reports share model calls through the micro-batcher. An audit failure fails the whole call: no
        decision leaves without its row. Raises :class:`~app.errors.BatchTooLarge` beyond ``max_batch_items``.
        """
        self.check_batch_size(len(reports))

        async def one(report: ReportInput) -> RoutingDecision | InvalidInput:
            try:
                return await self.decide(report, client=client, started_at=started_at)
            except InvalidInput as exc:
                return exc

        return list(await asyncio.gather(*(one(report) for report in reports)))

    def record_feedback(
        self,
        session: Session,
        *,
        request_id: str,
        client: str,
        correction: Correction,
        idempotency_key: str | None = None,
    ) -> Feedback:
        """Store a reviewer's correction linked to its decision and commit it; a retried request with the same
        ``idempotency_key`` returns the stored correction instead of adding a second one.

        Raises :class:`~app.errors.DecisionNotFound`, :class:`~app.errors.InvalidFeedback` (a label the model does
        not know, a keyword outside the text) or :class:`~app.errors.AuditUnavailable`.
        """
        with audit_database_errors():
            feedback = add_feedback(
                session,
                request_id=request_id,
                client=client,
                created_at=datetime.now(UTC),
                reviewer=correction.reviewer,
                department=correction.department,
                sentiment=correction.sentiment,
                severity=correction.severity,
                keywords=None if correction.keywords is None else list(correction.keywords),
                allowed_labels={task: self.manifest.tasks[task].label_ids for task in TASKS},
                idempotency_key=idempotency_key,
            )
            session.commit()
        return feedback
