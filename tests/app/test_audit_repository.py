"""The audit repository on SQLite and PostgreSQL: text policies, queries, feedback, agreement and retention."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.audit.models import Decision
from app.audit.repository import (
    DecisionRecord,
    department_agreement,
    get_decision,
    list_decisions,
    purge_texts,
    reviewed_examples,
    reviewed_labels,
)
from app.errors import DecisionNotFound, FeedbackConflict, InvalidFeedback
from tests.app.conftest import BOTH_DATABASES, review, store_decisions

pytestmark = BOTH_DATABASES

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_redacted_policy_stores_no_personal_data_and_moves_keywords_onto_the_stored_text(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    record = make_record(case_id="anna@example.se", metadata={"kontakt": ["ring 08-123 456 78"], "antal": 2})
    store_decisions(audit_engine, record)
    with Session(audit_engine) as session:
        decision = get_decision(session, request_id=record.request_id)
    assert decision.text == "Ring [TELEFON] om gatlampan på Storgatan 12, pnr [PERSONNUMMER]."
    assert decision.text_sha256 is None
    assert decision.text_chars == len(record.text)
    assert [decision.text[k["start"] : k["end"]] for k in decision.keywords] == ["gatlampan", "Storgatan 12"]
    assert all("text" not in keyword for keyword in decision.keywords)  # the stored text holds the spans
    assert decision.redactions == [
        {"start": 5, "end": 18, "type": "TELEFON"},
        {"start": 53, "end": 66, "type": "PERSONNUMMER"},
    ]
    assert decision.case_id == "[E-POST]"
    assert decision.request_metadata == {"kontakt": ["ring [TELEFON]"], "antal": 2}
    assert decision.created_at == record.created_at  # timezone-aware UTC on both backends


@pytest.mark.parametrize("policy", ["hash", "none"])
def test_hash_and_none_policies_store_no_text(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord], policy: str
) -> None:
    record = make_record()
    store_decisions(audit_engine, record, text_storage=policy)
    with Session(audit_engine) as session:
        decision = get_decision(session, request_id=record.request_id)
    assert decision.text is None
    assert decision.redactions is None
    assert decision.text_storage == policy
    expected_hash = hashlib.sha256(record.text.encode()).hexdigest() if policy == "hash" else None
    assert decision.text_sha256 == expected_hash
    # Without a stored text, keyword offsets stay those of the text as sent.
    assert [(k["start"], k["end"]) for k in decision.keywords] == [(22, 31), (35, 47)]


def test_list_decisions_filters_pages_and_counts(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    records = [
        make_record(
            created_at=T0 + timedelta(hours=hour),
            department="avfall" if hour % 3 == 0 else "gata_park",
            needs_review=hour % 2 == 0,
        )
        for hour in range(12)
    ]
    store_decisions(audit_engine, *records)
    with Session(audit_engine) as session:
        everything, total = list_decisions(session, limit=5)
        assert total == 12
        assert [d.created_at for d in everything] == [r.created_at for r in records[::-1][:5]]
        window, total = list_decisions(session, since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=8))
        assert total == 6
        assert {d.id for d in window} == {r.request_id for r in records[2:8]}
        # A timestamp in another zone means the same instant.
        stockholm = T0.astimezone(timezone(timedelta(hours=1)))
        _, total = list_decisions(session, since=stockholm + timedelta(hours=10))
        assert total == 2
        waste, total = list_decisions(session, department="avfall", needs_review=True)
        assert total == 2  # hours 0 and 6
        assert all(d.department == "avfall" and d.needs_review for d in waste)
        second_page, total = list_decisions(session, needs_review=False, limit=4, offset=4)
        assert total == 6
        assert [d.id for d in second_page] == [r.request_id for r in records[::-1] if not r.needs_review][4:]


def test_get_decision_of_an_unknown_request_id_raises(audit_engine: Engine) -> None:
    with Session(audit_engine) as session, pytest.raises(DecisionNotFound):
        get_decision(session, request_id="no-such-request")


def test_feedback_is_linked_and_its_keywords_move_onto_the_stored_text(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    record = make_record()
    store_decisions(audit_engine, record)
    with Session(audit_engine) as session:
        # Offsets as /v1/classify gave them: "070-123 45 67" (personal data) and "Storgatan 12".
        stored = review(
            session,
            record.request_id,
            department="avfall",
            keywords=[{"start": 35, "end": 47, "type": "PLATS"}, {"start": 5, "end": 18, "type": "OBJEKT"}],
            reviewer="handläggare 7",
        )
        session.commit()
        decision = get_decision(session, request_id=record.request_id)
        assert [f.id for f in decision.feedback] == [stored.id]
        spans = [decision.text[k["start"] : k["end"]] for k in stored.keywords or []]
        assert spans == ["[TELEFON]", "Storgatan 12"]
        assert stored.reviewer == "handläggare 7"
        assert stored.sentiment is None


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"department": "brandkaren"}, InvalidFeedback, "department 'brandkaren' is not a label"),
        ({"keywords": [{"start": 0, "end": 500, "type": "PLATS"}]}, FeedbackConflict, "outside the text"),
        ({"keywords": [{"start": 0, "end": 4, "type": "PERSON"}]}, InvalidFeedback, "keyword type 'PERSON'"),
        (
            {"keywords": [{"start": 0, "end": 10, "type": "PLATS"}, {"start": 5, "end": 12, "type": "PLATS"}]},
            FeedbackConflict,
            "overlaps",
        ),
    ],
)
def test_invalid_feedback_is_refused(
    audit_engine: Engine,
    make_record: Callable[..., DecisionRecord],
    fields: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    record = make_record()
    store_decisions(audit_engine, record)
    with Session(audit_engine) as session:
        with pytest.raises(error, match=message):
            review(session, record.request_id, **fields)
        with pytest.raises(DecisionNotFound):
            review(session, "no-such-request", department="avfall")


def test_reviewed_labels_take_corrections_and_confirmations_never_silent_predictions(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    corrected, confirmed, overridden = make_record(), make_record(), make_record()
    store_decisions(audit_engine, corrected, confirmed, overridden)
    with Session(audit_engine) as session:
        review(session, corrected.request_id, severity="hog")
        review(session, confirmed.request_id, reviewer="handläggare 7")
        review(session, overridden.request_id, reviewer="a")  # confirms everything...
        review(session, overridden.request_id, department="avfall")  # ...then only moves the department
        session.commit()
        labels = {
            record.request_id: reviewed_labels(get_decision(session, request_id=record.request_id))
            for record in (corrected, confirmed, overridden)
        }
    only_severity = labels[corrected.request_id]
    assert (only_severity.department, only_severity.sentiment, only_severity.severity) == (None, None, "hog")
    assert only_severity.keywords is None
    everything = labels[confirmed.request_id]
    assert (everything.department, everything.sentiment, everything.severity) == ("gata_park", "neutral", "medel")
    assert everything.keywords == [
        {"start": 18, "end": 27, "type": "OBJEKT"},
        {"start": 31, "end": 43, "type": "PLATS"},
    ]
    # The latest feedback is the one in force: the earlier confirmation is history.
    assert labels[overridden.request_id].department == "avfall"
    assert labels[overridden.request_id].severity is None


def test_keyword_labels_over_personal_data_become_unknown(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    # The model tagged part of the phone number: confirmed, that span would cover "[TELEFON]".
    record = make_record(keywords=[{"text": "070-123", "type": "PLATS", "start": 5, "end": 12, "score": 0.4}])
    store_decisions(audit_engine, record)
    with Session(audit_engine) as session:
        review(session, record.request_id)
        session.commit()
        labels = reviewed_labels(get_decision(session, request_id=record.request_id))
    assert labels.department == "gata_park"
    assert labels.keywords is None


def test_department_agreement_counts_the_latest_judgement_per_decision(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    park = [make_record(department="gata_park") for _ in range(4)]
    waste = make_record(department="avfall")
    unjudged = make_record(department="skola")
    store_decisions(audit_engine, *park, waste, unjudged)
    with Session(audit_engine) as session:
        review(session, park[0].request_id, department="gata_park")  # agrees
        review(session, park[1].request_id)  # confirms: agrees
        review(session, park[2].request_id, department="avfall")  # disagrees...
        review(session, park[2].request_id, department="gata_park")  # ...then agrees: the latest counts
        review(session, park[3].request_id, department="skola")  # disagrees, but then...
        review(session, park[3].request_id, severity="hog")  # ...the feedback in force judges no department
        review(session, waste.request_id, department="gata_park")
        review(session, unjudged.request_id, sentiment="negativ")
        session.commit()
        assert department_agreement(session) == {"gata_park": (3, 3), "avfall": (1, 0)}


def test_purge_removes_old_texts_and_keeps_rows_and_feedback(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    now = datetime.now(UTC)
    old = make_record(created_at=now - timedelta(days=40))
    old_hashed = make_record(created_at=now - timedelta(days=40))
    recent = make_record(created_at=now - timedelta(days=5))
    store_decisions(audit_engine, old, recent)
    store_decisions(audit_engine, old_hashed, text_storage="hash")
    with Session(audit_engine) as session:
        review(session, old.request_id, department="avfall")
        session.commit()
        assert purge_texts(session, older_than=now - timedelta(days=30), now=now) == 2
        session.commit()
        assert purge_texts(session, older_than=now - timedelta(days=30), now=now) == 0
        purged = get_decision(session, request_id=old.request_id)
        assert (purged.text, purged.text_purged_at) == (None, now)
        assert purged.department == "gata_park" and len(purged.feedback) == 1
        assert get_decision(session, request_id=old_hashed.request_id).text_sha256 is None
        kept = get_decision(session, request_id=recent.request_id)
        assert kept.text is not None and kept.text_purged_at is None
        assert session.scalar(select(func.count()).select_from(Decision)) == 3
        # Purged decisions with feedback are skipped by the export, not dropped silently.
        examples = {example.request_id: example for example in reviewed_examples(session)}
        assert examples[old.request_id].text is None
