"""`kommunrouter data import`: good rows in, bad rows counted and written to the rejects file, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.errors import DataError
from training.data import load_reports, load_taxonomy
from training.importer import import_table

TAXONOMY = load_taxonomy(Path(__file__).parents[2] / "data" / "taxonomy.json")


def run_import(tmp_path: Path, source: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    return import_table(
        source,
        taxonomy=TAXONOMY,
        text_column="Beskrivning",
        department_column="Förvaltning",
        out=tmp_path / "out.jsonl",
        rejects=tmp_path / "rejects.jsonl",
        **kwargs,  # type: ignore[arg-type]
    )


def test_csv_with_mapping_unknown_labels_empty_texts_and_bad_encoding(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    rows = [
        "Ärende;Beskrivning;Förvaltning",
        "A1;Gatlampan på Storgatan är trasig;Gatukontoret",
        'A2;"Soptunnan tömdes inte,\nigen!";Renhållning',
        "A3;   ;Gatukontoret",
        "A4;Konstig fråga;Okänd nämnd",
    ]
    content = ("\n".join(rows) + "\n").encode("utf-8") + "A5;Vattnet är brunt;VA\n".encode("latin-1")
    source.write_bytes(content)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"Gatukontoret": "gata_park", "Renhållning": "avfall", "VA": "vatten_avlopp"}))
    summary = run_import(tmp_path, source, mapping_path=mapping, id_column="Ärende")
    assert summary.imported == 2
    assert summary.rejected == {"empty text": 1, "unknown department 'Okänd nämnd'": 1, "not UTF-8 (bad encoding)": 1}
    reports = load_reports(tmp_path / "out.jsonl", TAXONOMY)
    assert [(r.id, r.department, r.sentiment, r.keywords) for r in reports] == [
        ("A1", "gata_park", None, None),
        ("A2", "avfall", None, None),
    ]
    assert reports[1].text == "Soptunnan tömdes inte,\nigen!"
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [5, 6, 7]


def test_missing_column_names_the_columns(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("Text,Avdelning\nhej,gata_park\n", encoding="utf-8")
    with pytest.raises(DataError, match="no column 'Beskrivning' .*Text, Avdelning"):
        run_import(tmp_path, source)


def test_broken_csv_is_an_error_with_the_line(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text('Beskrivning,Förvaltning\n"ok",gata_park\n"unterminated\0,x\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"export.csv:\d+: broken CSV"):
        run_import(tmp_path, source)


def test_excel_export(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Beskrivning", "Förvaltning"])
    sheet.append(["Gungan i parken är trasig", "gata_park"])
    sheet.append([None, "gata_park"])
    book.save(tmp_path / "export.xlsx")
    summary = run_import(tmp_path, tmp_path / "export.xlsx")
    assert summary.imported == 1
    assert summary.rejected == {"empty text": 1}


def test_cli_prints_the_summary(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("Beskrivning,Förvaltning\nGropen på Ågatan,gata_park\n,gata_park\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "data",
            "import",
            str(source),
            "--text-column",
            "Beskrivning",
            "--department-column",
            "Förvaltning",
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "imported 1 reports" in result.output and "empty text: 1" in result.output
    assert (tmp_path / "o.rejects.jsonl").read_text().count("\n") == 1
