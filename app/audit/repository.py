"""Reading and writing the audit log: decisions, reviewers' feedback, retention and the feedback loop.

Data-access functions take a SQLAlchemy ``Session`` and keyword-only arguments; the caller commits.

Text policy (``text_storage``): ``redacted`` stores the text with personal data replaced (see
:mod:`app.audit.redaction`) and keyword offsets moved onto that text; ``hash`` stores only the SHA-256 of the text
as sent; ``none`` stores no trace of it. The text as sent is never stored. Case ids and string values of the
request metadata are redacted under every policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, selectinload

from app.audit.models import Decision, Feedback
from app.audit.redaction import Finding, map_span, redact_personal_data
from app.config import TextStorage
from app.errors import DecisionNotFound, InvalidFeedback

LABEL_FIELDS = ("department", "sentiment", "severity")
JUDGED_FIELDS = (*LABEL_FIELDS, "keywords")


@dataclass(frozen=True)
class DecisionRecord:
    """A routing decision as the service made it, before the text policy is applied."""

    request_id: str
    created_at: datetime
    client: str
    case_id: str | None
    model_version: str
    artifact_sha256: str
    text: str
    department: str
    department_score: float
    sentiment: str
    sentiment_score: float
    severity: str
    severity_score: float
    keywords: list[dict[str, Any]]
    needs_review: bool
    routed_to: str
    latency_ms: float
    metadata: dict[str, Any] | None = None


def _redact_values(value: Any) -> Any:
    """Strings anywhere in a JSON value, redacted."""
    if isinstance(value, str):
        return redact_personal_data(value).text
    if isinstance(value, dict):
        return {key: _redact_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_values(item) for item in value]
    return value


def _findings(redactions: Sequence[Mapping[str, Any]] | None) -> list[Finding]:
    return [Finding(r["start"], r["end"], r["type"]) for r in redactions or []]


def _stored_keywords(keywords: Sequence[Mapping[str, Any]], findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """Keyword spans without their text (the stored text holds it), offsets moved onto the redacted text."""
    stored = []
    for keyword in keywords:
        start, end = map_span(findings, keyword["start"], keyword["end"])
        stored.append({key: value for key, value in keyword.items() if key != "text"} | {"start": start, "end": end})
    return stored


def decision_row(record: DecisionRecord, *, text_storage: TextStorage) -> dict[str, Any]:
    """The column values of a decision under a text policy (the text as sent is dropped here)."""
    text: str | None = None
    text_sha256: str | None = None
    redactions: list[dict[str, Any]] | None = None
    findings: list[Finding] = []
    if text_storage == "redacted":
        redaction = redact_personal_data(record.text)
        text, findings = redaction.text, list(redaction.findings)
        redactions = [asdict(finding) for finding in findings]
    elif text_storage == "hash":
        text_sha256 = hashlib.sha256(record.text.encode("utf-8")).hexdigest()
    return {
        "id": record.request_id,
        "created_at": record.created_at,
        "client": record.client,
        "case_id": None if record.case_id is None else redact_personal_data(record.case_id).text,
        "model_version": record.model_version,
        "artifact_sha256": record.artifact_sha256,
        "department": record.department,
        "department_score": record.department_score,
        "sentiment": record.sentiment,
        "sentiment_score": record.sentiment_score,
        "severity": record.severity,
        "severity_score": record.severity_score,
        "keywords": _stored_keywords(record.keywords, findings),
        "needs_review": record.needs_review,
        "routed_to": record.routed_to,
        "latency_ms": record.latency_ms,
        "text_storage": text_storage,
        "text": text,
        "text_sha256": text_sha256,
        "text_chars": len(record.text),
        "redactions": redactions,
        "request_metadata": None if record.metadata is None else _redact_values(record.metadata),
    }


def insert_decisions(session: Session, *, records: Sequence[DecisionRecord], text_storage: TextStorage) -> None:
    """Insert decisions (one statement for all of them)."""
    session.execute(insert(Decision), [decision_row(record, text_storage=text_storage) for record in records])


def get_decision(session: Session, *, request_id: str) -> Decision:
    """A decision with its feedback; DecisionNotFound if there is none with this request id."""
    decision = session.get(Decision, request_id, options=[selectinload(Decision.feedback)])
    if decision is None:
        raise DecisionNotFound(f"no decision with request id {request_id!r} in the audit log")
    return decision


def list_decisions(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    department: str | None = None,
    needs_review: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Decision], int]:
    """Decisions with ``since <= created_at < until`` (newest first) and the total count that matched."""
    conditions = []
    if since is not None:
        conditions.append(Decision.created_at >= since)
    if until is not None:
        conditions.append(Decision.created_at < until)
    if department is not None:
        conditions.append(Decision.department == department)
    if needs_review is not None:
        conditions.append(Decision.needs_review == needs_review)
    total = session.scalar(select(func.count()).select_from(Decision).where(*conditions)) or 0
    query = (
        select(Decision)
        .where(*conditions)
        .options(selectinload(Decision.feedback))
        .order_by(Decision.created_at.desc(), Decision.id)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query)), total


def _check_correction(
    decision: Decision,
    *,
    labels: Mapping[str, str | None],
    keywords: Sequence[Mapping[str, Any]] | None,
    allowed_labels: Mapping[str, Collection[str]],
) -> None:
    problems = [
        f"{task} {value!r} is not a label of the model ({', '.join(allowed_labels[task])})"
        for task, value in labels.items()
        if value is not None and value not in allowed_labels[task]
    ]
    previous_end = 0
    for span in sorted(keywords or [], key=lambda s: s["start"]):
        if span["type"] not in allowed_labels["keywords"]:
            problems.append(f"keyword type {span['type']!r} is not one of {', '.join(allowed_labels['keywords'])}")
        if not 0 <= span["start"] < span["end"] <= decision.text_chars:
            problems.append(f"keyword [{span['start']}, {span['end']}) is outside the text ({decision.text_chars})")
        elif span["start"] < previous_end:
            problems.append(f"keyword [{span['start']}, {span['end']}) overlaps the keyword before it")
        previous_end = max(previous_end, span["end"])
    if problems:
        raise InvalidFeedback("; ".join(problems))


def add_feedback(
    session: Session,
    *,
    request_id: str,
    client: str,
    created_at: datetime,
    reviewer: str | None,
    department: str | None,
    sentiment: str | None,
    severity: str | None,
    keywords: Sequence[Mapping[str, Any]] | None,
    allowed_labels: Mapping[str, Collection[str]],
) -> Feedback:
    """Store a reviewer's correction of a decision.

    Keyword offsets are given in the text as sent (as /v1/classify answered them) and stored in the stored text's
    offsets, like the decision's own keywords. Fields left out (None) are not judged, except that a feedback with
    no field at all confirms the whole decision (see :func:`reviewed_labels`).
    """
    decision = get_decision(session, request_id=request_id)
    labels = {"department": department, "sentiment": sentiment, "severity": severity}
    _check_correction(decision, labels=labels, keywords=keywords, allowed_labels=allowed_labels)
    stored_keywords = None
    if keywords is not None:
        ordered = sorted(keywords, key=lambda keyword: keyword["start"])
        stored_keywords = _stored_keywords(ordered, _findings(decision.redactions))
    # The reviewer is kept as given: who changed a decision is what the audit trail is for.
    feedback = Feedback(
        request_id=request_id,
        created_at=created_at,
        client=client,
        reviewer=reviewer,
        keywords=stored_keywords,
        **labels,
    )
    session.add(feedback)
    session.flush()
    return feedback


def is_confirmation(feedback: Feedback) -> bool:
    """A feedback that corrects nothing: the reviewer accepts the whole decision."""
    return all(getattr(feedback, name) is None for name in JUDGED_FIELDS)


@dataclass(frozen=True)
class ReviewedLabels:
    """The labels reviewers gave a decision; None where no reviewer judged that task."""

    department: str | None
    sentiment: str | None
    severity: str | None
    keywords: list[dict[str, Any]] | None


def _touches_personal_data(spans: Sequence[Mapping[str, Any]], decision: Decision) -> bool:
    """Whether a span (in stored-text offsets) overlaps a placeholder of the decision's stored text."""
    findings = _findings(decision.redactions)
    placeholders = [map_span(findings, finding.start, finding.end) for finding in findings]
    return any(span["start"] < end and start < span["end"] for span in spans for start, end in placeholders)


def reviewed_labels(decision: Decision) -> ReviewedLabels:
    """Fold a decision's feedback, oldest first: a correction sets the fields it gives, a confirmation sets every
    field to the model's prediction; a later feedback overrides an earlier one. The model's prediction is never a
    label unless a reviewer confirmed it (by giving the same value, or by confirming the whole decision).

    Keyword labels that overlap redacted personal data become unknown (None): a span over a placeholder is not
    a label of the redacted text, and dropping the span alone would teach that its words are no keyword.
    """
    labels: dict[str, Any] = dict.fromkeys(JUDGED_FIELDS)
    for feedback in decision.feedback:
        if is_confirmation(feedback):
            labels.update({name: getattr(decision, name) for name in LABEL_FIELDS})
            labels["keywords"] = decision.keywords
            continue
        labels.update({name: getattr(feedback, name) for name in labels if getattr(feedback, name) is not None})
    if labels["keywords"] is not None:
        spans = [{"start": k["start"], "end": k["end"], "type": k["type"]} for k in labels["keywords"]]
        labels["keywords"] = None if _touches_personal_data(spans, decision) else spans
    return ReviewedLabels(**labels)


@dataclass(frozen=True)
class FeedbackExample:
    """A reviewed decision as a training example: the stored (redacted) text and the reviewed labels.
    ``text`` is None where the decision's text is not stored (policy hash or none, or purged)."""

    request_id: str
    text: str | None
    labels: ReviewedLabels


def reviewed_examples(session: Session) -> Iterator[FeedbackExample]:
    """Every decision with feedback, oldest first, with the labels its reviewers gave."""
    query = (
        select(Decision)
        .where(Decision.feedback.any())
        .options(selectinload(Decision.feedback))
        .order_by(Decision.created_at, Decision.id)
        .execution_options(yield_per=500)
    )
    for decision in session.scalars(query):
        yield FeedbackExample(decision.id, decision.text, reviewed_labels(decision))


def stored_texts(session: Session) -> Iterator[tuple[str, str]]:
    """(request id, stored redacted text) of every decision whose text is stored, oldest first: the unlabelled
    reports training can learn from."""
    query = (
        select(Decision.id, Decision.text)
        .where(Decision.text.is_not(None))
        .order_by(Decision.created_at, Decision.id)
        .execution_options(yield_per=500)
    )
    for row in session.execute(query):
        yield row.id, row.text


def department_agreement(session: Session) -> dict[str, tuple[int, int]]:
    """Per department the model chose: (decisions whose department a reviewer judged, of them the ones the
    reviewer agreed with). The latest judgement of a decision counts, as in :func:`reviewed_labels`."""
    confirmation = and_(*(getattr(Feedback, name).is_(None) for name in JUDGED_FIELDS))
    latest_first = func.row_number().over(partition_by=Feedback.request_id, order_by=Feedback.id.desc())
    judged = (
        select(
            Feedback.request_id,
            func.coalesce(Feedback.department, Decision.department).label("reviewed"),
            latest_first.label("rank"),
        )
        .join(Decision, Decision.id == Feedback.request_id)
        .where(or_(Feedback.department.is_not(None), confirmation))
        .subquery()
    )
    query = (
        select(
            Decision.department,
            func.count(),
            func.sum(case((judged.c.reviewed == Decision.department, 1), else_=0)),
        )
        .join(judged, judged.c.request_id == Decision.id)
        .where(judged.c.rank == 1)
        .group_by(Decision.department)
    )
    return {department: (int(total), int(agreed)) for department, total, agreed in session.execute(query)}


def purge_texts(session: Session, *, older_than: datetime, now: datetime) -> int:
    """Remove the stored text (or its hash) of decisions created before ``older_than``; the rows stay.
    Returns how many decisions lost their text."""
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Decision)
        .where(
            Decision.created_at < older_than,
            or_(Decision.text.is_not(None), Decision.text_sha256.is_not(None)),
        )
        .values(text=None, text_sha256=None, text_purged_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)
