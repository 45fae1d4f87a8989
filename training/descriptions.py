"""Description heads: what the taxonomy says about each label, embedded by the encoder itself.

multilingual-e5 was trained to match ``"query: " + text`` with ``"passage: " + text``. Each label contributes its
name, every item of its description (comma- or semicolon-separated, outside parentheses) and every Swedish term of
the taxonomy as one passage. Measured on the bundled dev split with the frozen base encoder (department macro-F1):
one passage per label 0.56; centred on the mean vectors 0.60; Swedish terms added 0.66; one passage per item,
label score the maximum over its items 0.72; a log-sum-exp with scale 50 instead of the maximum 0.74.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

from app.artifact import CLASSIFICATION_TASKS, Label
from app.inference.tensors import pad_batch
from training.data import Taxonomy
from training.model import (
    LabelSets,
    MultiTaskModel,
    PrototypeHead,
    PrototypeLayout,
    encode_texts,
    mean_pool,
    pad_token_id,
)

logger = logging.getLogger(__name__)

# The report texts whose mean vector centres the description heads: a sample is as good as all of them (the
# standard error of a mean of 256 unit vectors is small against the distances between labels) and far cheaper.
CENTRE_SAMPLE = 256
EMBEDDING_BATCH = 32


def description_items(description: str) -> list[str]:
    """The comma- or semicolon-separated items of a description; separators inside parentheses do not split
    (``dricksvatten (läckor, tryck)`` is one item)."""
    items, depth, current = [], 0, ""
    for char in description:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char in ",;" and depth <= 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return [item for item in items if item]


def label_texts(label: Label) -> list[str]:
    """The texts a label is recognised by: its name, its description items and its terms (duplicates once)."""
    seen: set[str] = set()
    texts = []
    for text in [label.name, *description_items(label.description), *label.terms]:
        if text.strip() and text.casefold() not in seen:
            seen.add(text.casefold())
            texts.append(text.strip())
    return texts


def description_layouts(
    taxonomy: Taxonomy, labels: LabelSets, scale: float, encoder_gradient: float = 1.0
) -> tuple[dict[str, PrototypeLayout], dict[str, list[str]]]:
    """The prototype layout of each classification task and the label text of each prototype row."""
    layouts, texts = {}, {}
    for task in CLASSIFICATION_TASKS:
        by_id = {label.id: label for label in taxonomy.labels(task)}
        owners: list[int] = []
        task_texts: list[str] = []
        for index, label_id in enumerate(labels.ids(task)):
            label = by_id.get(label_id, Label(id=label_id, name=label_id))
            for text in label_texts(label):
                owners.append(index)
                task_texts.append(text)
        layouts[task] = PrototypeLayout(owners=tuple(owners), scale=scale, encoder_gradient=encoder_gradient)
        texts[task] = task_texts
    return layouts, texts


@torch.no_grad()
def embed(
    model: MultiTaskModel, tokenizer: Tokenizer, texts: Sequence[str], *, prefix: str, max_length: int
) -> torch.Tensor:
    """L2-normalised mean-pooled encoder vectors of texts (E5's sentence embedding), in eval mode."""
    was_training = model.training
    model.eval()
    encoded = encode_texts(tokenizer, texts, max_length, text_prefix=prefix)
    pad_id = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(encoded.input_ids[i]))
    vectors = torch.zeros((len(texts), model.encoder.config.hidden_size))
    for start in range(0, len(order), EMBEDDING_BATCH):
        rows = order[start : start + EMBEDDING_BATCH]
        ids, mask = (torch.from_numpy(a).to(device) for a in pad_batch([encoded.input_ids[i] for i in rows], pad_id))
        pooled = mean_pool(model.encode(ids, mask), mask).float()
        vectors[rows] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
    model.train(was_training)
    return vectors


def centre_sample(texts: Sequence[str], seed: int) -> list[str]:
    """At most CENTRE_SAMPLE of the texts, chosen by the seed."""
    if len(texts) <= CENTRE_SAMPLE:
        return list(texts)
    return random.Random(seed).sample(list(texts), CENTRE_SAMPLE)


def initialise_description_heads(
    model: MultiTaskModel,
    tokenizer: Tokenizer,
    label_texts_by_task: dict[str, list[str]],
    report_texts: Sequence[str],
    *,
    text_prefix: str,
    description_prefix: str,
    max_length: int,
) -> None:
    """Set every description head from the encoder's embeddings of its label texts, centred on the mean embedding
    of ``report_texts`` (reports with or without labels)."""
    if not report_texts:
        raise ValueError("description heads need report texts (labelled or not) for their centre")
    centre = embed(model, tokenizer, report_texts, prefix=text_prefix, max_length=max_length).mean(dim=0)
    for task, texts in label_texts_by_task.items():
        head = model.heads[task]
        assert isinstance(head, PrototypeHead)
        head.initialise(embed(model, tokenizer, texts, prefix=description_prefix, max_length=max_length), centre)
    logger.info(
        "description heads initialised from %s label texts, centred on %d reports",
        ", ".join(f"{len(texts)} {task}" for task, texts in label_texts_by_task.items()),
        len(report_texts),
    )
