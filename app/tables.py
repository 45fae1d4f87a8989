"""Reading the files a municipality has: CSV as Excel and case systems write it, .xlsx, and JSONL.

A CSV's encoding is detected (a byte-order mark, else UTF-8 against Windows-1252 line by line) and its delimiter
too; ``encoding`` and ``delimiter`` override both. Rows stream (a file of a million rows is never held in memory),
each with the number of the line it starts on. No character is ever guessed: a line whose bytes the encoding
cannot decode, or a line that is UTF-8 in a file read as Windows-1252, comes back as a row with a ``problem``, so
that the caller can reject that row by its line number instead of storing a mangled text.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from app.errors import ConfigurationError, DataError

TableKind = Literal["csv", "xlsx", "jsonl"]
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
DELIMITERS = (";", ",", "\t", "|")
# Enough of the file to decide the encoding and the delimiter; the rest is decoded as it streams.
SAMPLE_BYTES = 8 << 20
SNIFF_RECORDS = 50
WINDOWS_1252 = "cp1252"
ENCODING_HINT = "--encoding cp1252 for Excel's Swedish 'CSV (semikolonavgränsad)', --encoding utf-8 for UTF-8"
FROM_BOM = "from its byte-order mark"

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_DELIMITER_NAMES = {"\t": "tab", ";": "';'", ",": "','", "|": "'|'"}
_ENCODING_NAMES = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 with BOM",
    "utf-16": "UTF-16",
    "utf-16-le": "UTF-16 LE",
    "utf-16-be": "UTF-16 BE",
    "utf-32": "UTF-32",
    "cp1252": "Windows-1252",
    "latin-1": "Latin-1",
    "iso8859-1": "Latin-1",
}


@dataclass(frozen=True)
class TableRow:
    """One record: the line (or sheet row) it starts on, its cells, and why it cannot be used as read, if so."""

    line: int
    cells: list[str]
    problem: str | None = None

    @property
    def is_empty(self) -> bool:
        return self.problem is None and not any(cell.strip() for cell in self.cells)

    def cell(self, index: int) -> str | None:
        """The cell at ``index``, or None when the row is shorter."""
        return self.cells[index] if index < len(self.cells) else None


@dataclass(frozen=True)
class TableFormat:
    """How a file was read, and whether each choice was detected or given."""

    kind: TableKind
    encoding: str | None = None
    encoding_from: str = "detected"
    delimiter: str | None = None
    delimiter_from: str = "detected"

    def describe(self, path: Path, header: list[str]) -> str:
        """One line for the user: what was detected, and how to override it."""
        parts = [f"read {path.name} as {self.kind.upper() if self.kind != 'jsonl' else 'JSONL'}"]
        if self.encoding is not None:
            name = _ENCODING_NAMES.get(codecs.lookup(self.encoding).name, self.encoding)
            how = "given" if self.encoding_from == "given" else f"{self.encoding_from}; --encoding to override"
            parts.append(f"encoding {name} ({how})")
        if self.delimiter is not None:
            how = "given" if self.delimiter_from == "given" else f"{self.delimiter_from}; --delimiter to override"
            parts.append(f"delimiter {_DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))} ({how})")
        parts.append(f"columns: {readable_columns(header)}")
        return ", ".join(parts)


def readable(value: str) -> str:
    """A cell as people can read it: undecodable bytes (kept as surrogates) shown as ``\\xNN``."""
    if _SURROGATE.search(value) is None:
        return value
    return "".join(
        f"\\x{ord(char) - 0xDC00:02x}"
        if 0xDC80 <= ord(char) <= 0xDCFF
        else f"\\u{ord(char):04x}"
        if 0xD800 <= ord(char) <= 0xDFFF
        else char
        for char in value
    )


def readable_columns(header: list[str]) -> str:
    return ", ".join(readable(name.strip()) or "(empty)" for name in header)


def _column_key(name: str) -> str:
    return unicodedata.normalize("NFC", name.strip().lstrip("\ufeff")).casefold()


class Table:
    """An open table file: its format, its header, and its rows as a stream (read them once)."""

    def __init__(self, path: Path, table_format: TableFormat, header: list[str], rows: Iterator[TableRow]) -> None:
        self.path = path
        self.format = table_format
        self.header = header
        self._rows = rows

    def describe(self) -> str:
        return self.format.describe(self.path, self.header)

    def column(self, name: str | None, *, option: str = "column") -> int | None:
        """The index of a column by name (exact after trimming, else ignoring case and Unicode form)."""
        if name is None:
            return None
        stripped = [cell.strip() for cell in self.header]
        if name.strip() in stripped:
            return stripped.index(name.strip())
        keys = [_column_key(cell) for cell in self.header]
        if keys.count(_column_key(name)) == 1:
            return keys.index(_column_key(name))
        raise DataError(f"{self.path}: no column '{name}' ({option}; columns: {readable_columns(self.header)})")

    def rows(self) -> Iterator[TableRow]:
        """The records after the header, in file order."""
        return self._rows


def open_table(path: Path, *, encoding: str | None = None, delimiter: str | None = None) -> Table:
    """Open a .csv/.tsv/.txt, .xlsx or .jsonl file: detect what was not given, read the header."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise DataError(f"unknown encoding {encoding!r} (e.g. utf-8, cp1252, latin-1, utf-16)") from exc
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise DataError(f"--delimiter must be one character or 'tab', not {delimiter!r}")
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        return _open_excel(path)
    if suffix in JSONL_SUFFIXES:
        return _open_jsonl(path, encoding)
    return _open_csv(path, encoding, delimiter)


def estimate_rows(path: Path) -> int:
    """About how many records follow the header (for a progress bar; quoted line breaks make it an overcount)."""
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        sheet = _first_sheet(path)
        return max(0, (sheet.max_row or 1) - 1)
    newlines = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            newlines += block.count(b"\n")
    return newlines if suffix in JSONL_SUFFIXES else max(0, newlines - 1)


# --- encodings --------------------------------------------------------------------------------------------------


def _is_utf(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith("utf")


def detect_encoding(head: bytes, *, whole_file: bool) -> tuple[str, str]:
    """The encoding of a file from its first bytes, and how it was found (:data:`FROM_BOM` or "detected").

    Without a byte-order mark, each line is tried as UTF-8: lines that fail are counted against lines with
    non-ASCII characters that pass. A UTF-8 file with a few Windows-1252 lines stays UTF-8 (those lines are
    rejected); a file whose non-ASCII lines mostly fail is Windows-1252 (a superset of Latin-1's letters)."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, FROM_BOM
    if head and head.count(0) > len(head) // 4:
        # UTF-16 without a BOM: ASCII characters leave every other byte zero.
        return ("utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"), "detected"
    lines = head.split(b"\n")
    if not whole_file:
        lines = lines[:-1]  # the last one may be cut in the middle of a character
    valid_non_ascii = failed = 0
    for line in lines:
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            failed += 1
        else:
            valid_non_ascii += 1
    return ("utf-8" if failed <= valid_non_ascii else WINDOWS_1252), "detected"


class _LineDecoder:
    """Decodes physical lines one at a time and remembers what was wrong with the lines that failed."""

    def __init__(self, encoding: str, encoding_from: str) -> None:
        # utf-8-sig also drops the BOM of the first line (and of files concatenated into this one).
        self.encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        self.display = _ENCODING_NAMES.get(codecs.lookup(encoding).name, encoding)
        self.hint = (
            "the --encoding given"
            if encoding_from == "given"
            else f"encoding detected; if the file is in another one, give {ENCODING_HINT}"
        )
        # A line that is valid UTF-8 with non-ASCII characters would turn into mojibake ("Ã¤") in a one-byte
        # encoding: in a file read as Windows-1252 or Latin-1 it is a line in another encoding.
        self._check_utf8 = not _is_utf(encoding)

    def decode(self, raw: bytes) -> tuple[str, str | None]:
        """The line's text (undecodable bytes as surrogates, so the CSV still parses) and its problem."""
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            bad = raw[exc.start : exc.end].hex(" ")
            problem = f"bytes {bad} are not {self.display} ({self.hint})"
            return raw.decode(self.encoding, errors="surrogateescape"), problem
        if self._check_utf8 and not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                problem = f"the line is UTF-8 in a file read as {self.display} (mixed encodings; {self.hint})"
                return raw.decode("ascii", errors="surrogateescape"), problem
        if _SURROGATE.search(text):
            return text, f"the line holds an invalid {self.display} sequence (a lone surrogate)"
        return text, None


def _byte_lines(handle: IO[bytes], newline: bytes) -> Iterator[bytes]:
    """Physical lines with their endings (``newline`` is b"\\n", or b"\\r" for old Mac files)."""
    rest = b""
    for block in iter(lambda: handle.read(1 << 20), b""):
        rest += block
        *complete, rest = rest.split(newline)
        for line in complete:
            yield line + newline
    if rest:
        yield rest


def _decoded_lines(path: Path, encoding: str, encoding_from: str, problems: dict[int, str]) -> Iterator[str]:
    """The file's lines as text; the problem of each bad line goes into ``problems`` by its line number."""
    if _is_utf(encoding) and codecs.lookup(encoding).name not in ("utf-8", "utf-8-sig"):
        # UTF-16/32: no byte-level line splitting; lone surrogates mark the bad sequences.
        display = _ENCODING_NAMES.get(codecs.lookup(encoding).name, encoding)
        with path.open(encoding=encoding, errors="surrogatepass", newline="") as text_handle:
            try:
                for number, line in enumerate(text_handle, start=1):
                    if _SURROGATE.search(line):
                        problems[number] = f"the line holds an invalid {display} sequence (a lone surrogate)"
                    yield line.lstrip("\ufeff") if number == 1 else line
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: the file ends in the middle of a {display} character ({exc})") from exc
        return
    decoder = _LineDecoder(encoding, encoding_from)
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
        handle.seek(0)
        newline = b"\r" if b"\r" in head and b"\n" not in head else b"\n"
        for number, raw in enumerate(_byte_lines(handle, newline), start=1):
            text, problem = decoder.decode(raw)
            if problem is not None:
                problems[number] = problem
            yield text


# --- CSV --------------------------------------------------------------------------------------------------------


def detect_delimiter(sample: str) -> str | None:
    """The delimiter that splits the first records into the most columns most consistently (None: one column)."""
    lines = sample.splitlines(keepends=True)[: SNIFF_RECORDS * 4]
    best: tuple[float, int] = (0.0, 1)
    chosen = None
    for candidate in DELIMITERS:
        try:
            records = [row for row in csv.reader(lines, delimiter=candidate) if row][:SNIFF_RECORDS]
        except csv.Error:
            continue
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        consistency = sum(len(row) == width for row in records) / len(records)
        if (consistency, width) > best:
            best, chosen = (consistency, width), candidate
    return chosen


def _open_csv(path: Path, encoding: str | None, delimiter: str | None) -> Table:
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        whole_file = not handle.read(1)
    if encoding is None:
        encoding, encoding_from = detect_encoding(head, whole_file=whole_file)
    else:
        encoding_from = "given"
        if codecs.lookup(encoding).name == "utf-8" and head.startswith(codecs.BOM_UTF8):
            encoding = "utf-8-sig"
    delimiter_from = "given"
    if delimiter is None:
        sample = head[: 1 << 16].decode(encoding, errors="replace").lstrip("\ufeff")
        detected = detect_delimiter(sample)
        delimiter, delimiter_from = (detected, "detected") if detected else (",", "one column found")
    problems: dict[int, str] = {}
    lines = _decoded_lines(path, encoding, encoding_from, problems)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: broken CSV: {exc}") from exc
    header_problems = [problems.pop(line) for line in range(1, reader.line_num + 1) if line in problems]
    if header_problems:
        raise DataError(
            f"{path}: the header (line 1: {readable_columns(header)}) cannot be read: {header_problems[0]}; "
            f"give the file's encoding, e.g. {ENCODING_HINT}"
        )
    table_format = TableFormat("csv", encoding, encoding_from, delimiter, delimiter_from)
    return Table(path, table_format, header, _csv_rows(path, reader, problems))


def _csv_rows(path: Path, reader: Any, problems: dict[int, str]) -> Iterator[TableRow]:
    start = reader.line_num + 1
    try:
        for cells in reader:
            end = reader.line_num
            problem = None
            if problems:
                found = [(line, problems.pop(line)) for line in range(start, end + 1) if line in problems]
                problem = f"line {found[0][0]}: {found[0][1]}" if found else None
            yield TableRow(start, cells, problem)
            start = end + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: broken CSV: {exc}") from exc


# --- JSONL ------------------------------------------------------------------------------------------------------


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int) or (isinstance(value, float) and not value.is_integer()):
        return json.dumps(value)
    if isinstance(value, float):
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def _open_jsonl(path: Path, encoding: str | None) -> Table:
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        whole_file = not handle.read(1)
    encoding_from = "given"
    if encoding is None:
        encoding, encoding_from = detect_encoding(head, whole_file=whole_file)
    problems: dict[int, str] = {}
    records = _jsonl_records(_decoded_lines(path, encoding, encoding_from, problems), problems)
    # The columns are the keys of the first object; rows are read with them.
    pending: list[tuple[int, dict[str, Any] | None, str | None]] = []
    header: list[str] = []
    for number, record, problem in records:
        pending.append((number, record, problem))
        if record is not None:
            header = list(record)
            break
    if not header:
        raise DataError(f"{path}: no JSON object found (each line of a .jsonl file is one object)")
    table_format = TableFormat("jsonl", encoding, encoding_from)
    return Table(path, table_format, header, _jsonl_rows(header, pending, records))


def _jsonl_records(
    lines: Iterable[str], problems: dict[int, str]
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for number, line in enumerate(lines, start=1):
        if number in problems:
            yield number, None, f"line {number}: {problems.pop(number)}"
            continue
        if not line.strip():
            yield number, {}, None
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(record, dict):
            yield number, None, f"line {number}: not a JSON object"
            continue
        yield number, record, None


def _jsonl_rows(
    header: list[str],
    pending: list[tuple[int, dict[str, Any] | None, str | None]],
    records: Iterator[tuple[int, dict[str, Any] | None, str | None]],
) -> Iterator[TableRow]:
    for number, record, problem in itertools.chain(pending, records):
        if record is None:
            yield TableRow(number, [], problem)
        elif record:
            yield TableRow(number, [_cell_text(record.get(key)) for key in header])
        else:
            yield TableRow(number, [])


# --- Excel ------------------------------------------------------------------------------------------------------


def _first_sheet(path: Path) -> Any:
    try:
        from openpyxl import load_workbook
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "reading .xlsx needs openpyxl: pip install openpyxl (or save the sheet as CSV)"
        ) from exc
    try:
        return load_workbook(path, read_only=True, data_only=True).worksheets[0]
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors for files it cannot read
        raise DataError(f"{path}: not a readable .xlsx workbook ({exc})") from exc


def _open_excel(path: Path) -> Table:
    rows = _first_sheet(path).iter_rows(values_only=True)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: the sheet is empty")
    header = [_cell_text(value) for value in first]

    def records() -> Iterator[TableRow]:
        for number, values in enumerate(rows, start=2):
            cells = [_cell_text(value.isoformat() if hasattr(value, "isoformat") else value) for value in values]
            yield TableRow(number, cells)

    return Table(path, TableFormat("xlsx"), header, records())
