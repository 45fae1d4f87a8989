"""Write data/reports/{train,dev,test}.jsonl from the labelled source files (data/core.jsonl, then data/v2.jsonl).

    python3 data/split.py                          # rewrite the three splits from the pinned membership
    python3 data/split.py --draw v2.jsonl [--train-only data/adjudication/v2_merge.jsonl]
                                                   # draw dev and test for a new source file once, and pin them
    python3 data/split.py --check-pinned v2.jsonl LABELS.jsonl
                                                   # show that drawing on LABELS (the file as it was when it was
                                                   # drawn) reproduces the pinned membership of that source

Which reports are held out is pinned per source file in data/split_pinned.json, so that label fixes made later (the
adjudication of a second annotation changes departments and severities, i.e. the strata) never move a report between
splits, and the dev and test reports of data 1.0 stay where they are when new reports arrive.

How a source is drawn (once, with `--draw`): per department, dev and test each get round(n * 17 / 115) of its n
reports (the 1.0 proportion, 17 of 115 = 14.8%), stratified by severity within the department: largest remainder,
and every severity with at least two reports in the department gets at least one place in dev and in test, so akut
is in both. Within each (department, severity) group the reports are sorted by id and shuffled with a seeded RNG;
the first quota go to dev, the next quota to test, the rest to train. The seed is stored with the pins. Reports
listed as `"action": "train_only"` in the --train-only log (retellings of a train report, or of each other) count in
the department's n but take no part in the draw and go to train, so that no retelling pair is split across train and
dev/test.

Inside each split the reports keep the order of the source files (core first). Standard library only; a rerun writes
byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent
SOURCES = ("core.jsonl", "v2.jsonl")  # in output order; a source that does not exist yet is skipped
PINNED = DATA / "split_pinned.json"
OUT = DATA / "reports"
SEED = 20240611
HELD_OUT_FRACTION = 17 / 115  # per department, for dev and for test each (data 1.0: 17 of 115 per department)
SEVERITIES = ("lag", "medel", "hog", "akut")
SPLITS = ("train", "dev", "test")

logger = logging.getLogger("split")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


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


def draw(
    reports: list[dict[str, Any]], seed: int = SEED, train_only: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    """Stratified dev and test ids for one source (see the module docstring)."""
    rng = random.Random(seed)
    strata: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    department_sizes = Counter(report["department"] for report in reports)  # train-only reports count here too
    for report in reports:
        if report["id"] in train_only:
            continue
        strata[report["department"]][report["severity"]].append(report)
    held_out: dict[str, list[str]] = {"dev": [], "test": []}
    for department in sorted(strata):
        by_severity = strata[department]
        counts = Counter({sev: len(rows) for sev, rows in by_severity.items()})
        quota = severity_quota(counts, round(department_sizes[department] * HELD_OUT_FRACTION))
        for sev in SEVERITIES:
            rows = sorted(by_severity.get(sev, []), key=lambda r: r["id"])
            rng.shuffle(rows)
            held_out["dev"] += [row["id"] for row in rows[: quota[sev]]]
            held_out["test"] += [row["id"] for row in rows[quota[sev] : 2 * quota[sev]]]
    order = {report["id"]: position for position, report in enumerate(reports)}
    return {name: sorted(ids, key=order.__getitem__) for name, ids in held_out.items()}


def read_train_only(log: Path | None) -> frozenset[str]:
    if log is None:
        return frozenset()
    return frozenset(row["id"] for row in read_jsonl(log) if row.get("action") == "train_only")


def read_pins() -> dict[str, Any]:
    return json.loads(PINNED.read_text(encoding="utf-8"))


def write_pins(pins: dict[str, Any]) -> None:
    lines = ["{", f'  "_comment": {json.dumps(pins["_comment"], ensure_ascii=False)},', '  "sources": {']
    sources = list(pins["sources"].items())
    for number, (name, entry) in enumerate(sources):
        lines.append(f"    {json.dumps(name)}: {{")
        lines.append(f'      "drawn_on": {json.dumps(entry["drawn_on"], ensure_ascii=False)},')
        lines.append(f'      "seed": {entry["seed"]},')
        if entry.get("train_only_log"):
            lines.append(f'      "train_only_log": {json.dumps(entry["train_only_log"])},')
        for key in ("dev", "test"):
            ids = ",\n".join(f"        {json.dumps(i)}" for i in entry[key])
            lines.append(f'      "{key}": [\n{ids}\n      ]' + ("," if key == "dev" else ""))
        lines.append("    }" + ("," if number < len(sources) - 1 else ""))
    lines += ["  }", "}"]
    PINNED.write_text("\n".join(lines) + "\n", encoding="utf-8")


def assign(sources: list[tuple[str, list[dict[str, Any]]]], pins: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for name, reports in sources:
        if name not in pins["sources"]:
            raise SystemExit(f"{name} has no pinned split: run `python3 data/split.py --draw {name}` once")
        entry = pins["sources"][name]
        held_out = {report_id: split for split in ("dev", "test") for report_id in entry[split]}
        missing = set(held_out) - {report["id"] for report in reports}
        if missing:
            raise SystemExit(f"pinned ids missing from {name}: {sorted(missing)[:5]}")
        for report in reports:
            splits[held_out.get(report["id"], "train")].append(report)
    return splits


def present_sources() -> list[tuple[str, list[dict[str, Any]]]]:
    return [(name, read_jsonl(DATA / name)) for name in SOURCES if (DATA / name).exists()]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draw", metavar="SOURCE", help="draw and pin dev/test for a new source file (e.g. v2.jsonl)")
    parser.add_argument("--train-only", type=Path, metavar="LOG", help="with --draw: a merge log naming train-only ids")
    parser.add_argument(
        "--check-pinned",
        nargs=2,
        metavar=("SOURCE", "LABELS"),
        help="check that drawing on LABELS reproduces the pins of SOURCE",
    )
    args = parser.parse_args(argv)
    pins = read_pins()
    if args.check_pinned:
        name, labels = args.check_pinned
        entry = pins["sources"][name]
        log = entry.get("train_only_log")
        drawn = draw(read_jsonl(Path(labels)), entry["seed"], read_train_only(DATA.parent / log if log else None))
        same = all(drawn[split] == entry[split] for split in ("dev", "test"))
        logger.info("drawing on %s %s the pinned split of %s", labels, "reproduces" if same else "DIFFERS FROM", name)
        return 0 if same else 1
    if args.draw:
        if args.draw in pins["sources"]:
            raise SystemExit(f"{args.draw} is already pinned; its membership must not be drawn again")
        held_out = draw(read_jsonl(DATA / args.draw), SEED, read_train_only(args.train_only))
        entry: dict[str, Any] = {"drawn_on": f"the labels of data/{args.draw} as first merged", "seed": SEED}
        if args.train_only:
            entry["train_only_log"] = args.train_only.resolve().relative_to(DATA.parent).as_posix()
        pins["sources"][args.draw] = {**entry, **held_out}
        write_pins(pins)
        logger.info("pinned %s: dev %d, test %d", args.draw, len(held_out["dev"]), len(held_out["test"]))
    splits = assign(present_sources(), pins)
    OUT.mkdir(exist_ok=True)
    for name in SPLITS:
        rows = splits[name]
        write_jsonl(OUT / f"{name}.jsonl", rows)
        severities = Counter(row["severity"] for row in rows)
        logger.info("%s: %d reports, severity %s", name, len(rows), {s: severities[s] for s in SEVERITIES})
    return 0


if __name__ == "__main__":
    sys.exit(main())
