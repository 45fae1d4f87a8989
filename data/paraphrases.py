"""List report pairs that may be paraphrases of each other, for a human to review.

    python3 data/paraphrases.py --new v2.jsonl [--against core.jsonl ...] [--min 0.2]

`data validate` rejects near copies (word 3-shingle Jaccard >= 0.8). A writer who rewords another report slightly,
or who retells an existing report's scenario with new names, stays far below that. This tool ranks every pair that
involves a report of the --new file (new vs new and new vs --against) by two looser similarities, after lowercasing
and removing diacritics: the Jaccard similarity of the sets of content words (4 letters or more) and of word
2-shingles. Pairs with either similarity >= --min are printed, most similar first. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

COMMON = 80  # content words in more reports than this do not propose candidate pairs


def tokens(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    return re.findall(r"[a-z0-9]+", folded)


def jaccard(left: set[object], right: set[object]) -> float:
    union = left | right
    return len(left & right) / len(union) if union else 0.0


def read(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return [(r["id"], r["text"]) for r in map(json.loads, filter(str.strip, handle))]


Pair = tuple[float, float, str, str]


def similar_pairs(new: list[tuple[str, str]], old: list[tuple[str, str]], minimum: float) -> list[Pair]:
    reports = new + old
    words = [{t for t in tokens(text) if len(t) >= 4} for _, text in reports]
    bigrams = [set(zip(toks, toks[1:], strict=False)) for toks in (tokens(text) for _, text in reports)]
    index: dict[str, list[int]] = defaultdict(list)
    for position, content in enumerate(words):
        for word in content:
            index[word].append(position)
    found = []
    for left in range(len(new)):
        candidates = {right for word in words[left] if len(index[word]) <= COMMON for right in index[word]}
        for right in candidates:
            if right == left or (right < len(new) and right < left):
                continue
            content, phrase = jaccard(words[left], words[right]), jaccard(bigrams[left], bigrams[right])
            if max(content, phrase) >= minimum:
                found.append((content, phrase, reports[left][0], reports[right][0]))
    return sorted(found, key=lambda pair: max(pair[0], pair[1]), reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", required=True, type=Path, help="the file whose reports are checked")
    parser.add_argument("--against", nargs="*", type=Path, default=[], help="existing files to compare with")
    parser.add_argument("--min", type=float, default=0.2, help="report pairs with either similarity at least this")
    args = parser.parse_args(argv)
    new = read(args.new)
    old = [row for path in args.against for row in read(path)]
    texts = dict(new + old)
    pairs = similar_pairs(new, old, args.min)
    for content, phrase, left, right in pairs:
        sys.stdout.write(f"{content:.2f} {phrase:.2f} {left} {right}\n")
        sys.stdout.write(f"  {texts[left][:150]!r}\n  {texts[right][:150]!r}\n")
    sys.stdout.write(f"{len(pairs)} pairs with a similarity >= {args.min}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
