"""Inter-annotator agreement between two label files of the same reports, and their disagreements.

    python data/agreement.py FIRST.jsonl [FIRST2.jsonl ...] --second SECOND.jsonl [--disagreements OUT.jsonl]

FIRST files hold the first labels (for example data/reports/dev.jsonl and test.jsonl); SECOND holds an independent
annotation of the same ids in the same JSONL format (keywords with character offsets). Reports are matched by id;
only ids present in both are compared. Prints per task: Cohen's kappa for department and sentiment,
quadratic-weighted Cohen's kappa for severity (lag < medel < hog < akut), and micro span F1 for keywords (a span
counts as matched only with the same start, end and type; F1 is symmetric in the two annotators). With
--disagreements it writes one line per disagreement (id, task, first, second, text) for adjudication.

A data tool run from the dev environment: standard library plus scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sklearn.metrics import cohen_kappa_score

SEVERITY_ORDER = ["lag", "medel", "hog", "akut"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def span_set(report: dict[str, Any]) -> set[tuple[int, int, str]]:
    return {(s["start"], s["end"], s["type"]) for s in report.get("keywords") or []}


def span_f1(pairs: list[tuple[dict[str, Any], dict[str, Any]]], kind: str | None = None) -> tuple[float, int, int, int]:
    """Micro F1 of exact spans; returns (f1, matched, spans of first, spans of second)."""
    matched = first_total = second_total = 0
    for first, second in pairs:
        a = {s for s in span_set(first) if kind is None or s[2] == kind}
        b = {s for s in span_set(second) if kind is None or s[2] == kind}
        matched += len(a & b)
        first_total += len(a)
        second_total += len(b)
    f1 = 2 * matched / (first_total + second_total) if first_total + second_total else 1.0
    return f1, matched, first_total, second_total


def agreement(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    result: dict[str, Any] = {"reports": len(pairs)}
    for task in ("department", "sentiment", "severity"):
        first = [a[task] for a, _ in pairs]
        second = [b[task] for _, b in pairs]
        if task == "severity":
            kappa = cohen_kappa_score(
                [SEVERITY_ORDER.index(x) for x in first],
                [SEVERITY_ORDER.index(x) for x in second],
                weights="quadratic",
                labels=list(range(len(SEVERITY_ORDER))),
            )
        else:
            kappa = cohen_kappa_score(first, second)
        disagree = sum(x != y for x, y in zip(first, second, strict=True))
        result[task] = {"kappa": kappa, "raw_agreement": 1 - disagree / len(pairs), "disagreements": disagree}
    f1, matched, n_first, n_second = span_f1(pairs)
    result["keywords"] = {
        "f1": f1,
        "matched": matched,
        "spans_first": n_first,
        "spans_second": n_second,
        "reports_differing": sum(span_set(a) != span_set(b) for a, b in pairs),
    }
    for kind in ("PLATS", "OBJEKT"):
        result["keywords"][kind] = span_f1(pairs, kind)[0]
    return result


def describe_spans(report: dict[str, Any]) -> list[str]:
    text = report["text"]
    return [f"{s['type']}:{text[s['start'] : s['end']]}@{s['start']}" for s in report.get("keywords") or []]


def disagreements(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for first, second in pairs:
        for task in ("department", "sentiment", "severity"):
            if first[task] != second[task]:
                rows.append(
                    {
                        "id": first["id"],
                        "task": task,
                        "first": first[task],
                        "second": second[task],
                        "text": first["text"],
                    }
                )
        if span_set(first) != span_set(second):
            rows.append(
                {
                    "id": first["id"],
                    "task": "keywords",
                    "first": describe_spans(first),
                    "second": describe_spans(second),
                    "text": first["text"],
                }
            )
    return rows


def format_table(result: dict[str, Any]) -> str:
    kw = result["keywords"]
    lines = [
        f"reports compared: {result['reports']}",
        f"department  Cohen's kappa {result['department']['kappa']:.3f}  raw agreement "
        f"{result['department']['raw_agreement']:.3f}  disagreements {result['department']['disagreements']}",
        f"sentiment   Cohen's kappa {result['sentiment']['kappa']:.3f}  raw agreement "
        f"{result['sentiment']['raw_agreement']:.3f}  disagreements {result['sentiment']['disagreements']}",
        f"severity    quadratic-weighted kappa {result['severity']['kappa']:.3f}  raw agreement "
        f"{result['severity']['raw_agreement']:.3f}  disagreements {result['severity']['disagreements']}",
        f"keywords    span F1 {kw['f1']:.3f} (PLATS {kw['PLATS']:.3f}, OBJEKT {kw['OBJEKT']:.3f})  matched "
        f"{kw['matched']} of {kw['spans_first']} / {kw['spans_second']} spans; reports differing "
        f"{kw['reports_differing']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", nargs="+", type=Path, help="files with the first labels")
    parser.add_argument("--second", required=True, type=Path, help="file with the second, independent labels")
    parser.add_argument("--disagreements", type=Path, help="write the disagreements here (JSONL)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    first = {r["id"]: r for path in args.first for r in read_jsonl(path)}
    second = {r["id"]: r for r in read_jsonl(args.second)}
    ids = [i for i in first if i in second]
    missing = len(first) - len(ids)
    for i in ids:
        if first[i]["text"] != second[i]["text"]:
            sys.stderr.write(f"{i}: texts differ between the two files\n")
            return 1
    pairs = [(first[i], second[i]) for i in ids]
    result = agreement(pairs)
    result["missing_in_second"] = missing
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(
            format_table(result) + (f"\n({missing} first-label ids not in the second file)" if missing else "") + "\n"
        )
    if args.disagreements:
        with args.disagreements.open("w", encoding="utf-8") as handle:
            for row in disagreements(pairs):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
