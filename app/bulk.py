"""`kommunrouter classify FILE`: a whole archive classified in-process, on the service's own model and decisions.

The file streams in windows of rows; each window's texts run through the same loading function, the same
length-sorted model calls and the same decision and response mapping as ``/v1/classify`` (no HTTP, no audit log),
and are appended to the output in input order, one record per row: the API's answer with the row's line and id, or
an error in its place for a row that cannot be classified. Memory holds one window per process, whatever the size
of the file. Rows already in the output are skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from types import UnionType
from typing import IO, Any, Union, get_args, get_origin

from pydantic import BaseModel

from app.api.routes.classify import classification_response
from app.api.schemas import ClassifyResponse
from app.artifact import MODEL_FILE, read_manifest
from app.config import Settings
from app.decisions import ReportInput, RoutingDecision
from app.errors import DataError, InvalidInput
from app.inference.classifier import Classifier, load_classifier
from app.inference.text import check_report_text
from app.tables import Table, TableRow, estimate_rows, open_table

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", ".jsonl")
# Fields of the API answer that belong to one HTTP request, not to a row of a file.
REQUEST_FIELDS = {"request_id", "latency_ms"}
DEFAULT_WINDOW = 512
# How many rows' model calls a window may hold at most, errors included (memory stays flat).
MAX_WINDOW_ROWS_FACTOR = 4
BAD_LINES_SHOWN = 10

Record = dict[str, Any]


@dataclass(frozen=True)
class PendingRow:
    """A row whose text passed the service's checks and waits for the model."""

    line: int
    id: str | None
    text: str


@dataclass
class BulkSummary:
    """What a run did: rows classified, bad rows by error code (and where), rows skipped."""

    out: Path
    read_as: str = ""
    classified: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_lines: list[int] = field(default_factory=list)
    already_done: int = 0
    empty_rows: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        rate = self.classified / self.seconds if self.seconds > 0 else 0.0
        parts = [f"classified {self.classified:,} reports in {self.seconds:,.0f} s ({rate:,.1f}/s) -> {self.out}"]
        if self.errors:
            codes = ", ".join(f"{code}: {count}" for code, count in self.errors.most_common())
            shown = ", ".join(str(line) for line in self.error_lines[:BAD_LINES_SHOWN])
            more = ", ..." if sum(self.errors.values()) > BAD_LINES_SHOWN else ""
            parts.append(f"{sum(self.errors.values())} bad rows written as errors ({codes}; lines {shown}{more})")
        if self.already_done:
            parts.append(f"{self.already_done:,} rows already in {self.out.name} skipped")
        if self.empty_rows:
            parts.append(f"{self.empty_rows} empty rows skipped")
        return "; ".join(parts)


# --- records and the output file --------------------------------------------------------------------------------


def prediction_record(line: int, row_id: str | None, response: ClassifyResponse) -> Record:
    """The API's answer for a row, with the row's line and id in place of the request's id and latency."""
    return {"line": line, "id": row_id, **response.model_dump(mode="json", exclude=REQUEST_FIELDS)}


def error_record(line: int, row_id: str | None, code: str, message: str) -> Record:
    """A row that could not be classified, with the API's error shape."""
    return {"line": line, "id": row_id, "error": {"code": code, "message": message}}


def classify_rows(classifier: Classifier, rows: Sequence[PendingRow]) -> list[Record]:
    """Records for checked rows, through the service's classifier in one length-sorted pass."""
    classifications = classifier.classify_many([row.text for row in rows])
    manifest = classifier.manifest
    now = datetime.now(UTC)
    return [
        prediction_record(
            row.line,
            row.id,
            classification_response(
                RoutingDecision(
                    request_id="",
                    created_at=now,
                    client="bulk",
                    report=ReportInput(text=row.text),
                    classification=classification,
                    model_version=manifest.model_version,
                    artifact_sha256=manifest.files[MODEL_FILE],
                    latency_ms=0.0,
                )
            ),
        )
        for row, classification in zip(rows, classifications, strict=True)
    ]


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X | None`` included), if any."""
    if get_origin(annotation) in (Union, UnionType):
        found = [model for arg in get_args(annotation) if (model := _model_type(arg)) is not None]
        return found[0] if found else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _flat_columns(model: type[BaseModel], prefix: str = "") -> list[str]:
    columns = []
    for name, info in model.model_fields.items():
        if not prefix and name in REQUEST_FIELDS:
            continue
        nested = _model_type(info.annotation)
        columns += _flat_columns(nested, f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return columns


def csv_columns() -> list[str]:
    """The CSV output's columns: the API answer's fields flattened (``department.score``), lists as JSON."""
    return ["line", "id", *_flat_columns(ClassifyResponse), "error.code", "error.message"]


def _flatten(record: Record, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = json.dumps(value, ensure_ascii=False)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class OutputFile:
    """The output, appended to window by window: JSONL, or CSV (UTF-8 with BOM, as Excel opens it)."""

    def __init__(self, path: Path, *, delimiter: str) -> None:
        self.path = path
        self._csv = path.suffix.lower() == ".csv"
        self._columns = csv_columns()
        is_new = not path.exists() or path.stat().st_size == 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("a", encoding="utf-8-sig" if self._csv else "utf-8", newline="")
        self._writer = csv.DictWriter(self._handle, self._columns, delimiter=delimiter, lineterminator="\r\n")
        if self._csv and is_new:
            self._writer.writeheader()

    def write(self, records: Sequence[Record]) -> None:
        if self._csv:
            self._writer.writerows(_flatten(record) for record in records)
        else:
            self._handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def rows_already_written(out: Path, *, by_id: bool) -> tuple[set[str], str | None]:
    """The keys (id, or line number without ids) of the rows in an earlier output, and its model version.

    A record cut off by an interruption is removed first, so the file ends with a whole record."""
    if not out.exists():
        return set(), None
    with out.open("rb+") as handle:
        content_end = handle.seek(0, os.SEEK_END)
        position = max(0, content_end - (1 << 16))
        while position > 0:
            handle.seek(position)
            if b"\n" in handle.read(1 << 16):
                break
            position = max(0, position - (1 << 16))
        handle.seek(position)
        tail = handle.read()
        last_newline = tail.rfind(b"\n")
        keep = position + last_newline + 1 if last_newline >= 0 else 0
        if keep < content_end:
            logger.warning("%s ended in a cut-off record (an interrupted run): removed it", out)
            handle.truncate(keep)
    keys: set[str] = set()
    version = None
    with out.open(encoding="utf-8-sig", newline="") as text:
        if out.suffix.lower() == ".csv":
            header = text.readline()
            delimiter = max(";,\t|", key=header.count)
            text.seek(0)
            records: Iterator[dict[str, Any]] = csv.DictReader(text, delimiter=delimiter)
        else:
            records = (_output_record(out, number, line) for number, line in enumerate(text, start=1) if line.strip())
        for record in records:
            key = record.get("id") if by_id else record.get("line")
            if key in (None, "") and by_id:
                raise DataError(
                    f"{out} was written without --id-column (rows keyed by line): give the same options to resume "
                    "it, or another --out"
                )
            if key in (None, ""):
                raise DataError(f"{out} holds a record without a line number: not an output of kommunrouter classify")
            keys.add(str(key))
            version = record.get("model_version") or version
    return keys, version


def _output_record(out: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{out}:{number}: not JSON ({exc.msg}): not an output of kommunrouter classify") from exc
    if not isinstance(record, dict):
        raise DataError(f"{out}:{number}: not a JSON object: not an output of kommunrouter classify")
    return record


# --- the run ----------------------------------------------------------------------------------------------------


_worker_classifier: Classifier | None = None


def _start_worker(settings: Settings) -> None:
    global _worker_classifier
    # Ctrl-C is the parent's to handle: it stops submitting and lets the windows in progress finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_classifier = load_classifier(settings)


def _classify_in_worker(rows: list[PendingRow]) -> list[Record]:
    assert _worker_classifier is not None, "the worker's initializer loads the classifier"
    return classify_rows(_worker_classifier, rows)


@dataclass
class _Window:
    """Rows in input order: records ready (errors) or None where a pending row's prediction goes."""

    slots: list[Record | None] = field(default_factory=list)
    pending: list[PendingRow] = field(default_factory=list)

    def merged(self, predicted: Sequence[Record]) -> list[Record]:
        results = iter(predicted)
        return [slot if slot is not None else next(results) for slot in self.slots]


def _windows(
    table: Table,
    *,
    text_index: int,
    id_index: int | None,
    done: set[str],
    check: Callable[[str], None],
    window: int,
    summary: BulkSummary,
) -> Iterator[_Window]:
    """The table's rows cut into windows of ``window`` texts; bad rows become error records in their place."""
    current = _Window()
    for row in table.rows():
        if row.is_empty:
            summary.empty_rows += 1
            continue
        row_id = _row_id(row, id_index)
        if (row_id if id_index is not None else str(row.line)) in done:
            summary.already_done += 1
            continue
        error = _row_error(row, text_index, check)
        if error is not None:
            summary.errors[error[0]] += 1
            if len(summary.error_lines) < BAD_LINES_SHOWN:
                summary.error_lines.append(row.line)
            current.slots.append(error_record(row.line, row_id, *error))
        else:
            current.slots.append(None)
            current.pending.append(PendingRow(row.line, row_id, row.cells[text_index]))
        if len(current.pending) >= window or len(current.slots) >= window * MAX_WINDOW_ROWS_FACTOR:
            yield current
            current = _Window()
    if current.slots:
        yield current


def _row_id(row: TableRow, id_index: int | None) -> str | None:
    if id_index is None:
        return None
    value = row.cell(id_index)
    return value.strip() if value is not None and value.strip() else f"line {row.line}"


def _row_error(row: TableRow, text_index: int, check: Callable[[str], None]) -> tuple[str, str] | None:
    """The error code and message of a row that cannot be classified, else None."""
    if row.problem is not None:
        return ("invalid_json" if "JSON" in row.problem else "bad_encoding"), row.problem
    text = row.cell(text_index)
    if text is None:
        return "missing_column", f"line {row.line}: the row has {len(row.cells)} cells, no text column"
    try:
        check(text)
    except InvalidInput as exc:
        return exc.code, f"line {row.line}: {exc.message}"
    return None


def classify_file(
    source: Path,
    *,
    out: Path,
    text_column: str,
    settings: Settings,
    id_column: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    workers: int = 1,
    window: int = DEFAULT_WINDOW,
    progress: bool = True,
    on_read: Callable[[str], None] | None = None,
    classifier: Classifier | None = None,
) -> BulkSummary:
    """Classify every row of ``source`` into ``out`` (.csv or .jsonl), continuing an earlier run's ``out``.

    ``classifier``: one already loaded from ``settings`` (one process only), e.g. to measure it beside this run."""
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"--out must end in .csv or .jsonl, not {out.name}")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise DataError("--out must not be the input file")
    if workers < 1 or window < 1:
        raise DataError("--workers and --window must be at least 1")
    table = open_table(source, encoding=encoding, delimiter=delimiter)
    text_index = table.column(text_column, option="--text-column")
    assert text_index is not None
    id_index = table.column(id_column, option="--id-column")
    if on_read is not None:
        on_read(table.describe())
    if classifier is not None and workers > 1:
        raise DataError("a loaded classifier runs in this process only: workers must be 1")
    version = read_manifest(settings.model_dir).model_version
    done, done_version = rows_already_written(out, by_id=id_index is not None)
    if done_version is not None and done_version != version:
        raise DataError(
            f"{out} holds results of model {done_version}, this is {version}: give another --out to classify with it"
        )
    summary = BulkSummary(out=out, read_as=table.describe())
    output = OutputFile(out, delimiter=table.format.delimiter or ",")
    started = time.perf_counter()
    with _Progress(max(0, estimate_rows(source) - len(done)), enabled=progress) as bar:
        try:
            windows = _windows(
                table,
                text_index=text_index,
                id_index=id_index,
                done=done,
                check=functools.partial(check_report_text, max_chars=settings.max_text_chars),
                window=window,
                summary=summary,
            )
            if workers == 1:
                _run_here(windows, settings, output, summary, bar, classifier)
            else:
                _run_in_workers(windows, settings, workers, output, summary, bar)
        finally:
            output.close()
            summary.seconds = time.perf_counter() - started
    return summary


def _write(window: _Window, predicted: Sequence[Record], output: OutputFile, summary: BulkSummary) -> None:
    output.write(window.merged(predicted))
    summary.classified += len(predicted)


def _run_here(
    windows: Iterator[_Window],
    settings: Settings,
    output: OutputFile,
    summary: BulkSummary,
    bar: _Progress,
    loaded: Classifier | None,
) -> None:
    # The progress bar moves with every model call, so it shows the rate while a window runs.
    classifier = loaded or load_classifier(settings, on_model_call=lambda texts, _seconds: bar.advance(texts))
    for window in windows:
        _write(window, classify_rows(classifier, window.pending) if window.pending else [], output, summary)
        bar.advance(len(window.slots) - (0 if loaded else len(window.pending)))


def _run_in_workers(
    windows: Iterator[_Window],
    settings: Settings,
    workers: int,
    output: OutputFile,
    summary: BulkSummary,
    bar: _Progress,
) -> None:
    # spawn: a forked onnxruntime or tokenizer thread pool can hang the child.
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(settings,)
    ) as pool:
        in_flight: deque[tuple[_Window, Future[list[Record]] | None]] = deque()

        def finish_oldest() -> None:
            window, future = in_flight.popleft()
            _write(window, future.result() if future is not None else [], output, summary)
            bar.advance(len(window.slots))

        try:
            for window in windows:
                future = pool.submit(_classify_in_worker, window.pending) if window.pending else None
                in_flight.append((window, future))
                # Two windows per worker keep every worker busy while the memory stays bounded.
                while len(in_flight) >= 2 * workers:
                    finish_oldest()
            while in_flight:
                finish_oldest()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


class _Progress:
    """A rich progress bar on stderr: rows done of about how many, texts/s, elapsed time and ETA."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._total = total
        self._enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self._enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("classifying"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                speed_estimate_period=60,
            )
            self._progress.start()
            self._task = self._progress.add_task("classify", total=self._total or None, rate="- texts/s")
        return self

    def advance(self, rows: int) -> None:
        if self._progress is None or rows == 0:
            return
        self._progress.advance(self._task, rows)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:,.1f} texts/s" if speed else "- texts/s")

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            task = self._progress.tasks[0]
            self._progress.update(self._task, total=task.completed)
            self._progress.stop()
