"""The labelled data format (JSONL, one report a line), the taxonomy, and the data validator."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from app.artifact import CLASSIFICATION_TASKS, Label
from app.errors import DataError

DEFAULT_TAXONOMY = Path("data/taxonomy.json")
REPORT_FIELDS = ("id", "text", "department", "sentiment", "severity", "keywords", "source")
NEAR_DUPLICATE_JACCARD = 0.8


class Taxonomy(BaseModel):
    """The label schema: label sets of the three classification tasks and the keyword span types."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    department: list[Label]
    sentiment: list[Label]
    severity: list[Label]
    keywords: list[Label]

    def labels(self, task: str) -> list[Label]:
        labels: list[Label] = getattr(self, task)
        return labels

    def label_ids(self, task: str) -> list[str]:
        return [label.id for label in self.labels(task)]


def load_taxonomy(path: Path = DEFAULT_TAXONOMY) -> Taxonomy:
    """Read a taxonomy file (JSON)."""
    try:
        return Taxonomy.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"taxonomy file not found: {path}") from exc
    except ValidationError as exc:
        raise DataError(f"{path}: not a valid taxonomy: {exc.errors()[0]['msg']}") from exc


@dataclass(frozen=True)
class Span:
    """A keyword: characters ``[start, end)`` of the text, of a span type (PLATS, OBJEKT)."""

    start: int
    end: int
    type: str


@dataclass
class Report:
    """One labelled report. A label of ``None`` means unknown (its loss is masked in training)."""

    id: str
    text: str
    department: str | None
    sentiment: str | None
    severity: str | None
    keywords: list[Span] | None
    source: str = "unknown"

    def label(self, task: str) -> str | None:
        value: str | None = getattr(self, task)
        return value

    def to_json(self) -> dict[str, Any]:
        keywords = None if self.keywords is None else [span.__dict__ for span in self.keywords]
        return {
            "id": self.id,
            "text": self.text,
            "department": self.department,
            "sentiment": self.sentiment,
            "severity": self.severity,
            "keywords": keywords,
            "source": self.source,
        }


def _is_word_char(char: str) -> bool:
    return char.isalnum()


def report_problems(raw: Any, taxonomy: Taxonomy) -> list[str]:
    """Everything wrong with one decoded JSON line (empty when it is a valid report)."""
    if not isinstance(raw, dict):
        return ["a report must be a JSON object"]
    problems = [f"missing field {name!r}" for name in ("id", "text") if name not in raw]
    problems += [f"unknown field {name!r}" for name in raw if name not in REPORT_FIELDS]
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("text must be a non-empty string")
        text = None
    if not isinstance(raw.get("id", ""), str):
        problems.append("id must be a string")
    for task in CLASSIFICATION_TASKS:
        value = raw.get(task)
        if value is not None and value not in taxonomy.label_ids(task):
            problems.append(f"{task} {value!r} is not in the taxonomy ({', '.join(taxonomy.label_ids(task))})")
    keywords = raw.get("keywords")
    if keywords is None:
        return problems
    if not isinstance(keywords, list):
        return [*problems, "keywords must be a list or null"]
    previous_end = -1
    span_types = taxonomy.label_ids("keywords")
    for span in sorted(keywords, key=lambda s: s.get("start", 0) if isinstance(s, dict) else 0):
        if not isinstance(span, dict) or not {"start", "end", "type"} <= span.keys():
            problems.append(f"keyword {span!r} needs start, end and type")
            continue
        start, end, span_type = span["start"], span["end"], span["type"]
        if span_type not in span_types:
            problems.append(f"keyword type {span_type!r} is not in the taxonomy ({', '.join(span_types)})")
        if not (isinstance(start, int) and isinstance(end, int)) or text is None:
            problems.append(f"keyword {span!r}: start and end must be integers")
            continue
        if not 0 <= start < end <= len(text):
            problems.append(f"keyword [{start}, {end}) is outside the text (length {len(text)})")
            continue
        if (start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start])) or (
            end < len(text) and _is_word_char(text[end - 1]) and _is_word_char(text[end])
        ):
            problems.append(f"keyword [{start}, {end}) {text[start:end]!r} does not start and end on word boundaries")
        if text[start].isspace() or text[end - 1].isspace():
            problems.append(f"keyword [{start}, {end}) {text[start:end]!r} starts or ends with whitespace")
        if start < previous_end:
            problems.append(f"keyword [{start}, {end}) overlaps the keyword before it")
        previous_end = max(previous_end, end)
    return problems


def report_from_json(raw: dict[str, Any]) -> Report:
    keywords = raw.get("keywords")
    return Report(
        id=raw["id"],
        text=raw["text"],
        department=raw.get("department"),
        sentiment=raw.get("sentiment"),
        severity=raw.get("severity"),
        keywords=None
        if keywords is None
        else sorted((Span(k["start"], k["end"], k["type"]) for k in keywords), key=lambda s: s.start),
        source=raw.get("source") or "unknown",
    )


def _read_lines(path: Path) -> Iterable[tuple[int, Any | None, str | None]]:
    """Yield (line number, decoded JSON or None, problem or None) for each non-blank line."""
    try:
        content = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"data file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON: {exc.msg}"


DATA_VERSION_FILE = "VERSION"


def data_version(path: Path) -> str | None:
    """The version of the data set a report file belongs to: the first ``VERSION`` file in its folder or the folder
    above (``data/VERSION`` for ``data/reports/train.jsonl``); None for files outside a versioned data set."""
    for folder in (path.resolve().parent, path.resolve().parent.parent):
        candidate = folder / DATA_VERSION_FILE
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip() or None
    return None


def load_reports(path: Path, taxonomy: Taxonomy) -> list[Report]:
    """Read a JSONL file of reports; the first invalid line raises a DataError naming it."""
    reports = []
    for number, raw, problem in _read_lines(path):
        problems = [problem] if problem else report_problems(raw, taxonomy)
        if problems:
            raise DataError(f"{path}:{number}: {problems[0]}")
        assert isinstance(raw, dict)
        reports.append(report_from_json(raw))
    return reports


def read_unlabelled_texts(path: Path) -> list[str]:
    """Texts of a file of unlabelled reports: JSONL lines with a ``text`` field, or one plain text per line."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            texts.append(json.loads(line)["text"] if line.lstrip().startswith("{") else line.strip())
    return texts


def write_reports(path: Path, reports: Iterable[Report]) -> int:
    """Write reports as JSONL; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for report in reports:
            handle.write(json.dumps(report.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


def normalise_text(text: str) -> str:
    """The text used to find duplicates: lowercase, without diacritics, punctuation or repeated spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(re.findall(r"\w+", letters))


def _shingles(normalised: str) -> set[tuple[str, ...]]:
    words = normalised.split()
    if len(words) < 3:
        return {tuple(words)}
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def find_duplicates(
    entries: Sequence[tuple[str, str]], *, threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[tuple[str, str, float]]:
    """Pairs of (location, location, similarity) among (location, text) entries that are exact duplicates after
    normalisation (similarity 1.0) or near duplicates (Jaccard similarity of word 3-shingles >= threshold)."""
    shingle_sets = [_shingles(normalise_text(text)) for _, text in entries]
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for position, shingles in enumerate(shingle_sets):
        for shingle in shingles:
            index[shingle].append(position)
    shared: Counter[tuple[int, int]] = Counter()
    for positions in index.values():
        if len(positions) > 50:  # a phrase that common says nothing about duplication
            continue
        for i, left in enumerate(positions):
            for right in positions[i + 1 :]:
                shared[(left, right)] += 1
    pairs = []
    for (left, right), count in shared.items():
        union = len(shingle_sets[left] | shingle_sets[right])
        similarity = count / union if union else 1.0
        if similarity >= threshold:
            pairs.append((entries[left][0], entries[right][0], round(similarity, 3)))
    return sorted(pairs)


@dataclass
class ValidationReport:
    """What `kommunrouter data validate` found: errors (with file:line), duplicates and label distributions."""

    errors: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str, float]] = field(default_factory=list)
    counts: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.duplicates


def validate_files(paths: Sequence[Path], taxonomy: Taxonomy) -> ValidationReport:
    """Validate JSONL files against the data format and the taxonomy, and look for duplicates across all of them."""
    result = ValidationReport()
    entries: list[tuple[str, str]] = []
    seen_ids: dict[str, str] = {}
    for path in paths:
        counts: dict[str, Counter[str]] = {task: Counter() for task in (*CLASSIFICATION_TASKS, "keywords", "source")}
        size = 0
        try:
            lines = list(_read_lines(path))
        except DataError as exc:
            result.errors.append(str(exc))
            continue
        for number, raw, problem in lines:
            location = f"{path}:{number}"
            problems = [problem] if problem else report_problems(raw, taxonomy)
            result.errors += [f"{location}: {p}" for p in problems]
            if problems:
                continue
            size += 1
            assert isinstance(raw, dict)
            report = report_from_json(raw)
            if report.id in seen_ids:
                result.errors.append(f"{location}: id {report.id!r} already used at {seen_ids[report.id]}")
            seen_ids[report.id] = location
            entries.append((location, report.text))
            for task in CLASSIFICATION_TASKS:
                counts[task][report.label(task) or "(unknown)"] += 1
            for span in report.keywords or []:
                counts["keywords"][span.type] += 1
            counts["source"][report.source] += 1
        result.counts[str(path)] = counts
        result.sizes[str(path)] = size
    result.duplicates = find_duplicates(entries)
    return result


def format_validation(result: ValidationReport) -> str:
    """A human-readable summary: problems first, then the label distributions per file."""
    lines = [f"ERROR {error}" for error in result.errors]
    lines += [f"DUPLICATE {a} ~ {b} (similarity {s:.2f})" for a, b, s in result.duplicates]
    for path, counts in result.counts.items():
        total = result.sizes[path]
        lines.append(f"\n{path}: {total} reports")
        for task, counter in counts.items():
            shares = ", ".join(
                f"{label} {count} ({count / max(total, 1):.0%})" for label, count in counter.most_common()
            )
            lines.append(f"  {task}: {shares}")
    verdict = "OK" if result.ok else f"FAILED: {len(result.errors)} errors, {len(result.duplicates)} duplicate pairs"
    lines.append(f"\n{verdict}")
    return "\n".join(lines)
