"""The decision service without HTTP: the audit record comes from the domain result, failures are counted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.artifact import MODEL_FILE
from app.audit.repository import DecisionRecord
from app.decisions import DecisionService, ReportInput, RoutingDecision, audit_record
from app.errors import AuditUnavailable, BatchTooLarge, EmptyText
from app.inference.classifier import Classification
from app.inference.model import Keyword, ModelPrediction, ScoredLabel

pytestmark = pytest.mark.anyio

TEXT = "Gatlampan på Storgatan 12 är trasig."


def classification() -> Classification:
    prediction = ModelPrediction(
        department=(ScoredLabel("gata_park", "Gata och park", 0.9, 0), ScoredLabel("avfall", "Avfall", 0.1, 3)),
        sentiment=ScoredLabel("neutral", "Neutral", 0.7, 1),
        severity=ScoredLabel("medel", "Medel", 0.6, 1),
        keywords=(Keyword("Gatlampan", "OBJEKT", 0, 9, 0.95),),
    )
    return Classification(
        prediction=prediction,
        language="sv",
        routed_to="gata@kommun.example",
        needs_review=False,
        confidence_band="high",
    )


class FakeManifest:
    model_version = "v1"
    files = {MODEL_FILE: "ab" * 32}


class FakeClassifier:
    manifest = FakeManifest()

    async def classify(self, text: str) -> Classification:
        if not text.strip():
            raise EmptyText("the text is empty or only whitespace")
        return classification()


class FakeWriter:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[DecisionRecord] = []
        self.fail = fail

    async def write(self, record: DecisionRecord) -> None:
        if self.fail:
            raise AuditUnavailable("down")
        self.records.append(record)


class Counters:
    def __init__(self) -> None:
        self.answered: list[str] = []
        self.failures = 0

    def decision_answered(self, department: str) -> None:
        self.answered.append(department)

    def audit_write_failed(self) -> None:
        self.failures += 1


def service(writer: FakeWriter, counters: Counters) -> DecisionService:
    fake: Any = FakeClassifier()
    return DecisionService(fake, writer, counters, max_batch_items=2)  # type: ignore[arg-type]


def test_the_audit_record_is_built_from_the_domain_result() -> None:
    decision = RoutingDecision(
        request_id="r1",
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        client="c",
        report=ReportInput(text=TEXT, case_id="KS-1", metadata={"kanal": "e-tjänst"}),
        classification=classification(),
        model_version="v1",
        artifact_sha256="ab" * 32,
        latency_ms=12.5,
    )
    record = audit_record(decision)
    assert (record.department, record.department_score, record.routed_to) == ("gata_park", 0.9, "gata@kommun.example")
    assert (record.sentiment, record.severity, record.severity_score) == ("neutral", "medel", 0.6)
    assert record.keywords == [{"text": "Gatlampan", "type": "OBJEKT", "start": 0, "end": 9, "score": 0.95}]
    assert (record.text, record.case_id, record.metadata, record.latency_ms) == (
        TEXT,
        "KS-1",
        {"kanal": "e-tjänst"},
        12.5,
    )


async def test_decide_writes_then_counts() -> None:
    writer, counters = FakeWriter(), Counters()
    decision = await service(writer, counters).decide(ReportInput(TEXT), client="c", request_id="r2")
    assert [record.request_id for record in writer.records] == ["r2"] == [decision.request_id]
    assert writer.records[0].artifact_sha256 == "ab" * 32 and counters.answered == ["gata_park"]


async def test_an_audit_failure_is_counted_and_raised() -> None:
    counters = Counters()
    with pytest.raises(AuditUnavailable):
        await service(FakeWriter(fail=True), counters).decide(ReportInput(TEXT), client="c")
    assert counters.failures == 1 and counters.answered == []


async def test_a_batch_keeps_order_and_puts_errors_in_place() -> None:
    writer, counters = FakeWriter(), Counters()
    outcomes = await service(writer, counters).decide_batch([ReportInput(TEXT), ReportInput("  ")], client="c")
    assert isinstance(outcomes[0], RoutingDecision) and isinstance(outcomes[1], EmptyText)
    assert len(writer.records) == 1
    with pytest.raises(BatchTooLarge):
        await service(writer, counters).decide_batch([ReportInput(TEXT)] * 3, client="c")
