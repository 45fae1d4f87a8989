"""Split the hand-written core (data/core.jsonl) into data/reports/{train,dev,test}.jsonl.

The held-out membership is pinned in data/split_pinned.json: it is the split that `split()` below chose on the 1.0
labels (dev and test get 17 reports per department each, stratified by severity within the department, largest
remainder, every severity with at least two reports in the department gets at least one place in dev and in test, so
akut is in both; seeded). Label fixes made later by adjudication would change the strata and move reports, so the
script reads the pinned ids instead of re-drawing them; `--check-pinned` shows that `split()` on the labels of
data 1.0 (`git show 66addf8:data/core.jsonl`) reproduces the pinned file. Standard library only, so
`python3 data/split_core.py` rewrites identical files.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent
CORE = DATA / "core.jsonl"
PINNED = DATA / "split_pinned.json"
OUT = DATA / "reports"
SEED = 20240611
PER_DEPARTMENT = 17  # reports per department in dev and in test
SEVERITIES = ("lag", "medel", "hog", "akut")

logger = logging.getLogger("split_core")


def read_core(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def severity_quota(counts: Counter[str], total: int) -> dict[str, int]:
    """Places per severity for one department in one held-out split (largest remainder, at least 1 where possible)."""
    size = sum(counts.values())
    exact = {sev: total * counts[sev] / size for sev in SEVERITIES}
    quota = {sev: int(exact[sev]) for sev in SEVERITIES}
    # both held-out splits draw from the same stratum, so a severity needs two reports to appear in both
    for sev in SEVERITIES:
        if quota[sev] == 0 and counts[sev] >= 2:
            quota[sev] = 1
    by_remainder = sorted(SEVERITIES, key=lambda sev: (exact[sev] - int(exact[sev]), counts[sev]), reverse=True)
    while sum(quota.values()) < total:
        sev = next(s for s in by_remainder if 2 * (quota[s] + 1) <= counts[s])
        quota[sev] += 1
        by_remainder.remove(sev)
        by_remainder.append(sev)
    while sum(quota.values()) > total:
        sev = max((s for s in SEVERITIES if quota[s] > 1), key=lambda s: (quota[s] - exact[s], quota[s]))
        quota[sev] -= 1
    return quota


def read_pinned(path: Path = PINNED) -> dict[str, str]:
    """Report id -> "dev" or "test" for the pinned held-out reports."""
    pinned = json.loads(path.read_text(encoding="utf-8"))
    return {report_id: name for name in ("dev", "test") for report_id in pinned[name]}


def assign(reports: list[dict[str, Any]], held_out: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for report in reports:  # keep the file's order inside each split
        splits[held_out.get(report["id"], "train")].append(report)
    return splits


def split(reports: list[dict[str, Any]], seed: int = SEED) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    strata: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for report in reports:
        strata[report["department"]][report["severity"]].append(report)
    held_out: dict[str, str] = {}
    for department in sorted(strata):
        by_severity = strata[department]
        quota = severity_quota(Counter({sev: len(rows) for sev, rows in by_severity.items()}), PER_DEPARTMENT)
        for sev in SEVERITIES:
            rows = sorted(by_severity.get(sev, []), key=lambda r: r["id"])
            rng.shuffle(rows)
            for row in rows[: quota[sev]]:
                held_out[row["id"]] = "dev"
            for row in rows[quota[sev] : 2 * quota[sev]]:
                held_out[row["id"]] = "test"
    return assign(reports, held_out)


def _pinned_lists() -> dict[str, list[str]]:
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    return {name: pinned[name] for name in ("dev", "test")}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(sys.argv) == 3 and sys.argv[1] == "--check-pinned":
        drawn = split(read_core(Path(sys.argv[2])))
        same = all({r["id"] for r in drawn[name]} == set(ids) for name, ids in _pinned_lists().items())
        logger.info("split() on %s %s the pinned membership", sys.argv[2], "reproduces" if same else "DIFFERS FROM")
        raise SystemExit(0 if same else 1)
    reports = read_core(CORE)
    held_out = read_pinned()
    unknown = set(held_out) - {report["id"] for report in reports}
    if unknown:
        raise SystemExit(f"pinned ids missing from {CORE}: {sorted(unknown)[:5]}")
    splits = assign(reports, held_out)
    OUT.mkdir(exist_ok=True)
    for name, rows in splits.items():
        write_jsonl(OUT / f"{name}.jsonl", rows)
        severities = Counter(row["severity"] for row in rows)
        logger.info("%s: %d reports, severity %s", name, len(rows), {s: severities[s] for s in SEVERITIES})


if __name__ == "__main__":
    main()
