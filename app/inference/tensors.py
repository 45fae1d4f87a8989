"""The arrays around a model call, shared by the service and by training's evaluation and export: padded inputs in,
calibrated probabilities out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_batch(input_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``input_ids`` and ``attention_mask`` of token id lists, padded to the longest with ``pad_id``."""
    longest = max(len(ids) for ids in input_ids)
    ids_array = np.full((len(input_ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(input_ids), longest), dtype=np.int64)
    for row, ids in enumerate(input_ids):
        ids_array[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return ids_array, mask


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities over the last axis of ``logits / temperature``, in float64 (the artifact's calibration)."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    probs: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probs
