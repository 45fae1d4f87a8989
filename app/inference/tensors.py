"""The arrays around a model call, shared by the service and by training's evaluation and export: padded inputs in,
calibrated probabilities out."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np


def pad_batch(input_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``input_ids`` and ``attention_mask`` of token id lists, padded to the longest with ``pad_id``."""
    lengths = np.fromiter(map(len, input_ids), dtype=np.int64, count=len(input_ids))
    filled = np.arange(lengths.max()) < lengths[:, None]
    ids_array = np.full(filled.shape, pad_id, dtype=np.int64)
    # Row-major boolean assignment fills each row's first len(ids) places, in order.
    ids_array[filled] = np.fromiter(itertools.chain.from_iterable(input_ids), dtype=np.int64, count=int(lengths.sum()))
    return ids_array, filled.astype(np.int64)


def length_sorted_chunks(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped shortest first, each group's ``size x longest`` within ``max_tokens`` padded tokens (a text
    longer than the budget runs alone): how the service cuts a batch into model calls."""
    chunks: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        # Sorted ascending, so the newcomer is the longest of its group.
        if chunks and (len(chunks[-1]) + 1) * lengths[index] <= max_tokens:
            chunks[-1].append(index)
        else:
            chunks.append([index])
    return chunks


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities over the last axis of ``logits / temperature``, in float64 (the artifact's calibration)."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    probs: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probs
