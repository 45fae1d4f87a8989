"""The multi-task model: one encoder, mean pooling, four heads; and how a run's checkpoint is saved and loaded."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import BertConfig, BertModel

from app.artifact import CLASSIFICATION_TASKS, SPAN_TASK, TASKS, TOKENIZER_FILE, Manifest, bio_tags, output_name
from app.inference.encoding import encode_texts as encode_service_texts
from app.inference.encoding import prepare_tokenizer
from training.data import Span
from training.run_dir import CHECKPOINT_DIR

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
ENCODER_CONFIG_FILE = "encoder_config.json"
LABELS_FILE = "labels.json"
HEADS_FILE = "heads.json"
IGNORE_INDEX = -100
# The score of the padding places of a label's item row: finite (ONNX and bf16 keep it), far below any cosine score.
MASKED_ITEM_SCORE = -1e4


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that the attention mask keeps (E5 was trained with mean pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@dataclass(frozen=True)
class PrototypeLayout:
    """The shape of a description head: the label each prototype row (one label text: a name, a description item
    or a term) belongs to, and the scale of the cosine scores. Stored with the checkpoint."""

    owners: tuple[int, ...]
    scale: float
    encoder_gradient: float = 1.0  # the factor on the gradient the head passes to the encoder (training only)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "prototype",
            "owners": list(self.owners),
            "scale": self.scale,
            "encoder_gradient": self.encoder_gradient,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> PrototypeLayout:
        return cls(
            owners=tuple(values["owners"]),
            scale=float(values["scale"]),
            encoder_gradient=float(values.get("encoder_gradient", 1.0)),
        )


class PrototypeHead(nn.Module):
    """A classification head of label prototypes: the text vector (normalised, minus the mean report vector,
    normalised again) is compared with each prototype row by a dot product, plus a learned bias per row; a label's
    logit is the log-sum-exp of its rows' scores (a soft maximum).

    The rows start as ``scale`` times the centred, normalised embeddings of the label texts, so before any step the
    head reproduces the description ranking of the base encoder exactly (scale times cosine). Two choices keep it
    from swamping the rest of the model: the scale lives in the rows (a row of norm 50 moves by Adam's learning
    rate per coordinate, as slowly as a linear head's weights relative to their size), and the gradient that
    reaches the encoder through the head is multiplied by ``encoder_gradient`` (at 1 the head pushes the shared
    encoder about ``scale`` times harder than a linear head would, and the keyword head did not learn). Exports to
    ONNX as plain MatMul, Gather, Where, ReduceMax, Exp, ReduceSum and Log."""

    centre: torch.Tensor
    item_index: torch.Tensor
    item_mask: torch.Tensor

    def __init__(self, hidden: int, labels: int, layout: PrototypeLayout) -> None:
        super().__init__()
        self.layout = layout
        self.prototypes = nn.Parameter(torch.zeros(len(layout.owners), hidden))
        self.item_bias = nn.Parameter(torch.zeros(len(layout.owners)))
        self.register_buffer("centre", torch.zeros(hidden))
        rows: list[list[int]] = [[] for _ in range(labels)]
        for row, owner in enumerate(layout.owners):
            rows[owner].append(row)
        if any(not label_rows for label_rows in rows):
            raise ValueError("every label of a description head needs at least one prototype row")
        width = max(len(label_rows) for label_rows in rows)
        index = torch.zeros((labels, width), dtype=torch.long)
        mask = torch.zeros((labels, width), dtype=torch.bool)
        for label, label_rows in enumerate(rows):
            index[label, : len(label_rows)] = torch.tensor(label_rows)
            mask[label, : len(label_rows)] = True
        # derived from the layout, so not part of the saved weights
        self.register_buffer("item_index", index, persistent=False)
        self.register_buffer("item_mask", mask, persistent=False)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        # The value is pooled itself (x - x is exactly 0); the gradient towards the encoder is scaled.
        frozen = pooled.detach()
        pooled = frozen + (pooled - frozen) * self.layout.encoder_gradient
        text = nn.functional.normalize(pooled, dim=-1) - self.centre
        text = nn.functional.normalize(text, dim=-1)
        scores = text @ self.prototypes.T + self.item_bias
        per_label = scores[:, self.item_index].masked_fill(~self.item_mask, MASKED_ITEM_SCORE)
        # log-sum-exp spelled out: OpenVINO 2026.4 turns ONNX ReduceLogSumExp (torch.logsumexp) into a scalar
        top = per_label.amax(dim=-1, keepdim=True)
        return (top + (per_label - top).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)

    @torch.no_grad()
    def initialise(self, item_vectors: torch.Tensor, centre: torch.Tensor) -> None:
        """Prototype rows from the normalised label-text embeddings (centred on their mean, normalised again, times
        the scale); ``centre`` is the mean normalised embedding of report texts."""
        rows = nn.functional.normalize(item_vectors - item_vectors.mean(dim=0), dim=-1)
        self.prototypes.copy_(self.layout.scale * rows)
        self.item_bias.zero_()
        self.centre.copy_(centre)


class MultiTaskModel(nn.Module):
    """An encoder with heads for department, sentiment, severity (on the mean-pooled text vector: a linear layer,
    or a :class:`PrototypeHead` where ``layouts`` gives one) and keywords (a linear layer per token over the BIO
    tags)."""

    def __init__(
        self,
        encoder: BertModel,
        label_counts: dict[str, int],
        *,
        dropout: float = 0.1,
        layouts: dict[str, PrototypeLayout] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.layouts = dict(layouts or {})
        self.heads = nn.ModuleDict(
            {
                task: PrototypeHead(hidden, label_counts[task], self.layouts[task])
                if task in self.layouts
                else nn.Linear(hidden, label_counts[task])
                for task in label_counts
            }
        )

    @property
    def encoder_layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self.encoder.encoder.layer
        return layers

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states (without gradients when the encoder is frozen)."""
        encoder_frozen = not any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not encoder_frozen):
            hidden: torch.Tensor = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden

    @torch.no_grad()
    def silence_keywords(self) -> None:
        """Make the keyword head tag every token O (no spans): what an untrained keyword head should say."""
        head = self.heads[SPAN_TASK]
        assert isinstance(head, nn.Linear)
        head.weight.zero_()
        head.bias.zero_()
        head.bias[0] = 10.0  # tag 0 is O

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encode(input_ids, attention_mask)
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        outputs = {output_name(task): self.heads[task](pooled) for task in CLASSIFICATION_TASKS}
        outputs[output_name(SPAN_TASK)] = self.heads[SPAN_TASK](self.dropout(hidden))
        return outputs


@dataclass
class LabelSets:
    """The label ids of every task in output order, and the keyword span types."""

    department: list[str]
    sentiment: list[str]
    severity: list[str]
    span_types: list[str]

    @property
    def keyword_tags(self) -> list[str]:
        return bio_tags(self.span_types)

    def ids(self, task: str) -> list[str]:
        return self.keyword_tags if task == SPAN_TASK else list(getattr(self, task))

    def counts(self) -> dict[str, int]:
        return {task: len(self.ids(task)) for task in TASKS}


@dataclass
class Encoded:
    """Token ids, attention masks and character offsets of a list of texts (unpadded)."""

    input_ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]
    special: list[list[int]]


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The padding id of a training tokenizer (an artifact's is in its manifest, which export writes from this)."""
    return tokenizer.token_to_id("<pad>") or 0


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int, *, text_prefix: str) -> Encoded:
    """Tokenise as the service does (:func:`app.inference.encoding.encode_texts`): the prefix before each text,
    truncation, no padding (batches are padded to their own longest text)."""
    encodings = encode_service_texts(prepare_tokenizer(tokenizer, max_length), texts, text_prefix=text_prefix)
    return Encoded(
        input_ids=[e.ids for e in encodings],
        offsets=[e.offsets for e in encodings],
        special=[e.special for e in encodings],
    )


def token_tags(
    text: str, offsets: list[tuple[int, int]], special: list[int], spans: list[Span], tags: list[str]
) -> list[int]:
    """BIO tag index per token for character spans; special and whitespace-only tokens are ignored (-100)."""
    tag_index = {tag: i for i, tag in enumerate(tags)}
    labels = []
    previous_span: Span | None = None
    for (start, end), is_special in zip(offsets, special, strict=True):
        while start < end and text[start].isspace():
            start += 1
        if is_special or start >= end:
            labels.append(IGNORE_INDEX)
            continue
        span = next((s for s in spans if s.start <= start < s.end), None)
        if span is None:
            labels.append(tag_index["O"])
        else:
            prefix = "I" if span is previous_span else "B"
            labels.append(tag_index[f"{prefix}-{span.type}"])
        previous_span = span
    return labels


def torch_runner(
    model: MultiTaskModel, device: torch.device | None = None, *, bf16: bool = False
) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """A function running the model in inference mode on numpy inputs (the interface evaluation uses); ``bf16``
    runs it under bfloat16 autocast (the evaluations of a run trained with precision=bf16)."""
    device = device or torch.device("cpu")

    @torch.no_grad()
    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        was_training = model.training
        model.eval()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device))
        model.train(was_training)
        return {name: value.float().cpu().numpy() for name, value in outputs.items()}

    return run


def manifest_label_sets(manifest: Manifest) -> LabelSets:
    """The label sets of an exported artifact."""
    return LabelSets(
        department=manifest.tasks["department"].label_ids,
        sentiment=manifest.tasks["sentiment"].label_ids,
        severity=manifest.tasks["severity"].label_ids,
        span_types=manifest.span_types,
    )


def build_encoder(base_dir: Path, *, random_init: bool) -> BertModel:
    """The pretrained encoder of a base directory, or the same architecture with random weights."""
    if random_init:
        config = BertConfig.from_pretrained(base_dir)
        return BertModel(config, add_pooling_layer=False)
    encoder: BertModel = BertModel.from_pretrained(base_dir, add_pooling_layer=False)
    return encoder


def save_checkpoint(model: MultiTaskModel, tokenizer_path: Path, labels: LabelSets, run_dir: Path) -> Path:
    """Write the weights, the encoder config, the tokenizer and the label sets under ``run_dir/checkpoint``."""
    out = run_dir / CHECKPOINT_DIR
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    (out / ENCODER_CONFIG_FILE).write_text(model.encoder.config.to_json_string(), encoding="utf-8")
    (out / TOKENIZER_FILE).write_bytes(tokenizer_path.read_bytes())
    (out / LABELS_FILE).write_text(json.dumps(labels.__dict__, indent=2), encoding="utf-8")
    layouts = {task: layout.to_json() for task, layout in model.layouts.items()}
    (out / HEADS_FILE).write_text(json.dumps(layouts, indent=2), encoding="utf-8")
    return out


def _checkpoint_dir(path: Path) -> Path:
    return path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path


def read_label_sets(path: Path) -> LabelSets:
    """The label sets of a checkpoint directory (or of a run directory holding one)."""
    return LabelSets(**json.loads((_checkpoint_dir(path) / LABELS_FILE).read_text(encoding="utf-8")))


def load_checkpoint(path: Path) -> tuple[MultiTaskModel, Tokenizer, LabelSets]:
    """Load a checkpoint directory (or a run directory holding one) for evaluation or export."""
    checkpoint = _checkpoint_dir(path)
    labels = read_label_sets(checkpoint)
    config_dict: dict[str, Any] = json.loads((checkpoint / ENCODER_CONFIG_FILE).read_text(encoding="utf-8"))
    encoder = BertModel(BertConfig.from_dict(config_dict), add_pooling_layer=False)
    heads_path = checkpoint / HEADS_FILE  # absent in checkpoints from before description heads: all linear
    layouts_json = json.loads(heads_path.read_text(encoding="utf-8")) if heads_path.is_file() else {}
    layouts = {task: PrototypeLayout.from_json(values) for task, values in layouts_json.items()}
    model = MultiTaskModel(encoder, labels.counts(), layouts=layouts)
    model.load_state_dict(torch.load(checkpoint / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model, Tokenizer.from_file(str(checkpoint / TOKENIZER_FILE)), labels
