"""`kommunrouter classify FILE`: the service's answers for a whole file, resumable, bad rows reported in place."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import app.bulk
from app.bulk import classify_file, csv_columns
from app.cli import cli
from app.config import Settings
from app.errors import DataError
from tests.app.conftest import CLASSIFY_HEADERS
from tests.conftest import fixture_texts

TEXTS = fixture_texts()[:24]


def write_csv(path: Path, rows: list[list[str]], *, encoding: str = "cp1252", delimiter: str = ";") -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle, delimiter=delimiter, lineterminator="\r\n").writerows([["Ärendenr", "Beskrivning"], *rows])
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_results(ours: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    """Same rows in the same order with the same labels; scores may differ in the last digits, because a window
    that starts elsewhere batches the texts differently."""
    assert [(r["line"], r["id"]) for r in ours] == [(r["line"], r["id"]) for r in reference]
    for a, b in zip(ours, reference, strict=True):
        for task in ("department", "sentiment", "severity"):
            assert a[task]["label"] == b[task]["label"]
            assert a[task]["score"] == pytest.approx(b[task]["score"], abs=1e-6)
        assert [(k["start"], k["end"], k["type"]) for k in a["keywords"]] == [
            (k["start"], k["end"], k["type"]) for k in b["keywords"]
        ]


def run(settings: Settings, source: Path, out: Path, **options: Any) -> app.bulk.BulkSummary:
    values: dict[str, Any] = {"text_column": "Beskrivning", "id_column": "Ärendenr", "progress": False}
    return classify_file(source, out=out, settings=settings, **(values | options))


@pytest.mark.anyio
async def test_classify_gives_exactly_the_apis_answers(
    tmp_path: Path, settings: Settings, client: httpx.AsyncClient
) -> None:
    source = write_csv(tmp_path / "arkiv.csv", [[f"KS-{i}", text] for i, text in enumerate(TEXTS)])
    summary = run(settings, source, tmp_path / "out.jsonl")
    assert summary.classified == len(TEXTS) and not summary.errors
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["line"], r["id"]) for r in records] == [(i + 2, f"KS-{i}") for i in range(len(TEXTS))]

    # The same texts in one batch request share one model pass, as they do in a window of the file.
    response = await client.post(
        "/v1/classify/batch", json={"items": [{"text": text} for text in TEXTS]}, headers=CLASSIFY_HEADERS
    )
    answers = [
        {key: value for key, value in result.items() if key not in ("request_id", "latency_ms")}
        for result in response.json()["results"]
    ]
    assert [{key: value for key, value in r.items() if key not in ("line", "id")} for r in records] == answers
    assert {"department", "routed_to", "needs_review", "sentiment", "severity", "keywords", "language"} <= set(
        answers[0]
    )
    assert answers[0]["model_version"] == "tiny-test" and answers[0]["department"]["alternatives"]


def test_resumes_after_an_interruption_without_duplicating_rows(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_csv(tmp_path / "arkiv.csv", [[f"KS-{i}", text] for i, text in enumerate(TEXTS)])
    reference = tmp_path / "reference.jsonl"
    run(settings, source, reference, window=5)

    original = app.bulk.classify_rows
    calls = 0

    def interrupted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(app.bulk, "classify_rows", interrupted)
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run(settings, source, out, window=5)
    assert len(read_jsonl(out)) == 10  # two windows written before the stop
    monkeypatch.setattr(app.bulk, "classify_rows", original)
    # A crash in the middle of a write leaves a cut-off record: it is removed and that row done again.
    content = out.read_bytes()
    out.write_bytes(content[: len(content) - 40])

    summary = run(settings, source, out, window=5)
    assert summary.already_done == 9 and summary.classified == len(TEXTS) - 9
    assert_same_results(read_jsonl(out), read_jsonl(reference))
    again = run(settings, source, out, window=5)
    assert again.classified == 0 and again.already_done == len(TEXTS)
    assert_same_results(read_jsonl(out), read_jsonl(reference))


def test_bad_rows_are_reported_with_their_line_in_place(tmp_path: Path, make_settings: Any) -> None:
    source = tmp_path / "arkiv.csv"
    source.write_bytes(
        "Ärendenr;Beskrivning\r\n"
        "A1;Gatlampan på Storgatan är trasig\r\n"
        "A2;   \r\n"
        "\r\n"
        "A3;Trasig \x01 skylt\r\n"
        "A4\r\n".encode("cp1252")
        + "A5;Bänken i Näsby är sönder\r\n".encode()
        + f"A6;{'lång text ' * 30}\r\n".encode("cp1252")
        + "A7;Soptunnan på Ängsvägen\r\n".encode("cp1252")
    )
    summary = run(make_settings(max_text_chars=200), source, tmp_path / "out.jsonl")
    assert summary.classified == 2 and summary.empty_rows == 1
    assert summary.errors == {
        "empty_text": 1,
        "invalid_text": 1,
        "missing_column": 1,
        "bad_encoding": 1,
        "text_too_long": 1,
    }
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["line"], r["id"], r.get("error", {}).get("code")) for r in records] == [
        (2, "A1", None),
        (3, "A2", "empty_text"),
        (5, "A3", "invalid_text"),
        (6, "A4", "missing_column"),
        (7, "A5", "bad_encoding"),
        (8, "A6", "text_too_long"),
        (9, "A7", None),
    ]
    assert "line 7: the line is UTF-8 in a file read as Windows-1252" in records[4]["error"]["message"]
    assert "5 bad rows written as errors" in summary.describe() and "lines 3, 5, 6, 7, 8" in summary.describe()


def test_excel_and_jsonl_inputs_and_csv_output(tmp_path: Path, settings: Settings) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Ärendenr", "Beskrivning"])
    for i, text in enumerate(TEXTS[:6]):
        sheet.append([1000 + i, text])
    book.save(tmp_path / "arkiv.xlsx")
    run(settings, tmp_path / "arkiv.xlsx", tmp_path / "from_excel.jsonl")
    jsonl = tmp_path / "arkiv.jsonl"
    lines = [json.dumps({"Ärendenr": 1000 + i, "Beskrivning": text}) for i, text in enumerate(TEXTS[:6])]
    jsonl.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n", encoding="utf-8")
    summary = run(settings, jsonl, tmp_path / "out.csv")
    assert summary.errors == {"invalid_json": 1}

    from_excel = read_jsonl(tmp_path / "from_excel.jsonl")
    assert [r["id"] for r in from_excel] == [str(1000 + i) for i in range(6)]
    with (tmp_path / "out.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == csv_columns()
    assert rows[3]["line"] == "4" and rows[3]["error.code"] == "invalid_json"
    classified = [row for row in rows if not row["error.code"]]
    assert [row["id"] for row in classified] == [r["id"] for r in from_excel]
    for row, record in zip(classified, from_excel, strict=True):
        assert row["department.label"] == record["department"]["label"]
        assert float(row["department.score"]) == record["department"]["score"]
        assert json.loads(row["keywords"]) == record["keywords"]


@pytest.mark.slow
def test_workers_give_the_same_results_in_the_same_order(tmp_path: Path, settings: Settings) -> None:
    source = write_csv(tmp_path / "arkiv.csv", [[f"KS-{i}", text] for i, text in enumerate(TEXTS)])
    run(settings, source, tmp_path / "one.jsonl", window=4)
    summary = run(settings, source, tmp_path / "two.jsonl", window=4, workers=2)
    assert summary.classified == len(TEXTS)
    assert_same_results(read_jsonl(tmp_path / "two.jsonl"), read_jsonl(tmp_path / "one.jsonl"))


def test_refuses_to_mix_results_of_another_model_or_other_keys(tmp_path: Path, settings: Settings) -> None:
    source = write_csv(tmp_path / "arkiv.csv", [[f"KS-{i}", text] for i, text in enumerate(TEXTS[:3])])
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"line": 2, "id": "KS-0", "model_version": "older"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds results of model older, this is tiny-test"):
        run(settings, source, out)
    out.write_text(json.dumps({"line": 2, "id": None, "model_version": "tiny-test"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="written without --id-column"):
        run(settings, source, out)
    out.write_text("Ärendenr;Beskrivning\n", encoding="utf-8")
    with pytest.raises(DataError, match="out.jsonl:1: not JSON .*not an output of kommunrouter classify"):
        run(settings, source, out)
    with pytest.raises(DataError, match="no column 'Text' .*columns: Ärendenr, Beskrivning"):
        run(settings, source, tmp_path / "x.jsonl", text_column="Text")


def test_cli_classify(tmp_path: Path, settings: Settings) -> None:
    source = write_csv(tmp_path / "arkiv.csv", [[f"KS-{i}", text] for i, text in enumerate(TEXTS[:4])])
    out = tmp_path / "out.csv"
    arguments = ["classify", str(source), "--text-column", "Beskrivning", "--out", str(out), "--no-progress"]
    arguments += ["--model", str(settings.model_dir)]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    assert "read arkiv.csv as CSV, encoding Windows-1252 (detected" in result.output
    assert "classified 4 reports" in result.output
    result = CliRunner().invoke(cli, arguments)
    assert "classified 0 reports" in result.output and "4 rows already in out.csv skipped" in result.output
    with out.open(encoding="utf-8-sig", newline="") as handle:
        assert [row["line"] for row in csv.DictReader(handle, delimiter=";")] == ["2", "3", "4", "5"]
