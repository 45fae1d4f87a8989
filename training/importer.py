"""`kommunrouter data import`: a municipality's export (CSV or Excel) into the JSONL data format.

Municipal archives usually have a text and the department that handled it, so only the department is taken; the
other tasks' labels are left unknown (null). No row is dropped silently: every rejected row is written, with its
line number and the reason, to the rejects file.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import DataError
from training.data import Report, Taxonomy, write_reports


@dataclass
class ImportSummary:
    """How many rows were imported, and how many were rejected for which reason."""

    imported: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    out: Path | None = None
    rejects: Path | None = None

    def describe(self) -> str:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.rejected.most_common()) or "none"
        return (
            f"imported {self.imported} reports into {self.out}; rejected {sum(self.rejected.values())} rows "
            f"({reasons}) -> {self.rejects}"
        )


def load_mapping(path: Path | None) -> dict[str, str]:
    """A department mapping: JSON {their label: taxonomy id} or a two-column CSV (their label, taxonomy id)."""
    if path is None:
        return {}
    try:
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DataError(f"mapping file not found: {path}") from exc
    if path.suffix.lower() == ".json":
        mapping = json.loads(content)
        if not isinstance(mapping, dict):
            raise DataError(f"{path}: the mapping must be a JSON object {{their label: department id}}")
        return {str(k).strip(): str(v).strip() for k, v in mapping.items()}
    return {row[0].strip(): row[1].strip() for row in csv.reader(io.StringIO(content)) if len(row) >= 2}


def _rows_from_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, row) pairs. Bytes that are not UTF-8 are kept as surrogates so that the row they
    are in can be rejected with its line number instead of failing the whole file."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect, strict=True)
    try:
        header = next(reader)
        rows = []
        start = reader.line_num + 1
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: broken CSV: {exc}") from exc
    except StopIteration as exc:
        raise DataError(f"{path}: the file is empty") from exc
    return header, rows


def _rows_from_excel(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    from openpyxl import load_workbook

    sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
    values = [["" if cell is None else str(cell) for cell in row] for row in sheet.iter_rows(values_only=True)]
    if not values:
        raise DataError(f"{path}: the sheet is empty")
    return values[0], [(number, row) for number, row in enumerate(values[1:], start=2)]


def _column(header: list[str], name: str | None, path: Path) -> int | None:
    if name is None:
        return None
    stripped = [h.strip() for h in header]
    if name not in stripped:
        raise DataError(f"{path}: no column {name!r} (columns: {', '.join(stripped)})")
    return stripped.index(name)


def import_table(
    path: Path,
    *,
    taxonomy: Taxonomy,
    text_column: str,
    department_column: str | None,
    id_column: str | None = None,
    mapping_path: Path | None = None,
    out: Path,
    rejects: Path,
) -> ImportSummary:
    """Convert a CSV (any of , ; tab) or .xlsx export to JSONL; rejected rows go to ``rejects`` (JSONL)."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    header, rows = _rows_from_excel(path) if path.suffix.lower() in (".xlsx", ".xlsm") else _rows_from_csv(path)
    text_index = _column(header, text_column, path)
    department_index = _column(header, department_column, path)
    id_index = _column(header, id_column, path)
    mapping = load_mapping(mapping_path)
    departments = set(taxonomy.label_ids("department"))
    summary = ImportSummary(out=out, rejects=rejects)
    reports: list[Report] = []
    rejected_rows: list[dict[str, object]] = []

    def reject(line: int, reason: str, row: list[str]) -> None:
        summary.rejected[reason] += 1
        safe_row = [cell.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace") for cell in row]
        rejected_rows.append({"line": line, "reason": reason, "row": safe_row})

    for line, row in rows:
        if not any(cell.strip() for cell in row):
            reject(line, "empty row", row)
            continue
        if any("\udc80" <= char <= "\udcff" for cell in row for char in cell):
            reject(line, "not UTF-8 (bad encoding)", row)
            continue
        assert text_index is not None
        if len(row) <= max(i for i in (text_index, department_index, id_index) if i is not None):
            reject(line, "missing columns", row)
            continue
        text = row[text_index].strip()
        if not text:
            reject(line, "empty text", row)
            continue
        department = None
        if department_index is not None:
            raw = row[department_index].strip()
            department = mapping.get(raw, raw)
            if department not in departments:
                reject(line, f"unknown department {raw!r}", row)
                continue
        report_id = row[id_index].strip() if id_index is not None and row[id_index].strip() else f"{path.stem}-{line}"
        reports.append(Report(report_id, text, department, None, None, None, source=f"import:{path.name}"))
    summary.imported = write_reports(out, reports)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    rejects.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected_rows), encoding="utf-8")
    return summary
