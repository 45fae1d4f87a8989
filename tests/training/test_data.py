"""The data validator: schema, taxonomy, spans, duplicates, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import DataError
from training.data import find_duplicates, load_reports, load_taxonomy, normalise_text, validate_files

TAXONOMY = Path(__file__).parents[2] / "data" / "taxonomy.json"


def good(**changes: object) -> dict[str, object]:
    report: dict[str, object] = {
        "id": "r1",
        "text": "Gatlampan på Storgatan 12 är trasig sedan en vecka.",
        "department": "gata_park",
        "sentiment": "neutral",
        "severity": "medel",
        "keywords": [{"start": 0, "end": 9, "type": "OBJEKT"}, {"start": 13, "end": 25, "type": "PLATS"}],
        "source": "handwritten",
    }
    report.update(changes)
    return report


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def taxonomy():  # type: ignore[no-untyped-def]
    return load_taxonomy(TAXONOMY)


def test_a_valid_file_passes_and_counts_labels(tmp_path: Path, taxonomy) -> None:  # type: ignore[no-untyped-def]
    path = write(
        tmp_path / "a.jsonl",
        [
            good(),
            good(
                id="r2",
                text="Soptunnan tömdes inte i tisdags.",
                department="avfall",
                keywords=[{"start": 0, "end": 9, "type": "OBJEKT"}],
            ),
        ],
    )
    result = validate_files([path], taxonomy)
    assert result.ok, result.errors
    assert result.counts[str(path)]["department"] == {"gata_park": 1, "avfall": 1}
    assert result.counts[str(path)]["keywords"]["OBJEKT"] == 2


def test_unknown_labels_are_allowed_as_null(tmp_path: Path, taxonomy) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path / "a.jsonl", [good(sentiment=None, severity=None, keywords=None)])
    assert validate_files([path], taxonomy).ok
    assert load_reports(path, taxonomy)[0].keywords is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (good(department="gatukontoret"), "department 'gatukontoret' is not in the taxonomy"),
        (good(severity="kritisk"), "severity 'kritisk' is not in the taxonomy"),
        (good(keywords=[{"start": 40, "end": 90, "type": "PLATS"}]), "outside the text"),
        (good(keywords=[{"start": 1, "end": 9, "type": "OBJEKT"}]), "word boundaries"),
        (good(keywords=[{"start": 0, "end": 9, "type": "SAK"}]), "keyword type 'SAK'"),
        (
            good(keywords=[{"start": 0, "end": 9, "type": "OBJEKT"}, {"start": 3, "end": 12, "type": "PLATS"}]),
            "overlaps",
        ),
        (good(text="   "), "text must be a non-empty string"),
        (good(colour="red"), "unknown field 'colour'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, taxonomy, row: object, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write(
        tmp_path / "bad.jsonl", [good(id="ok", text="Ett helt annat ärende om vatten i källaren.", keywords=[]), row]
    )
    result = validate_files([path], taxonomy)
    assert not result.ok
    assert any(error.startswith(f"{path}:2: ") and message in error for error in result.errors), result.errors
    with pytest.raises(DataError, match=f"{path}:2: "):
        load_reports(path, taxonomy)


def test_exact_and_near_duplicates_across_files(tmp_path: Path, taxonomy) -> None:  # type: ignore[no-untyped-def]
    a = write(tmp_path / "a.jsonl", [good()])
    b = write(tmp_path / "b.jsonl", [good(id="r9", text="gatlampan pa storgatan 12 ar trasig sedan en vecka!!")])
    result = validate_files([a, b], taxonomy)
    assert [(x, y) for x, y, _ in result.duplicates] == [(f"{a}:1", f"{b}:1")]
    assert not result.ok


def test_near_duplicate_threshold() -> None:
    base = "det har varit en stor grop i vägen utanför vår port i flera veckor nu och ingen gör något"
    near = base + " alls"
    other = "bussen kom aldrig i morse och barnen fick stå och frysa vid hållplatsen i en halvtimme"
    pairs = find_duplicates([("a", base), ("b", near), ("c", other)])
    assert [(x, y) for x, y, _ in pairs] == [("a", "b")]


def test_normalise_text_drops_case_diacritics_and_punctuation() -> None:
    assert normalise_text("Gatlampan PÅ  Storgatan!!") == "gatlampan pa storgatan"


def test_duplicate_ids_and_bad_encoding(tmp_path: Path, taxonomy) -> None:  # type: ignore[no-untyped-def]
    path = write(
        tmp_path / "a.jsonl", [good(), good(text="Helt annan text om skolmaten i Norrskolan idag.", keywords=[])]
    )
    assert any("id 'r1' already used" in e for e in validate_files([path], taxonomy).errors)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(good(), ensure_ascii=False).encode("latin-1"))
    assert any("not UTF-8" in e for e in validate_files([latin1], taxonomy).errors)


def test_bundled_taxonomy_matches_the_shared_schema(taxonomy) -> None:  # type: ignore[no-untyped-def]
    assert len(taxonomy.department) == 10
    assert taxonomy.label_ids("severity") == ["lag", "medel", "hog", "akut"]
    assert taxonomy.label_ids("keywords") == ["PLATS", "OBJEKT"]


def test_data_version_is_read_from_the_data_sets_version_file(tmp_path: Path) -> None:
    from training.data import data_version

    (tmp_path / "reports").mkdir()
    train = tmp_path / "reports" / "train.jsonl"
    train.write_text("", encoding="utf-8")
    assert data_version(train) is None
    (tmp_path / "VERSION").write_text("2.0\n", encoding="utf-8")
    assert data_version(train) == "2.0"
    assert data_version(Path("data/reports/train.jsonl")) == Path("data/VERSION").read_text().strip()
