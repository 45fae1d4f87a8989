"""Apply the final labels of an adjudication log to a report file, in place.

    python3 data/adjudication/apply.py LOG.jsonl REPORTS.jsonl [--check]

LOG has one line per disagreement: {"id", "task", "first", "second", "final", "reason"}; for `keywords` the values
are lists of spans {"start", "end", "type", "text"}. For every line whose id is in REPORTS, the report's label for the
task must equal either `first` (it is then replaced by `final`) or already `final` (nothing to do); anything else is
an error, so the log cannot silently overwrite a label changed by someone else. With --check nothing is written and
the exit status says whether every final label is already in place. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def comparable(task: str, value: Any) -> Any:
    if task != "keywords":
        return value
    return sorted((s["start"], s["end"], s["type"]) for s in value or [])


def stored(task: str, value: Any, text: str) -> Any:
    if task != "keywords":
        return value
    spans = sorted(value, key=lambda s: s["start"])
    for span in spans:
        if "text" in span and text[span["start"] : span["end"]] != span["text"]:
            raise ValueError(f"span {span} does not match the text")
    return [{"start": s["start"], "end": s["end"], "type": s["type"]} for s in spans]


def apply(log: list[dict[str, Any]], reports: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """Return (changed, already final, problems)."""
    by_id = {report["id"]: report for report in reports}
    changed = already = 0
    problems: list[str] = []
    for row in log:
        report = by_id.get(row["id"])
        if report is None:
            continue
        task = row["task"]
        current = comparable(task, report[task])
        if current == comparable(task, row["final"]):
            already += 1
        elif current == comparable(task, row["first"]):
            report[task] = stored(task, row["final"], report["text"])
            changed += 1
        else:
            problems.append(f"{row['id']} {task}: label is neither the logged first nor the final label")
    return changed, already, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("reports", type=Path)
    parser.add_argument("--check", action="store_true", help="only check that the final labels are in place")
    args = parser.parse_args(argv)
    reports = read_jsonl(args.reports)
    changed, already, problems = apply(read_jsonl(args.log), reports)
    for problem in problems:
        sys.stderr.write(problem + "\n")
    if problems:
        return 1
    if args.check:
        sys.stdout.write(f"{args.reports}: {already} final labels in place, {changed} not yet applied\n")
        return 1 if changed else 0
    with args.reports.open("w", encoding="utf-8") as handle:
        for report in reports:
            handle.write(json.dumps(report, ensure_ascii=False) + "\n")
    sys.stdout.write(f"{args.reports}: {changed} labels changed, {already} already final\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
