"""Measure the style mix of report files (the "Style mix" table of the dataset card).

    python3 data/style_mix.py FILE.jsonl [FILE.jsonl ...]        # prints a Markdown table, one column per file

Rules (heuristics, counted per report):
- English: more English function words (the, and, is, you, please, ...) than Swedish ones (och, är, det, att, ...).
- all lowercase: `text == text.lower()`.
- no diacritics: a Swedish (not English) report with none of å ä ö é. "Clearly stripped" means it also contains a
  word that is a Swedish word with its diacritics removed ("ar", "pa", "nar", "fran", "utanfor", "...vagen", ...).
- personal data: regular expressions for Swedish phone numbers, e-mail addresses and personnummer.
- length: whitespace-separated words (short 1-15, medium 16-60, long 61-150, very long over 150).
- no PLATS / no OBJEKT span: the report has no keyword span of that type.
Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENGLISH = {
    "the",
    "and",
    "is",
    "you",
    "please",
    "it",
    "to",
    "of",
    "in",
    "my",
    "this",
    "that",
    "there",
    "for",
    "with",
    "have",
    "has",
    "are",
    "was",
    "not",
    "can",
    "on",
    "we",
    "our",
    "be",
    "at",
    "from",
    "your",
    "they",
}
SWEDISH = {
    "och",
    "är",
    "det",
    "att",
    "på",
    "jag",
    "inte",
    "som",
    "en",
    "ett",
    "har",
    "för",
    "med",
    "vi",
    "den",
    "av",
    "till",
    "om",
    "kan",
    "ni",
    "var",
    "men",
    "så",
    "vid",
    "hej",
    "ar",
    "pa",
    "e",
    "o",
    "nu",
}
STRIPPED = {
    "ar",
    "pa",
    "nar",
    "fran",
    "aven",
    "nagon",
    "nagot",
    "nagra",
    "hander",
    "har",
    "gar",
    "far",
    "sa",
    "manga",
    "ga",
    "star",
    "overallt",
    "hamtning",
    "tomt",
    "tomma",
    "oppet",
    "langre",
    "dar",
    "mojligt",
    "ocksa",
    "nasta",
    "battre",
    "ater",
    "utanfor",
    "fraga",
    "ganger",
    "gang",
    "fatt",
    "forsta",
    "borjar",
    "daligt",
    "ovre",
    "ratt",
    "vaxeln",
    "manad",
    "nagonsin",
    "forbi",
    "hjalp",
    "halsningar",
}
STRIPPED_ENDINGS = ("vagen", "tjansten", "bassangen", "stallet", "omradet")
DIACRITICS = re.compile(r"[åäöéÅÄÖÉ]")
PHONE = re.compile(r"(?<![\d-])(?:\+\d{2}\s?\d{2,3}|0\d{1,3})[-\s]?\d{2,3}(?:\s?\d{2,3}){1,2}(?![\d-])")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
PERSONNUMMER = re.compile(r"(?<!\d)(?:19|20)?\d{6}[-+]\d{4}(?!\d)")
WORD = re.compile(r"[^\W\d_]+")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def is_english(text: str) -> bool:
    tokens = words(text)
    return sum(t in ENGLISH for t in tokens) > sum(t in SWEDISH for t in tokens)


def no_diacritics(text: str) -> bool:
    return not is_english(text) and not DIACRITICS.search(text)


def stripped(text: str) -> bool:
    # a Swedish word that lost its diacritics; "har" and "sa" are also words with no diacritics, so they do not count
    return no_diacritics(text) and any(
        t in STRIPPED - {"har", "sa", "far"} or t.endswith(STRIPPED_ENDINGS) for t in words(text)
    )


def length(report: dict[str, Any]) -> int:
    return len(report["text"].split())


def has_span(report: dict[str, Any], kind: str) -> bool:
    return any(s["type"] == kind for s in report.get("keywords") or [])


ROWS: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ("English", lambda r: is_english(r["text"])),
    ("all lowercase", lambda r: r["text"] == r["text"].lower()),
    ("Swedish without any å/ä/ö/é", lambda r: no_diacritics(r["text"])),
    ('... of which clearly stripped diacritics ("ar", "pa", "nar")', lambda r: stripped(r["text"])),
    (
        "fake personal data (phone, e-mail or personnummer)",
        lambda r: bool(PHONE.search(r["text"]) or EMAIL.search(r["text"]) or PERSONNUMMER.search(r["text"])),
    ),
    ("short (1-15 words)", lambda r: length(r) <= 15),
    ("medium (16-60 words)", lambda r: 16 <= length(r) <= 60),
    ("long (61-150 words)", lambda r: 61 <= length(r) <= 150),
    ("very long (over 150 words)", lambda r: length(r) > 150),
    ("no PLATS span", lambda r: not has_span(r, "PLATS")),
    ("no OBJEKT span", lambda r: not has_span(r, "OBJEKT")),
]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def cell(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.1f}%)" if total else "0"


def table(files: list[Path]) -> str:
    data = [(path, read_jsonl(path)) for path in files]
    header = "| | " + " | ".join(f"{path.name} ({len(rows):,})" for path, rows in data) + " |"
    lines = [header, "|---|" + "---|" * len(data)]
    for label, test in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(sum(map(test, rows)), len(rows)) for _, rows in data) + " |")
    kinds = " | ".join(
        " / ".join(str(sum(bool(rx.search(r["text"])) for r in rows)) for rx in (PHONE, EMAIL, PERSONNUMMER))
        for _, rows in data
    )
    lines.insert(7, f"| ... phone number / e-mail / personnummer | {kinds} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    sys.stdout.write(table([Path(name) for name in argv]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
