"""Summarise an adjudication log: per task, how many disagreements kept the first label and how many changed it.

    python3 data/adjudication/summary.py LOG.jsonl [LOG2.jsonl ...]

Also prints the label changes by direction (e.g. severity medel -> lag) and, for keywords, how many spans were
removed and added. Standard library only.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

TASKS = ("department", "sentiment", "severity", "keywords")


def spans(value: list[dict[str, object]]) -> set[tuple[object, object, object]]:
    return {(s["start"], s["end"], s["type"]) for s in value}


def summarise(path: Path) -> str:
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    kept: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    directions: Counter[tuple[str, str, str]] = Counter()
    removed = added = 0
    for row in rows:
        task = row["task"]
        if task == "keywords":
            first, final = spans(row["first"]), spans(row["final"])
            removed += len(first - final)
            added += len(final - first)
            same = first == final
        else:
            same = row["first"] == row["final"]
            if not same:
                directions[(task, row["first"], row["final"])] += 1
        (kept if same else changed)[task] += 1
    lines = [
        f"{path}: {len(rows)} disagreements",
        "| task | disagreements | first label kept | first label changed |",
        "|---|---|---|---|",
    ]
    for task in TASKS:
        lines.append(f"| {task} | {kept[task] + changed[task]} | {kept[task]} | {changed[task]} |")
    lines.append("changes: " + ", ".join(f"{t} {a} -> {b} {n}" for (t, a, b), n in sorted(directions.items())))
    lines.append(f"keyword spans: {removed} removed, {added} added")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for name in argv:
        sys.stdout.write(summarise(Path(name)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
