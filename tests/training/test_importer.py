"""`kommunrouter data import`: good rows in, bad rows counted and written to the rejects file, never dropped."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from app.cli import cli
from app.errors import DataError
from training.data import load_reports, load_taxonomy
from training.importer import import_table, load_mapping

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
    summary = run_import(tmp_path, source, mappings={"department": load_mapping(mapping)}, id_column="Ärende")
    assert summary.imported == 2
    assert summary.rejected == {"empty text": 1, "unknown department 'Okänd nämnd'": 1, "bad encoding": 1}
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
    with pytest.raises(DataError, match="no column 'Beskrivning' .*columns: Text, Avdelning"):
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


def invoke_import(tmp_path: Path, source: Path, *options: str) -> Result:
    arguments = ["data", "import", str(source), "--text-column", "Beskrivning", "--department-column", "Förvaltning"]
    result = CliRunner().invoke(cli, [*arguments, *options, "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 0, result.output
    return result


def test_cli_prints_the_summary(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("Beskrivning,Förvaltning\nGropen på Ågatan,gata_park\n,gata_park\n", encoding="utf-8")
    result = invoke_import(tmp_path, source)
    assert "imported 1 reports" in result.output and "empty text: 1" in result.output
    assert (tmp_path / "o.rejects.jsonl").read_text().count("\n") == 1


# --- what Excel and case systems write ------------------------------------------------------------------------

SWEDISH_HEADER = ["Ärendenr", "Beskrivning", "Förvaltning"]
SWEDISH_ROWS = [
    ["KS-1", "Gatlampan på Storgatan är trasig, det är becksvart.", "gata_park"],
    ["KS-2", 'Soptunnan på Ängsvägen tömdes inte; "igen"!\nÅÄÖ åäö é ü', "avfall"],
    ["KS-3", "Vattnet i Östra Ödeborg är brunt – och luktar illa. Kostar 250 €?", "vatten_avlopp"],
    ["KS-4", "Tack för snöröjningen\tpå cykelbanan vid Åbyskolan!", "gata_park"],
]
# Latin-1 has neither the dash nor the euro sign.
LATIN1_ROWS = [[cell.replace("–", "-").replace("€", "kr") for cell in row] for row in SWEDISH_ROWS]


def csv_bytes(rows: list[list[str]], *, delimiter: str, encoding: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows([SWEDISH_HEADER, *rows])
    return buffer.getvalue().encode(encoding)


@pytest.mark.parametrize(
    ("encoding", "delimiter", "suffix", "rows", "shown"),
    [
        ("cp1252", ";", ".csv", SWEDISH_ROWS, "encoding Windows-1252 (detected"),  # Excel: CSV (semikolonavgränsad)
        ("utf-8-sig", ";", ".csv", SWEDISH_ROWS, "encoding UTF-8 with BOM (from its byte-order mark"),  # CSV UTF-8
        ("utf-16", "\t", ".txt", SWEDISH_ROWS, "encoding UTF-16 (from its byte-order mark"),  # Excel: Unicode-text
        ("utf-8", ",", ".csv", SWEDISH_ROWS, "encoding UTF-8 (detected"),
        ("latin-1", "|", ".csv", LATIN1_ROWS, "encoding Windows-1252 (detected"),
    ],
)
def test_each_encoding_imports_every_character(
    tmp_path: Path, encoding: str, delimiter: str, suffix: str, rows: list[list[str]], shown: str
) -> None:
    source = tmp_path / f"export{suffix}"
    source.write_bytes(csv_bytes(rows, delimiter=delimiter, encoding=encoding))
    summary = run_import(tmp_path, source, id_column="Ärendenr")
    assert shown in summary.read_as
    delimiter_name = {"\t": "tab"}.get(delimiter, f"'{delimiter}'")
    assert f"delimiter {delimiter_name} (detected" in summary.read_as
    assert "columns: Ärendenr, Beskrivning, Förvaltning" in summary.read_as
    assert summary.rejected == {}
    reports = load_reports(tmp_path / "out.jsonl", TAXONOMY)
    assert [(r.id, r.text, r.department) for r in reports] == [tuple(row) for row in rows]


def test_excel_workbook_with_swedish_columns_imports_every_character(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [SWEDISH_HEADER, *SWEDISH_ROWS]:
        sheet.append(row)
    sheet.append([1234, "Numeriskt ärendenummer från Excel", "bygg"])
    book.save(tmp_path / "export.xlsx")
    summary = run_import(tmp_path, tmp_path / "export.xlsx", id_column="Ärendenr")
    assert summary.rejected == {}
    reports = load_reports(tmp_path / "out.jsonl", TAXONOMY)
    assert [(r.id, r.text, r.department) for r in reports] == [
        *(tuple(row) for row in SWEDISH_ROWS),
        ("1234", "Numeriskt ärendenummer från Excel", "bygg"),
    ]


def read_rejects(tmp_path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def test_mixed_encodings_reject_the_foreign_lines_and_store_no_mangled_character(tmp_path: Path) -> None:
    # A Windows-1252 export that someone appended a UTF-8 line to, and a UTF-8 export with a Windows-1252 line.
    windows = tmp_path / "windows.csv"
    windows.write_bytes(
        csv_bytes(SWEDISH_ROWS, delimiter=";", encoding="cp1252")
        + "KS-5;Bänken i Näsby är sönder;gata_park\r\n".encode()
    )
    summary = run_import(tmp_path, windows, id_column="Ärendenr")
    assert "Windows-1252" in summary.read_as
    assert summary.imported == 4 and summary.rejected == {"bad encoding": 1}
    (rejected,) = read_rejects(tmp_path)
    assert rejected["line"] == 7
    assert "line 7: the line is UTF-8 in a file read as Windows-1252 (mixed encodings" in rejected["detail"]
    assert "--encoding" in rejected["detail"]
    assert rejected["row"] == ["KS-5", "B\\xc3\\xa4nken i N\\xc3\\xa4sby \\xc3\\xa4r s\\xc3\\xb6nder", "gata_park"]

    utf8 = tmp_path / "utf8.csv"
    utf8.write_bytes(
        csv_bytes(SWEDISH_ROWS, delimiter=";", encoding="utf-8")
        + "KS-5;Bänken i Näsby är sönder;gata_park\r\n".encode("cp1252")
    )
    summary = run_import(tmp_path, utf8, id_column="Ärendenr")
    assert "encoding UTF-8 (detected" in summary.read_as
    assert summary.imported == 4 and summary.rejected == {"bad encoding": 1}
    (rejected,) = read_rejects(tmp_path)
    assert rejected["line"] == 7 and "line 7: bytes e4 are not UTF-8" in rejected["detail"]
    assert rejected["row"][1] == "B\\xe4nken i N\\xe4sby \\xe4r s\\xf6nder"
    for report in load_reports(tmp_path / "out.jsonl", TAXONOMY):
        assert "Ã" not in report.text and not any("\ud800" <= char <= "\udfff" for char in report.text)


def test_a_header_the_given_encoding_cannot_read_is_an_error_naming_encoding(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(csv_bytes(SWEDISH_ROWS, delimiter=";", encoding="cp1252"))
    with pytest.raises(
        DataError, match=r"header \(line 1: \\xc4rendenr, .*give the file's encoding.*--encoding cp1252"
    ):
        run_import(tmp_path, source, encoding="utf-8")
    summary = run_import(tmp_path, source, encoding="cp1252", delimiter=";")
    assert "encoding Windows-1252 (given)" in summary.read_as and "delimiter ';' (given)" in summary.read_as
    assert summary.imported == len(SWEDISH_ROWS)


def test_missing_column_error_prints_swedish_column_names(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(csv_bytes(SWEDISH_ROWS, delimiter=";", encoding="cp1252"))
    with pytest.raises(DataError, match="no column 'Text' .*columns: Ärendenr, Beskrivning, Förvaltning"):
        import_table(source, taxonomy=TAXONOMY, text_column="Text", out=tmp_path / "o", rejects=tmp_path / "r")


def test_severity_and_sentiment_columns_with_value_mappings(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(
        "Nr;Text;Prioritet 1-4;Ton\r\n"
        "1;Vattenläcka på Storgatan, det sprutar;4;Negativ\r\n"
        "2;Gungan är lite sliten;1;neutral\r\n"
        "3;Tack för den fina parken;;Positiv\r\n"
        "4;Ej bedömt ärende;0;\r\n"
        "5;Felaktig prioritet;9;Negativ\r\n".encode("cp1252")
    )
    summary = import_table(
        source,
        taxonomy=TAXONOMY,
        text_column="Text",
        severity_column="Prioritet 1-4",
        sentiment_column="ton",  # column names match regardless of case
        id_column="Nr",
        mappings={"severity": load_mapping("1=lag,2=medel,3=hog,4=akut,0=null")},
        out=tmp_path / "out.jsonl",
        rejects=tmp_path / "rejects.jsonl",
    )
    assert summary.rejected == {"unknown severity '9'": 1}
    assert summary.labelled == {"severity": 2, "sentiment": 3}
    reports = load_reports(tmp_path / "out.jsonl", TAXONOMY)
    assert [(r.id, r.department, r.severity, r.sentiment) for r in reports] == [
        ("1", None, "akut", "negativ"),
        ("2", None, "lag", "neutral"),
        ("3", None, None, "positiv"),
        ("4", None, None, None),
    ]


def test_a_mapping_onto_labels_outside_the_taxonomy_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("Text;Prioritet\nHej;1\n", encoding="utf-8")
    with pytest.raises(DataError, match="severity mapping names labels that are not in the taxonomy: high"):
        import_table(
            source,
            taxonomy=TAXONOMY,
            text_column="Text",
            severity_column="Prioritet",
            mappings={"severity": load_mapping("1=high")},
            out=tmp_path / "o.jsonl",
            rejects=tmp_path / "r.jsonl",
        )


def test_cli_says_what_it_detected(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(csv_bytes(SWEDISH_ROWS, delimiter=";", encoding="cp1252"))
    result = invoke_import(tmp_path, source, "--severity-mapping", "1=lag")
    first, second = result.output.splitlines()[:2]
    assert first.startswith("read export.csv as CSV, encoding Windows-1252 (detected; --encoding to override)")
    assert "imported 4 reports" in second and "labelled: department 4" in second
