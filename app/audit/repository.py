"""Reading and writing the audit log: decisions, reviewers' feedback, retention and the feedback loop.

Data-access functions take a SQLAlchemy ``Session`` and keyword-only arguments; the caller commits.

Text policy (``text_storage``): ``redacted`` stores the text with personal data replaced (see
:mod:`app.audit.redaction`) and keyword offsets moved onto that text; ``hash`` stores only the SHA-256 of the text
as sent; ``none`` stores no trace of it. The text as sent is never stored. Case ids and string values of the
request metadata are redacted under every policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import Subquery

from app.audit.models import Decision, DecisionKeyword, Feedback
from app.audit.redaction import Finding, map_span, redact_personal_data
from app.config import TextStorage
from app.errors import DecisionNotFound, FeedbackConflict, IdempotencyKeyReused, InvalidFeedback

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
    # [{label, score}]: the next most likely departments, for reviewers (not personal data).
    department_alternatives: list[dict[str, Any]] | None = None


def redact_json(value: Any) -> Any:
    """A JSON value with personal data redacted in every string, object keys included.

    Two keys that redact to the same text are kept apart by a number: ``[NAMN]``, ``[NAMN] (2)``.
    """
    if isinstance(value, str):
        return redact_personal_data(value).text
    if isinstance(value, dict):
        redacted: dict[str, Any] = {}
        for key, item in value.items():
            stored_key = base = redact_personal_data(key).text
            number = 2
            while stored_key in redacted:
                stored_key, number = f"{base} ({number})", number + 1
            redacted[stored_key] = redact_json(item)
        return redacted
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    return value


def redact_reviewer(reviewer: str | None) -> str | None:
    """The reviewer as stored: personnummer, phone numbers and e-mail addresses removed. A name is kept: who
    changed a decision is what the audit trail is for (a staff id is better still)."""
    return None if reviewer is None else redact_personal_data(reviewer, names=False).text


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
        "department_alternatives": record.department_alternatives,
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
        "request_metadata": None if record.metadata is None else redact_json(record.metadata),
    }


def keyword_rows(
    *, request_id: str, created_at: datetime, department: str, text: str | None, keywords: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The ``decision_keywords`` rows of a decision: each keyword as written in the stored text (none without
    a stored text)."""
    if text is None:
        return []
    rows = []
    for position, keyword in enumerate(keywords):
        written = " ".join(text[keyword["start"] : keyword["end"]].split())[:200]
        if written:
            rows.append(
                {
                    "request_id": request_id,
                    "position": position,
                    "created_at": created_at,
                    "department": department,
                    "type": keyword["type"],
                    "keyword": written,
                }
            )
    return rows


def insert_decisions(session: Session, *, records: Sequence[DecisionRecord], text_storage: TextStorage) -> None:
    """Insert decisions (one statement for all of them) and the keywords of their stored texts."""
    rows = [decision_row(record, text_storage=text_storage) for record in records]
    session.execute(insert(Decision), rows)
    keywords = [
        keyword
        for row in rows
        for keyword in keyword_rows(
            request_id=row["id"],
            created_at=row["created_at"],
            department=row["department"],
            text=row["text"],
            keywords=row["keywords"],
        )
    ]
    if keywords:
        session.execute(insert(DecisionKeyword), keywords)


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
    """InvalidFeedback for labels the model does not have; FeedbackConflict for keywords that do not fit the
    decision's text (outside it, or overlapping each other)."""
    problems = [
        f"{task} {value!r} is not a label of the model ({', '.join(allowed_labels[task])})"
        for task, value in labels.items()
        if value is not None and value not in allowed_labels[task]
    ]
    problems += [
        f"keyword type {span['type']!r} is not one of {', '.join(allowed_labels['keywords'])}"
        for span in keywords or []
        if span["type"] not in allowed_labels["keywords"]
    ]
    if problems:
        raise InvalidFeedback("; ".join(problems))
    conflicts = []
    previous_end = 0
    for span in sorted(keywords or [], key=lambda s: s["start"]):
        if not 0 <= span["start"] < span["end"] <= decision.text_chars:
            conflicts.append(f"keyword [{span['start']}, {span['end']}) is outside the text ({decision.text_chars})")
        elif span["start"] < previous_end:
            conflicts.append(f"keyword [{span['start']}, {span['end']}) overlaps the keyword before it")
        previous_end = max(previous_end, span["end"])
    if conflicts:
        raise FeedbackConflict("; ".join(conflicts))


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _stored_feedback(session: Session, *, client: str, key_sha256: str) -> Feedback | None:
    query = select(Feedback).where(Feedback.client == client, Feedback.idempotency_key_sha256 == key_sha256)
    return session.scalar(query)


def _replayed(feedback: Feedback, request_sha256: str) -> Feedback:
    """The feedback a retried request stored before; IdempotencyKeyReused if the key came with another request."""
    if feedback.request_sha256 != request_sha256:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used for a different feedback request; use a new key per request"
        )
    return feedback


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
    idempotency_key: str | None = None,
) -> Feedback:
    """Store a reviewer's correction of a decision (the caller commits).

    Keyword offsets are given in the text as sent (as /v1/classify answered them) and stored in the stored text's
    offsets, like the decision's own keywords. Fields left out (None) are not judged, except that a feedback with
    no field at all confirms the whole decision (see :func:`reviewed_labels`). The reviewer is stored redacted
    (:func:`redact_reviewer`).

    With an ``idempotency_key``, a request this client already sent with the same key returns the feedback stored
    then, and stores nothing; the same key with a different request raises IdempotencyKeyReused. Only hashes of
    the key and of the request are stored.
    """
    labels = {"department": department, "sentiment": sentiment, "severity": severity}
    request = {"request_id": request_id, "reviewer": reviewer, "keywords": keywords, **labels}
    request_sha256 = _sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, default=list))
    key_sha256 = None if idempotency_key is None else _sha256(idempotency_key)
    if key_sha256 is not None:
        stored = _stored_feedback(session, client=client, key_sha256=key_sha256)
        if stored is not None:
            return _replayed(stored, request_sha256)
    decision = get_decision(session, request_id=request_id)
    _check_correction(decision, labels=labels, keywords=keywords, allowed_labels=allowed_labels)
    stored_keywords = None
    if keywords is not None:
        ordered = sorted(keywords, key=lambda keyword: keyword["start"])
        stored_keywords = _stored_keywords(ordered, _findings(decision.redactions))
    feedback = Feedback(
        request_id=request_id,
        created_at=created_at,
        client=client,
        reviewer=redact_reviewer(reviewer),
        keywords=stored_keywords,
        idempotency_key_sha256=key_sha256,
        request_sha256=request_sha256,
        **labels,
    )
    session.add(feedback)
    try:
        session.flush()
    except IntegrityError:
        # The same key, sent twice at once: the other request stored it first.
        session.rollback()
        stored = None if key_sha256 is None else _stored_feedback(session, client=client, key_sha256=key_sha256)
        if stored is None:
            raise
        return _replayed(stored, request_sha256)
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
    """The labels of a decision's feedback in force: the latest one (earlier feedback stays in the audit log as
    history). A correction gives the fields it judges, a confirmation every field as the model predicted it.
    The model's prediction is never a label unless a reviewer confirmed it (by giving the same value, or by
    confirming the whole decision).

    Keyword labels that overlap redacted personal data become unknown (None): a span over a placeholder is not
    a label of the redacted text, and dropping the span alone would teach that its words are no keyword.
    """
    labels: dict[str, Any] = dict.fromkeys(JUDGED_FIELDS)
    latest = max(decision.feedback, key=lambda feedback: feedback.id, default=None)
    if latest is not None and is_confirmation(latest):
        labels.update({name: getattr(decision, name) for name in LABEL_FIELDS})
        labels["keywords"] = decision.keywords
    elif latest is not None:
        labels.update({name: getattr(latest, name) for name in JUDGED_FIELDS})
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


def department_judgements(*decision_conditions: ColumnElement[bool]) -> Subquery:
    """The feedback in force of each decision (its latest, as in :func:`reviewed_labels`) where it judges the
    department (a correction giving one, or a confirmation), as ``(request_id, reviewed, rank)``: the department
    the reviewer gave, rank always 1; only of decisions meeting the conditions."""
    confirmation = and_(*(getattr(Feedback, name).is_(None) for name in JUDGED_FIELDS))
    latest_first = func.row_number().over(partition_by=Feedback.request_id, order_by=Feedback.id.desc())
    # The conditions are on the decision, shared by all its feedback: filtering before ranking keeps the latest.
    ranked = (
        select(
            Feedback.request_id,
            func.coalesce(Feedback.department, Decision.department).label("reviewed"),
            or_(Feedback.department.is_not(None), confirmation).label("judges_department"),
            latest_first.label("rank"),
        )
        .join(Decision, Decision.id == Feedback.request_id)
        .where(*decision_conditions)
        .subquery()
    )
    return (
        select(ranked.c.request_id, ranked.c.reviewed, ranked.c.rank)
        .where(ranked.c.rank == 1, ranked.c.judges_department)
        .subquery()
    )


def department_agreement(session: Session) -> dict[str, tuple[int, int]]:
    """Per department the model chose: (decisions whose feedback in force judges the department, of them the ones
    the reviewer agreed with). The feedback in force is a decision's latest, as in :func:`reviewed_labels`."""
    judged = department_judgements()
    query = (
        select(
            Decision.department,
            func.count(),
            func.sum(case((judged.c.reviewed == Decision.department, 1), else_=0)),
        )
        .join(judged, judged.c.request_id == Decision.id)
        .group_by(Decision.department)
    )
    return {department: (int(total), int(agreed)) for department, total, agreed in session.execute(query)}


def purge_texts(session: Session, *, older_than: datetime, now: datetime) -> int:
    """Remove the stored text (or its hash) of decisions created before ``older_than``, and the keywords cut out
    of it; the rows stay. Returns how many decisions lost their text."""
    session.execute(
        delete(DecisionKeyword)
        .where(DecisionKeyword.created_at < older_than)
        .execution_options(synchronize_session=False)
    )
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
