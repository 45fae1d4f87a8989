"""PNG plots of evaluation results (matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def plot_confusion_matrix(task_metrics: dict[str, Any], path: Path, title: str) -> None:
    matrix = np.asarray(task_metrics["confusion_matrix"])
    labels = task_metrics["labels"]
    size = 2 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            colour = "white" if value > matrix.max() / 2 else "black"
            ax.text(col, row, str(value), ha="center", va="center", color=colour, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(calibration: dict[str, Any], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for key, name in (("bins_before", "before"), ("bins_after", f"T={calibration['temperature']:.2f}")):
        points = [(b["confidence"], b["accuracy"]) for b in calibration[key] if b["count"]]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "o-", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(summary: list[dict[str, Any]], metrics: Sequence[str], path: Path) -> None:
    """One panel per metric: the mean over seeds against labelled training reports (log x-axis), with error bars of
    one standard deviation; points trained on no labelled report (zero-shot) as a dashed horizontal line."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for method in sorted({s["method"] for s in summary}):
            entries = sorted(
                (s for s in summary if s["method"] == method and s.get(f"{metric}_mean") is not None),
                key=lambda s: s["n_examples"],
            )
            trained = [s for s in entries if s["n_examples"] > 0]
            if trained:
                ax.errorbar(
                    [s["n_examples"] for s in trained],
                    [s[f"{metric}_mean"] for s in trained],
                    yerr=[s[f"{metric}_std"] or 0.0 for s in trained],
                    fmt="o-",
                    capsize=3,
                    label=method,
                )
            for s in entries:
                if s["n_examples"] == 0:
                    ax.axhline(s[f"{metric}_mean"], linestyle="--", color="grey", label=f"{method} (0 labels)")
        ax.set_xscale("log")
        sizes = sorted({s["n_examples"] for s in summary if s["n_examples"] > 0})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("labelled training reports")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
