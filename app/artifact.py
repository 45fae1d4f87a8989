"""The artifact contract between ``training/`` (writes) and ``app/`` (reads).

An artifact is a directory with three files:

- ``model.onnx``: one graph, inputs ``input_ids`` and ``attention_mask`` (int64, [batch, sequence]) and one
  output per task: ``department_logits`` / ``sentiment_logits`` / ``severity_logits`` ([batch, labels]) and
  ``keywords_logits`` ([batch, sequence, BIO tags]);
- ``tokenizer.json``: a Hugging Face *tokenizers* file (normalisation, pre-tokenisation, special tokens);
- ``manifest.json``: the :class:`Manifest` below, with the sha256 of the other files;
- ``parity.npz`` (optional; artifacts exported before it lack it): the parity sample, a few dev texts with their
  token ids and the PyTorch fp32 logits of every task (:class:`ParitySpec` names its arrays). The service runs it
  on every engine it can use and keeps only engines that reproduce it.

This module has no heavy imports: the service and the training pipeline both use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.errors import KommunrouterError

SCHEMA_VERSION = 1
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
PARITY_FILE = "parity.npz"
ARTIFACT_FILES = (MODEL_FILE, TOKENIZER_FILE)
OPTIONAL_FILES = (PARITY_FILE,)
INPUT_NAMES = ("input_ids", "attention_mask")
CLASSIFICATION_TASKS = ("department", "sentiment", "severity")
SPAN_TASK = "keywords"
TASKS = (*CLASSIFICATION_TASKS, SPAN_TASK)


def output_name(task: str) -> str:
    """The name of a task's output in the ONNX graph."""
    return f"{task}_logits"


def bio_tags(span_types: Sequence[str]) -> list[str]:
    """The token tag set for keyword spans: ``O`` then ``B-`` and ``I-`` of each span type, in order."""
    tags = ["O"]
    for span_type in span_types:
        tags += [f"B-{span_type}", f"I-{span_type}"]
    return tags


class ArtifactError(KommunrouterError):
    """The artifact is missing, corrupt or does not match its manifest; ``problems`` lists every finding."""

    code = "invalid_artifact"

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"invalid model artifact at {path}: " + "; ".join(self.problems))


class Label(BaseModel):
    """One label of a task: a stable ASCII id, a Swedish display name, what it covers, and optionally the words and
    phrases residents use for it (``terms``: the description-initialised heads and zero-shot routing read them)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    name: str
    description: str = ""
    terms: list[str] = Field(default_factory=list)


class TaskSpec(BaseModel):
    """A task's labels (in the order of the graph's output), its softmax temperature and its graph output."""

    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(min_length=1)
    temperature: float = Field(1.0, gt=0)
    ordinal: bool = False

    @property
    def label_ids(self) -> list[str]:
        return [label.id for label in self.labels]

    @model_validator(mode="after")
    def _unique_ids(self) -> TaskSpec:
        if len(set(self.label_ids)) != len(self.labels):
            raise ValueError("label ids must be unique")
        return self


class TokenizerSpec(BaseModel):
    """How texts are turned into model inputs."""

    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(gt=2)
    pad_token_id: int = Field(ge=0)
    text_prefix: str = Field(
        "", description="Prepended to every text before tokenisation (e5: 'query: '); its tokens are never tagged."
    )


# An engine keeps a task when its predictions agree with the reference's on at least this share of the parity
# sample (keywords: of the tokens' tags). The department threshold is the service's promise (99.5%); the others
# let the ordinal severity and the three-way sentiment move on one text of 64, as int8 export does.
DEFAULT_MIN_AGREEMENT = {"department": 0.995, "sentiment": 0.98, "severity": 0.98, "keywords": 0.99}


class ParitySpec(BaseModel):
    """The parity sample of ``parity.npz``: ``texts`` (str), ``input_ids`` and ``attention_mask`` ([n, tokens],
    int64, padded) and ``<task>_logits`` of the reference (keywords ``[n, tokens, tags]``, padding rows zero)."""

    model_config = ConfigDict(extra="forbid")

    texts: int = Field(gt=0)
    reference: str = Field(description="What computed the reference logits (PyTorch fp32 of the checkpoint).")
    min_agreement: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIN_AGREEMENT))


ConfidenceBand = Literal["high", "medium", "low"]
CONFIDENCE_BANDS: tuple[ConfidenceBand, ...] = ("high", "medium", "low")


class ConfidenceBands(BaseModel):
    """Department-score thresholds of the confidence bands, chosen on dev when the model was exported: a report
    is ``high`` from the ``high`` threshold on, ``medium`` from the ``medium`` one, else ``low``. A threshold is
    null when no score reached the band's precision on dev (the band is then empty)."""

    model_config = ConfigDict(extra="forbid")

    high: float | None = Field(ge=0, le=1, description="Lowest calibrated department score of the high band.")
    medium: float | None = Field(ge=0, le=1, description="Lowest calibrated department score of the medium band.")
    target_precision: dict[str, float] = Field(
        default_factory=dict, description="The department precision on dev each band was chosen to reach."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ConfidenceBands:
        if self.high is not None and self.medium is not None and self.medium > self.high:
            raise ValueError("the medium threshold must not be above the high one")
        return self

    def band(self, score: float) -> ConfidenceBand:
        """The band of a calibrated department score."""
        if self.high is not None and score >= self.high:
            return "high"
        if self.medium is not None and score >= self.medium:
            return "medium"
        return "low"

    def lowest_score(self, band: ConfidenceBand) -> float | None:
        """The lowest score that reaches ``band`` or a better one (None: no score does; 0 for ``low``)."""
        if band == "low":
            return 0.0
        thresholds = [self.high] if band == "high" else [self.medium, self.high]
        known = [threshold for threshold in thresholds if threshold is not None]
        return min(known) if known else None


class Manifest(BaseModel):
    """Everything the service needs to know about a model, and where it came from."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    model_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    tasks: dict[str, TaskSpec]
    tokenizer: TokenizerSpec
    routing_threshold: float = Field(0.5, ge=0, le=1)
    confidence_bands: ConfidenceBands | None = Field(
        None, description="Department-score bands chosen on dev at export (absent in older artifacts)."
    )
    quantization: Literal["none", "int8"] = "none"
    metrics: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="sha256 of every artifact file")
    parity: ParitySpec | None = None

    @model_validator(mode="after")
    def _all_tasks(self) -> Manifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this code reads {SCHEMA_VERSION})"
            )
        missing = [task for task in TASKS if task not in self.tasks]
        if missing:
            raise ValueError(f"tasks missing from the manifest: {', '.join(missing)}")
        return self

    @property
    def span_types(self) -> list[str]:
        """The keyword span types (PLATS, OBJEKT, ...)."""
        return [label.id for label in self.tasks[SPAN_TASK].labels]

    @property
    def keyword_tags(self) -> list[str]:
        return bio_tags(self.span_types)

    def output_size(self, task: str) -> int:
        """The size of the last axis of a task's graph output."""
        return len(self.keyword_tags) if task == SPAN_TASK else len(self.tasks[task].labels)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(artifact_dir: Path, manifest: Manifest) -> Manifest:
    """Record the checksums of the artifact's files in ``manifest`` and write it; returns what was written."""
    present = [*ARTIFACT_FILES, *(name for name in OPTIONAL_FILES if (artifact_dir / name).is_file())]
    files = {name: sha256_file(artifact_dir / name) for name in present}
    final = manifest.model_copy(update={"files": files})
    (artifact_dir / MANIFEST_FILE).write_text(final.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return final


def read_manifest(artifact_dir: Path) -> Manifest:
    """Read and verify an artifact: every file present, checksums matching, manifest valid."""
    if not artifact_dir.is_dir():
        raise ArtifactError(artifact_dir, ["the directory does not exist"])
    manifest_path = artifact_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(artifact_dir, [f"{MANIFEST_FILE} is missing"])
    try:
        manifest = Manifest.model_validate(json.loads(manifest_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(artifact_dir, [f"{MANIFEST_FILE} is not valid JSON: {exc}"]) from exc
    except ValidationError as exc:
        problems = [f"{MANIFEST_FILE}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ArtifactError(artifact_dir, problems) from exc
    problems = []
    if manifest.parity is not None and PARITY_FILE not in manifest.files:
        problems.append(f"{MANIFEST_FILE} describes a parity sample but records no sha256 for {PARITY_FILE}")
    for name in [*ARTIFACT_FILES, *(name for name in OPTIONAL_FILES if name in manifest.files)]:
        path = artifact_dir / name
        expected = manifest.files.get(name)
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif expected is None:
            problems.append(f"{MANIFEST_FILE} records no sha256 for {name}")
        elif sha256_file(path) != expected:
            problems.append(f"{name} does not match its sha256 in {MANIFEST_FILE} (changed or corrupt)")
    if problems:
        raise ArtifactError(artifact_dir, problems)
    return manifest


def check_graph(
    artifact_dir: Path,
    manifest: Manifest,
    *,
    inputs: Sequence[str],
    outputs: Mapping[str, Sequence[int | str | None]],
) -> None:
    """Check that a loaded graph's input names and output shapes fit the manifest's label sets."""
    problems = [f"the graph has no input {name!r}" for name in INPUT_NAMES if name not in inputs]
    for task in TASKS:
        name = output_name(task)
        shape = outputs.get(name)
        if shape is None:
            problems.append(f"the graph has no output {name!r}")
            continue
        expected = manifest.output_size(task)
        # A graph whose output rank an engine cannot infer (a prototype head's reduction) is checked by running it.
        if shape and isinstance(shape[-1], int) and shape[-1] != expected:
            problems.append(f"output {name!r} has {shape[-1]} values per item but the manifest lists {expected} labels")
    if problems:
        raise ArtifactError(artifact_dir, problems)
