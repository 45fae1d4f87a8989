"""Find reports that share an opening (their first four words) across report files.

    python3 data/openings.py FILE.jsonl [FILE.jsonl ...]

An opening is the first four `\\w+` tokens of the text, lowercased (the rule used when the core was merged). Prints
each colliding group with its ids and exits 1 if there is any. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

WORDS = 4


def opening(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower())[:WORDS])


def collisions(paths: list[Path]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    report = json.loads(line)
                    groups[opening(report["text"])].append(report["id"])
    return {key: ids for key, ids in groups.items() if len(ids) > 1}


def main(argv: list[str]) -> int:
    found = collisions([Path(name) for name in argv])
    for key, ids in sorted(found.items()):
        sys.stdout.write(f"{key!r}: {', '.join(ids)}\n")
    sys.stdout.write(f"{len(found)} shared openings\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
