"""`kommunrouter feedback export` and `kommunrouter audit purge`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.audit.models import Decision
from app.audit.repository import DecisionRecord
from app.cli import cli
from app.errors import ConfigurationError
from tests.app.conftest import BOTH_DATABASES, review, store_decisions
from training.data import load_taxonomy, validate_files

pytestmark = BOTH_DATABASES

TAXONOMY = Path(__file__).parents[2] / "data" / "taxonomy.json"


def test_feedback_export_writes_reviewed_labels_in_the_training_format(
    tmp_path: Path,
    database_url: str,
    audit_engine: Engine,
    make_record: Callable[..., DecisionRecord],
    process_database_url: Callable[[str], None],
) -> None:
    sent = "Ring 070-123 45 67: brunnslocket på Ängsvägen {} saknas, det är farligt."
    texts = [sent.format(number) for number in range(5)]
    place = texts[0].index("Ängsvägen")
    keywords = [{"text": "brunnslocket", "type": "OBJEKT", "start": 20, "end": 32, "score": 0.8}]
    corrected, confirmed, severity_only, hashed, unreviewed = (
        make_record(text=text, created_at=datetime(2024, 1, 1 + number, tzinfo=UTC), keywords=keywords)
        for number, text in enumerate(texts)
    )
    store_decisions(audit_engine, corrected, confirmed, severity_only, unreviewed)
    store_decisions(audit_engine, hashed, text_storage="hash")
    with Session(audit_engine) as session, session.begin():
        review(
            session,
            corrected.request_id,
            department="vatten_avlopp",
            keywords=[{"start": 20, "end": 32, "type": "OBJEKT"}, {"start": place, "end": place + 11, "type": "PLATS"}],
        )
        review(session, confirmed.request_id, reviewer="handläggare 3")
        review(session, severity_only.request_id, severity="akut")
        review(session, hashed.request_id, department="avfall")

    process_database_url(database_url)
    out = tmp_path / "feedback.jsonl"
    result = CliRunner().invoke(cli, ["feedback", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 reviewed reports" in result.output
    assert "skipped 1 reviewed decisions without a stored text" in result.output

    reports = {line["id"]: line for line in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert list(reports) == [corrected.request_id, confirmed.request_id, severity_only.request_id]
    first = reports[corrected.request_id]
    assert first["text"] == "Ring [TELEFON]: brunnslocket på Ängsvägen 0 saknas, det är farligt."
    assert (first["department"], first["sentiment"], first["severity"], first["source"]) == (
        "vatten_avlopp",
        None,
        None,
        "feedback",
    )
    # The offsets moved with the redaction before them.
    assert [first["text"][k["start"] : k["end"]] for k in first["keywords"]] == ["brunnslocket", "Ängsvägen 0"]
    second = reports[confirmed.request_id]
    assert (second["department"], second["sentiment"], second["severity"]) == ("gata_park", "neutral", "medel")
    assert [second["text"][k["start"] : k["end"]] for k in second["keywords"]] == ["brunnslocket"]
    third = reports[severity_only.request_id]
    assert (third["department"], third["severity"], third["keywords"]) == (None, "akut", None)
    # Ready to merge: the data validator accepts the file.
    validation = validate_files([out], load_taxonomy(TAXONOMY))
    assert validation.errors == [] and validation.duplicates == []


def test_feedback_export_texts_only_writes_every_stored_text_without_labels(
    tmp_path: Path,
    database_url: str,
    audit_engine: Engine,
    make_record: Callable[..., DecisionRecord],
    process_database_url: Callable[[str], None],
) -> None:
    texts = [f"Ring 070-123 45 67: soptunnan på Björkvägen {number} har inte tömts." for number in range(3)]
    stored, reviewed, hashed = (
        make_record(text=text, created_at=datetime(2024, 2, 1 + day, tzinfo=UTC)) for day, text in enumerate(texts)
    )
    store_decisions(audit_engine, stored, reviewed)
    store_decisions(audit_engine, hashed, text_storage="hash")
    with Session(audit_engine) as session, session.begin():
        review(session, reviewed.request_id, department="avfall")

    process_database_url(database_url)
    out = tmp_path / "unlabelled.jsonl"
    result = CliRunner().invoke(cli, ["feedback", "export", "--texts-only", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 stored texts without labels" in result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # reviewed or not, oldest first; the hashed decision has no text; labels are never exported
    assert [row["id"] for row in rows] == [stored.request_id, reviewed.request_id]
    assert all(
        (row["department"], row["sentiment"], row["severity"], row["keywords"], row["source"])
        == (None, None, None, None, "audit_log")
        for row in rows
    )
    assert rows[0]["text"] == "Ring [TELEFON]: soptunnan på Björkvägen 0 har inte tömts."
    from training.unlabelled import read_texts

    assert read_texts(out) == [row["text"] for row in rows]
    assert validate_files([out], load_taxonomy(TAXONOMY)).errors == []


def test_audit_purge_removes_old_texts_from_the_rows_and_the_database_file(
    database_url: str,
    audit_engine: Engine,
    make_record: Callable[..., DecisionRecord],
    process_database_url: Callable[[str], None],
) -> None:
    now = datetime.now(UTC)
    # One long text: SQLite keeps it in overflow pages, which must not keep it once freed either.
    texts = [f"Gammal anmälan nummer {n} om Kvarnbacken. " * (1 + 300 * (n == 0)) for n in range(3)]
    old = [make_record(text=text, keywords=[], created_at=now - timedelta(days=45)) for text in texts]
    recent = make_record(text="Ny anmälan om Lindallén", created_at=now - timedelta(days=2))
    store_decisions(audit_engine, *old, recent)
    with Session(audit_engine) as session, session.begin():
        review(session, old[0].request_id, department="avfall")

    process_database_url(database_url)
    result = CliRunner().invoke(cli, ["audit", "purge", "--older-than", "30"])
    assert result.exit_code == 0, result.output
    assert "removed the stored text of 3 decisions older than 30 days" in result.output

    with Session(audit_engine) as session:
        decisions = {decision.id: decision for decision in session.query(Decision)}
        assert len(decisions) == 4
        assert all(decisions[r.request_id].text is None for r in old)
        assert all(decisions[r.request_id].text_purged_at is not None for r in old)
        assert len(decisions[old[0].request_id].feedback) == 1
        assert decisions[recent.request_id].text == "Ny anmälan om Lindallén"
    if database_url.startswith("sqlite"):
        database_file = Path(make_url(database_url).database or "")
        raw = b"".join(path.read_bytes() for path in database_file.parent.glob(database_file.name + "*"))
        assert b"Kvarnbacken" not in raw
        assert "Lindallén".encode() in raw


def test_audit_purge_takes_the_retention_setting_and_needs_a_period(
    database_url: str, process_database_url: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    process_database_url(database_url)
    without = CliRunner().invoke(cli, ["audit", "purge"])
    assert isinstance(without.exception, ConfigurationError)
    monkeypatch.setenv("KOMMUNROUTER_RETENTION_DAYS", "365")
    process_database_url(database_url)
    with_setting = CliRunner().invoke(cli, ["audit", "purge"])
    assert with_setting.exit_code == 0, with_setting.output
    assert "older than 365 days" in with_setting.output


def test_feedback_export_says_what_it_needs_where_the_training_package_is_missing(
    tmp_path: Path, database_url: str, process_database_url: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    process_database_url(database_url)
    monkeypatch.setitem(sys.modules, "training.data", None)  # as in the service image, which ships app/ only
    result = CliRunner().invoke(cli, ["feedback", "export", "--out", str(tmp_path / "out.jsonl")])
    assert isinstance(result.exception, ConfigurationError)
    assert "training package" in str(result.exception)
