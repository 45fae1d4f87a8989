"""The staff pages' queries (app/audit/insights.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.audit.insights import daily_counts, insights, review_queue, top_keywords, utc_offset_segments
from app.audit.repository import DecisionRecord
from tests.app.conftest import BOTH_DATABASES, review, store_decisions

STOCKHOLM = ZoneInfo("Europe/Stockholm")
MOST_SEVERE_FIRST = ["akut", "hog", "medel", "lag"]
T0 = datetime(2026, 6, 1, 8, tzinfo=UTC)


@BOTH_DATABASES
def test_the_queue_holds_open_decisions_most_severe_first_then_oldest(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    def open_decision(severity: str, minutes: int, **fields: object) -> DecisionRecord:
        return make_record(severity=severity, created_at=T0 + timedelta(minutes=minutes), needs_review=True, **fields)

    medel_old, medel_new = open_decision("medel", 0), open_decision("medel", 50)
    akut_new, akut_old = open_decision("akut", 40), open_decision("akut", 10)
    hog = open_decision("hog", 5, department="vatten_avlopp")
    lag = open_decision("lag", 1)
    confident = make_record(severity="akut", created_at=T0, needs_review=False)
    reviewed = open_decision("akut", 2)
    store_decisions(audit_engine, medel_old, medel_new, akut_new, akut_old, hog, lag, confident, reviewed)
    with Session(audit_engine) as session, session.begin():
        review(session, reviewed.request_id, department="avfall")

    expected = [akut_old, akut_new, hog, medel_old, medel_new, lag]
    with Session(audit_engine) as session:
        whole = review_queue(session, severity_order=MOST_SEVERE_FIRST, limit=50)
        assert [d.id for d in whole.items] == [r.request_id for r in expected]
        assert whole.total == 6
        assert whole.by_severity == {"akut": 2, "hog": 1, "medel": 2, "lag": 1}
        # Pages cut across the severities in the same order.
        pages = [review_queue(session, severity_order=MOST_SEVERE_FIRST, limit=4, offset=o).items for o in (0, 4)]
        assert [d.id for page in pages for d in page] == [r.request_id for r in expected]
        assert [d.id for d in review_queue(session, severity_order=MOST_SEVERE_FIRST, offset=6).items] == []
        by_department = review_queue(session, severity_order=MOST_SEVERE_FIRST, department="vatten_avlopp")
        assert [d.id for d in by_department.items] == [hog.request_id]
        by_severity = review_queue(session, severity_order=MOST_SEVERE_FIRST, severity="medel")
        assert [d.id for d in by_severity.items] == [medel_old.request_id, medel_new.request_id]


@BOTH_DATABASES
def test_a_severity_the_model_no_longer_has_comes_last(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    old_label = make_record(severity="kritisk", created_at=T0, needs_review=True)
    lag = make_record(severity="lag", created_at=T0 + timedelta(hours=1), needs_review=True)
    store_decisions(audit_engine, old_label, lag)
    with Session(audit_engine) as session:
        queue = review_queue(session, severity_order=MOST_SEVERE_FIRST)
    assert [d.id for d in queue.items] == [lag.request_id, old_label.request_id]


def test_utc_offsets_of_a_period_split_at_the_daylight_saving_change() -> None:
    since = datetime(2026, 3, 28, tzinfo=UTC)
    segments = utc_offset_segments(STOCKHOLM, since, since + timedelta(days=3))
    assert segments == [(since, timedelta(hours=1)), (datetime(2026, 3, 29, 1, tzinfo=UTC), timedelta(hours=2))]
    assert utc_offset_segments(STOCKHOLM, T0, T0 + timedelta(days=3)) == [(T0, timedelta(hours=2))]


@BOTH_DATABASES
def test_days_are_the_staffs_local_days_with_review_and_agreement_counts(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    # 22:30 UTC is already the next day in Stockholm in summer (+2) and in winter (+1); 21:30 UTC in winter is not.
    summer_late = make_record(created_at=datetime(2026, 6, 1, 22, 30, tzinfo=UTC))
    winter_late = make_record(created_at=datetime(2026, 1, 10, 23, 30, tzinfo=UTC))
    winter_evening = make_record(created_at=datetime(2026, 1, 10, 22, 30, tzinfo=UTC), department="avfall")
    agreed = make_record(created_at=datetime(2026, 6, 2, 9, tzinfo=UTC))
    corrected = make_record(created_at=datetime(2026, 6, 2, 10, tzinfo=UTC))
    severity_only = make_record(created_at=datetime(2026, 6, 2, 11, tzinfo=UTC))
    outside = make_record(created_at=datetime(2026, 7, 1, tzinfo=UTC))
    store_decisions(audit_engine, summer_late, winter_late, winter_evening, agreed, corrected, severity_only, outside)
    with Session(audit_engine) as session, session.begin():
        review(session, agreed.request_id)
        review(session, corrected.request_id, department="avfall")
        review(session, severity_only.request_id, severity="akut")

    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 30, tzinfo=UTC)
    with Session(audit_engine) as session:
        rows = {(r.department, r.day): r for r in daily_counts(session, zone=STOCKHOLM, since=since, until=until)}
    assert set(rows) == {
        ("gata_park", date(2026, 6, 2)),
        ("gata_park", date(2026, 1, 11)),
        ("avfall", date(2026, 1, 10)),
    }
    june = rows["gata_park", date(2026, 6, 2)]
    assert (june.decisions, june.reviewed, june.judged, june.agreed) == (4, 3, 2, 1)
    assert rows["gata_park", date(2026, 1, 11)].decisions == 1


@BOTH_DATABASES
def test_top_keywords_count_the_stored_spans_per_department_and_type(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    def report(text: str, place: str, thing: str, department: str = "gata_park") -> DecisionRecord:
        keywords = [
            {"text": place, "type": "PLATS", "start": text.index(place), "end": text.index(place) + len(place)},
            {"text": thing, "type": "OBJEKT", "start": text.index(thing), "end": text.index(thing) + len(thing)},
        ]
        keywords = [k | {"score": 0.9} for k in keywords]
        return make_record(text=text, keywords=keywords, department=department, created_at=T0)

    store_decisions(
        audit_engine,
        report("Gatlampan på Storgatan är trasig.", "Storgatan", "Gatlampan"),
        report("En gatlampa på storgatan lyser inte, ring 070-123 45 67.", "storgatan", "gatlampa"),
        report("Hål i asfalten på Kungsgatan.", "Kungsgatan", "asfalten"),
        report("Soptunnan på Storgatan är full.", "Storgatan", "Soptunnan", department="avfall"),
    )
    with Session(audit_engine) as session:
        top = top_keywords(session, since=T0, until=T0 + timedelta(days=1))
        everything = insights(session, zone=STOCKHOLM, since=T0, until=T0 + timedelta(days=1))
    assert top["gata_park"]["PLATS"] == [("Storgatan", 2), ("Kungsgatan", 1)]
    assert top["gata_park"]["OBJEKT"][0][1] == 1
    assert top["avfall"] == {"PLATS": [("Storgatan", 1)], "OBJEKT": [("Soptunnan", 1)]}
    assert everything.top_keywords == top
    assert everything.sentiment_mix == {"gata_park": {"neutral": 3}, "avfall": {"neutral": 1}}
    assert everything.severity_mix["gata_park"] == {"medel": 3}


@pytest.mark.parametrize("hours", [1, 24 * 400])
def test_segments_cover_the_whole_period(hours: int) -> None:
    since = datetime(2025, 1, 1, tzinfo=UTC)
    segments = utc_offset_segments(STOCKHOLM, since, since + timedelta(hours=hours))
    assert segments[0][0] == since
    assert all(a[0] < b[0] and a[1] != b[1] for a, b in zip(segments, segments[1:], strict=False))


@BOTH_DATABASES
def test_keywords_are_cut_out_of_the_stored_text_once_and_leave_with_it(
    database_url: str, audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    from sqlalchemy import insert, select

    from app.audit.database import downgrade_database, upgrade_database
    from app.audit.models import Decision, DecisionKeyword
    from app.audit.repository import decision_row, purge_texts

    old, new, hashed = (make_record(created_at=T0 - timedelta(days=days)) for days in (400, 1, 1))
    store_decisions(audit_engine, old, new)
    store_decisions(audit_engine, hashed, text_storage="hash")
    with Session(audit_engine) as session:
        rows = session.scalars(select(DecisionKeyword).order_by(DecisionKeyword.created_at)).all()
        # The stored text has "[TELEFON]" for the phone number: the spans are cut from it, not from the text sent.
        assert [(r.request_id, r.type, r.keyword) for r in rows] == [
            (old.request_id, "OBJEKT", "gatlampan"),
            (old.request_id, "PLATS", "Storgatan 12"),
            (new.request_id, "OBJEKT", "gatlampan"),
            (new.request_id, "PLATS", "Storgatan 12"),
        ]
    with Session(audit_engine) as session, session.begin():
        purge_texts(session, older_than=T0 - timedelta(days=365), now=T0)
    with Session(audit_engine) as session:
        assert {r.request_id for r in session.scalars(select(DecisionKeyword))} == {new.request_id}

    # A log from before the staff pages gets the keywords of its stored texts when it is migrated.
    downgrade_database(database_url, revision="0001")
    row = decision_row(make_record(created_at=T0), text_storage="redacted")
    row.pop("department_alternatives")
    row["metadata"] = row.pop("request_metadata")
    audit_engine.dispose()
    with audit_engine.begin() as connection:
        connection.execute(insert(Decision.__table__).values(**row))
    upgrade_database(database_url)
    with Session(audit_engine) as session:
        migrated = session.scalars(select(DecisionKeyword).where(DecisionKeyword.request_id == row["id"])).all()
        assert [(r.type, r.keyword, r.created_at) for r in migrated] == [
            ("OBJEKT", "gatlampan", T0),
            ("PLATS", "Storgatan 12", T0),
        ]
