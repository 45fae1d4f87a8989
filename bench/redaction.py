"""What redaction costs and catches, on the bundled data.

- damage: the share of annotated PLATS/OBJEKT keyword spans that a redaction touches (the budget: at most 1%);
- survival: case numbers, dates, amounts, house numbers and years found in the texts, and how many a redaction
  touched (the budget: none);
- removed: what redaction replaces in the bundled texts, by type;
- name recall: names put into signatures, greetings and sentences of the bundled texts, held out by kind: listed
  names (in the Faker lists), and made-up names that are in no list (found only by their context).

    python -m bench.redaction [--out bench/results/redaction.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.audit.redaction import NAMN, Finding, find_personal_data, name_lists
from bench.measure import RESULTS_DIR, target, write_result

DATA_FILES = tuple(Path("data/reports").glob("*.jsonl"))
DAMAGE_BUDGET = 0.01

_MONTHS = "januari|februari|mars|april|maj|juni|juli|augusti|september|oktober|november|december"
PROTECTED = {
    "case_number": re.compile(r"\b(?:KS|BN|MN|SN|KFN|Dnr|dnr|Ärende|ärende)[ .:-]*(?:nr\.? ?)?\d{2,4}[-/.:]\d{1,6}\b"),
    "date": re.compile(
        rf"\b\d{{4}}-\d{{2}}-\d{{2}}\b|\b\d{{1,2}}/\d{{1,2}}(?: \d{{4}})?\b|\b\d{{1,2}}\.\d{{1,2}}\.\d{{2,4}}\b"
        rf"|\b\d{{1,2}}(?::e)? (?:{_MONTHS})\b"
    ),
    "amount": re.compile(r"\b\d{1,3}(?:[  ]\d{3})*(?:[.,]\d+)? ?(?:kr|kronor|SEK|:-|%|euro|EUR)(?!\w)"),
    "house_number": re.compile(
        r"\b[A-ZÅÄÖ][a-zåäö]+(?:gatan|vägen|gränd|torget|stigen|allén|backen|leden) \d+[A-Z]?\b"
    ),
    "year": re.compile(r"\b(?:19|20)\d\d\b"),
}

# Made-up names (in no list): found only by their context.
UNLISTED_FIRST = ["Zorvan", "Kelmira", "Trisken", "Yandrel", "Olvika", "Brastian", "Quenna", "Dovrik"]
UNLISTED_LAST = ["Pyrwald", "Skeltorp", "Vindqvarn", "Hexeborg", "Marlundh", "Tjorvas", "Gruvelius", "Oxtrand"]
# Where residents write names: (template, kind). {name} is one first name, {full} a first name and a surname.
NAME_CONTEXTS = [
    ("{text}\nMvh {full}", "signature"),
    ("{text} Hälsningar, {name}", "signature"),
    ("{text}\n\nMed vänliga hälsningar\n{full}", "signature"),
    ("Hej! Jag heter {full} och bor här. {text}", "introduction"),
    ("{text}\n{full}", "last_line"),
    ("{text} /{name}", "signature"),
    ("Hej {name}, {text}", "greeting"),
    ("{text} Min granne {full} håller med.", "in_sentence"),
]


def _overlaps(start: int, end: int, findings: Sequence[Finding]) -> bool:
    return any(finding.start < end and start < finding.end for finding in findings)


def _in_email_address(text: str, start: int, end: int) -> bool:
    token_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
    token_end = min(i for i in (text.find(" ", end), text.find("\n", end), len(text)) if i >= 0)
    return "@" in text[token_start:token_end]


def read_reports(files: Sequence[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(files) for line in path.read_text(encoding="utf-8").splitlines()]


def damage_and_survival(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    spans = damaged = 0
    damaged_examples = []
    survival: dict[str, dict[str, Any]] = {
        name: {"found": 0, "touched": 0, "touched_examples": []} for name in PROTECTED
    }
    removed: Counter[str] = Counter()
    for report in reports:
        text = report["text"]
        findings = find_personal_data(text)
        removed.update(finding.type for finding in findings)
        for keyword in report.get("keywords") or []:
            if keyword["type"] not in ("PLATS", "OBJEKT"):
                continue
            spans += 1
            if _overlaps(keyword["start"], keyword["end"], findings):
                damaged += 1
                damaged_examples.append(
                    {"span": text[keyword["start"] : keyword["end"]], "taken_for": [f.type for f in findings]}
                )
        for name, pattern in PROTECTED.items():
            for match in pattern.finditer(text):
                if _in_email_address(text, match.start(), match.end()):
                    continue  # "anna.1988@..." holds a year, but it is the address's
                survival[name]["found"] += 1
                if _overlaps(match.start(), match.end(), findings):
                    survival[name]["touched"] += 1
                    survival[name]["touched_examples"].append(match.group())
    return {
        "plats_objekt_spans": spans,
        "damaged": damaged,
        "damaged_share": damaged / spans if spans else 0.0,
        "damaged_examples": damaged_examples,
        "survival": survival,
        "removed_by_type": dict(removed),
    }


def name_recall(reports: Sequence[dict[str, Any]], *, seed: int = 13, per_context: int = 60) -> dict[str, Any]:
    """Share of names found whole, per context and per kind of name (listed, unlisted)."""
    rng = random.Random(seed)
    lists = name_lists()
    listed_first = sorted(lists.first - lists.ambiguous)
    listed_last = sorted(lists.last)
    texts = [report["text"] for report in reports if not find_personal_data(report["text"])]
    results: dict[str, dict[str, float]] = {}
    for kind in ("listed", "unlisted"):
        for template, context in NAME_CONTEXTS:
            hits = 0
            for _ in range(per_context):
                first = rng.choice(listed_first if kind == "listed" else UNLISTED_FIRST)
                last = rng.choice(listed_last if kind == "listed" else UNLISTED_LAST)
                full = f"{first} {last}"
                name = full if "{full}" in template else first
                text = template.format(text=rng.choice(texts).rstrip(), name=first, full=full)
                start = text.index(name)
                findings = [f for f in find_personal_data(text) if f.type == NAMN]
                hits += any(f.start <= start and start + len(name) <= f.end for f in findings)
            key = f"{kind}/{context}"
            previous = results.get(key, {"found": 0.0, "tried": 0.0})
            results[key] = {"found": previous["found"] + hits, "tried": previous["tried"] + per_context}
    return {key: value["found"] / value["tried"] for key, value in sorted(results.items())}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="*", default=list(DATA_FILES), help="Report JSONL files.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "redaction.json")
    args = parser.parse_args(argv)
    reports = read_reports(args.data)
    measured = damage_and_survival(reports)
    recall = name_recall(reports)
    touched = sum(entry["touched"] for entry in measured["survival"].values())
    result = {
        "data": [str(path) for path in sorted(args.data)],
        "reports": len(reports),
        **measured,
        "name_recall": recall,
        "targets": [
            target(
                "PLATS/OBJEKT spans damaged",
                f"<= {DAMAGE_BUDGET:.0%}",
                measured["damaged_share"],
                measured["damaged_share"] <= DAMAGE_BUDGET,
            ),
            target("case numbers, dates, amounts, house numbers, years touched", "0", touched, touched == 0),
        ],
    }
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
