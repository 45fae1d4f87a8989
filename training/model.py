"""The multi-task model: one encoder, mean pooling, four heads; and how a run's checkpoint is saved and loaded."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import BertConfig, BertModel

from app.artifact import CLASSIFICATION_TASKS, SPAN_TASK, TASKS, TOKENIZER_FILE, Manifest, bio_tags, output_name
from training.data import Span
from training.run_dir import CHECKPOINT_DIR

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
ENCODER_CONFIG_FILE = "encoder_config.json"
LABELS_FILE = "labels.json"
IGNORE_INDEX = -100


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that the attention mask keeps (E5 was trained with mean pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MultiTaskModel(nn.Module):
    """An encoder with heads for department, sentiment, severity (one linear layer each on the mean-pooled
    text vector) and keywords (a linear layer per token over the BIO tags)."""

    def __init__(self, encoder: BertModel, label_counts: dict[str, int], *, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({task: nn.Linear(hidden, label_counts[task]) for task in label_counts})

    @property
    def encoder_layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self.encoder.encoder.layer
        return layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        encoder_frozen = not any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not encoder_frozen):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
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


def encode_texts(tokenizer: Tokenizer, texts: list[str], max_length: int) -> Encoded:
    """Tokenise with truncation and no padding (batches are padded to their own longest text)."""
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    encodings = tokenizer.encode_batch(texts)
    return Encoded(
        input_ids=[e.ids for e in encodings],
        offsets=[list(e.offsets) for e in encodings],
        special=[e.special_tokens_mask for e in encodings],
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
    model: MultiTaskModel, device: torch.device | None = None
) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """A function running the model in inference mode on numpy inputs (the interface evaluation uses)."""
    device = device or torch.device("cpu")

    @torch.no_grad()
    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        was_training = model.training
        model.eval()
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
    model = MultiTaskModel(encoder, labels.counts())
    model.load_state_dict(torch.load(checkpoint / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model, Tokenizer.from_file(str(checkpoint / TOKENIZER_FILE)), labels
