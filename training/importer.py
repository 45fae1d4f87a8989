"""`kommunrouter data import`: a municipality's export (CSV in any encoding Excel writes, or .xlsx) into the JSONL
data format.

Archives usually have a text and the department that handled it, sometimes a priority or a tone; each label column
is optional, and a value is mapped onto the taxonomy (a mapping, else the label's id or Swedish name); labels the
archive lacks stay unknown (null), which training masks. No row is dropped silently: every rejected row is written,
with its line number and the reason, to the rejects file, and no character the file's encoding cannot decode is
ever stored.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.artifact import CLASSIFICATION_TASKS
from app.errors import DataError
from app.inference.text import forbidden_character
from app.tables import TableRow, open_table, readable
from training.data import Report, Taxonomy, write_reports

# A mapping target that means "unknown" (the report is kept, that label is null).
UNKNOWN_TARGETS = ("", "null", "none", "-")

LabelMapping = Mapping[str, str | None]


@dataclass
class ImportSummary:
    """How many rows were imported, and how many were rejected for which reason."""

    imported: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    labelled: Counter[str] = field(default_factory=Counter)
    read_as: str = ""
    out: Path | None = None
    rejects: Path | None = None

    def describe(self) -> str:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.rejected.most_common()) or "none"
        labels = ", ".join(f"{task} {count}" for task, count in self.labelled.items())
        return (
            f"imported {self.imported} reports into {self.out}{f' (labelled: {labels})' if labels else ''}; "
            f"rejected {sum(self.rejected.values())} rows ({reasons}) -> {self.rejects}"
        )


def load_mapping(spec: str | Path | None) -> dict[str, str | None]:
    """Their values -> taxonomy ids: a JSON object file, a two-column CSV file, or inline ``"1=lag,2=medel"``.
    A target of "" or "null" maps a value to unknown."""
    if spec is None:
        return {}
    path = Path(spec)
    if not path.is_file():
        if isinstance(spec, str) and "=" in spec:
            pairs = [item.partition("=") for item in spec.split(",") if item.strip()]
            return {key.strip(): _target(value) for key, _, value in pairs}
        raise DataError(f"mapping file not found: {spec} (give a file, or pairs like '1=lag,2=medel')")
    content = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        mapping = json.loads(content)
        if not isinstance(mapping, dict):
            raise DataError(f"{path}: the mapping must be a JSON object {{their value: label id}}")
        return {str(k).strip(): _target(None if v is None else str(v)) for k, v in mapping.items()}
    return {row[0].strip(): _target(row[1]) for row in csv.reader(io.StringIO(content)) if len(row) >= 2}


def _target(value: str | None) -> str | None:
    if value is None or value.strip().lower() in UNKNOWN_TARGETS:
        return None
    return value.strip()


def _key(value: str) -> str:
    return unicodedata.normalize("NFC", value.strip()).casefold()


class LabelReader:
    """Reads one task's label from a column: the mapping first, then the label id, then its Swedish name."""

    def __init__(self, task: str, index: int, taxonomy: Taxonomy, mapping: LabelMapping) -> None:
        ids = taxonomy.label_ids(task)
        wrong = sorted({target for target in mapping.values() if target is not None and target not in ids})
        if wrong:
            raise DataError(
                f"the {task} mapping names labels that are not in the taxonomy: {', '.join(wrong)} "
                f"(the {task} labels: {', '.join(ids)})"
            )
        self.task = task
        self.index = index
        self._known: dict[str, str | None] = {}
        for label in taxonomy.labels(task):
            self._known[_key(label.name)] = label.id
            self._known[_key(label.id)] = label.id
        self._known.update({_key(value): target for value, target in mapping.items()})
        self._known.update({value.strip(): target for value, target in mapping.items()})

    def read(self, row: TableRow) -> tuple[str | None, str | None]:
        """The label (None: unknown) and the reason to reject the row (None: keep it)."""
        raw = (row.cell(self.index) or "").strip()
        if raw in self._known:
            return self._known[raw], None
        if not raw:
            return None, None
        if _key(raw) in self._known:
            return self._known[_key(raw)], None
        return None, f"unknown {self.task} '{raw}'"


def import_table(
    path: Path,
    *,
    taxonomy: Taxonomy,
    text_column: str,
    out: Path,
    rejects: Path,
    department_column: str | None = None,
    sentiment_column: str | None = None,
    severity_column: str | None = None,
    id_column: str | None = None,
    mappings: Mapping[str, LabelMapping] | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> ImportSummary:
    """Convert a CSV (, ; tab or |, any of Excel's encodings) or .xlsx export to JSONL; rejected rows go to
    ``rejects`` (JSONL: line, reason, the row as read, undecodable bytes shown as ``\\xNN``)."""
    table = open_table(path, encoding=encoding, delimiter=delimiter)
    mappings = mappings or {}
    unknown_tasks = sorted(set(mappings) - set(CLASSIFICATION_TASKS))
    if unknown_tasks:
        raise DataError(f"mappings for unknown tasks: {', '.join(unknown_tasks)}")
    text_index = table.column(text_column, option="--text-column")
    assert text_index is not None
    id_index = table.column(id_column, option="--id-column")
    columns = {"department": department_column, "sentiment": sentiment_column, "severity": severity_column}
    readers = [
        LabelReader(task, index, taxonomy, mappings.get(task, {}))
        for task, name in columns.items()
        if (index := table.column(name, option=f"--{task}-column")) is not None
    ]
    summary = ImportSummary(read_as=table.describe(), out=out, rejects=rejects)
    reports: list[Report] = []
    rejected_rows: list[dict[str, object]] = []
    widest = max(i for i in (text_index, id_index, *(reader.index for reader in readers)) if i is not None)

    def reject(row: TableRow, reason: str, detail: str | None = None) -> None:
        summary.rejected[reason] += 1
        entry: dict[str, object] = {"line": row.line, "reason": reason}
        if detail is not None:
            entry["detail"] = detail
        rejected_rows.append(entry | {"row": [readable(cell) for cell in row.cells]})

    for row in table.rows():
        if row.problem is not None:
            reject(row, "bad encoding", row.problem)
            continue
        if row.is_empty:
            reject(row, "empty row")
            continue
        if len(row.cells) <= widest:
            reject(row, "missing columns")
            continue
        text = row.cells[text_index].strip()
        if not text:
            reject(row, "empty text")
            continue
        problem = forbidden_character(text)
        if problem is not None:
            reject(row, "control character in text", problem)
            continue
        labels: dict[str, str | None] = dict.fromkeys(CLASSIFICATION_TASKS)
        reason = None
        for reader in readers:
            labels[reader.task], reason = reader.read(row)
            if reason is not None:
                break
        if reason is not None:
            reject(row, reason)
            continue
        summary.labelled.update(task for task, label in labels.items() if label is not None)
        report_id = (row.cells[id_index].strip() if id_index is not None else "") or f"{path.stem}-{row.line}"
        reports.append(Report(report_id, text, **labels, keywords=None, source=f"import:{path.name}"))
    summary.imported = write_reports(out, reports)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    rejects.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected_rows), encoding="utf-8")
    return summary
