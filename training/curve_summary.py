"""The learning curve's results file, read and summarised without heavy imports (the benchmarks read it)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.run_dir import HeadlineMetrics


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (sample) standard deviation of every headline metric per (method, share), over its seeds."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["fraction"]), []).append(row)
    summary = []
    for (method, fraction), group in sorted(groups.items()):
        entry: dict[str, Any] = {
            "method": method,
            "fraction": fraction,
            "n_examples": group[0]["n_examples"],
            "seeds": len(group),
        }
        for metric in HeadlineMetrics.names():
            values = [row[metric] for row in group if row.get(metric) is not None]
            mean = sum(values) / len(values) if values else None
            entry[f"{metric}_mean"] = mean
            entry[f"{metric}_std"] = (
                math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                if mean is not None and len(values) > 1
                else (0.0 if values else None)
            )
        summary.append(entry)
    return summary


def read_learning_curve(path: Path) -> dict[str, Any]:
    """``learning_curve.json``: ``{"rows": [...], "summary": [...]}`` (a bare list of rows, the format before
    the summary was added, is read as rows and summarised)."""
    values = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(values, list):
        return {"rows": values, "summary": summarise(values)}
    return dict(values)
