"""Reports without labels: reading them, perturbing them, and the losses that learn from them.

Consistency training (UDA, FixMatch): the model's prediction on a report (clean text, eval mode, no gradient) is
the target for its prediction on a perturbed copy of the same report: some tokens masked, some words with a typo,
and in every second copy the diacritics stripped (``å ä ö`` -> ``a a o``, as people type on foreign keyboards).
With ``pseudo_label_threshold`` a confident clean prediction also becomes a hard label for the copy. Only the
classification tasks learn from unlabelled reports: a perturbed copy's tokens no longer line up with the clean
text's, so keyword tags have no target there.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from app.artifact import CLASSIFICATION_TASKS, output_name
from app.errors import DataError

_WORD = re.compile(r"\w{3,}")


def read_texts(path: Path) -> list[str]:
    """Texts of a file of reports without labels: JSONL with a ``text`` field, or plain text, one report a line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"unlabelled file not found: {path}") from exc
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                value = json.loads(line).get("text")
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}:{number}: a JSON line needs a non-empty 'text'")
            texts.append(value)
        else:
            texts.append(line.strip())
    return texts


def strip_diacritics(text: str) -> str:
    """``Gatlampan på Östra vägen`` -> ``Gatlampan pa Ostra vagen``: combining marks removed after NFD."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(char for char in decomposed if not unicodedata.combining(char)))


def _typo(word: str, rng: random.Random) -> str:
    position = rng.randrange(1, len(word) - 1)  # the first and last letters stay, as in most real typos
    kind = rng.randrange(3)
    if kind == 0:  # two neighbouring letters swapped
        return word[: position - 1] + word[position] + word[position - 1] + word[position + 1 :]
    if kind == 1:  # a letter dropped
        return word[:position] + word[position + 1 :]
    return word[:position] + word[position] + word[position:]  # a letter doubled


def add_typos(text: str, rate: float, rng: random.Random) -> str:
    """Each word of three or more letters gets a typo (swap, drop or double a letter) with probability ``rate``."""
    return _WORD.sub(lambda match: _typo(match.group(), rng) if rng.random() < rate else match.group(), text)


def mask_token_id(tokenizer: Tokenizer) -> int:
    """The id of the tokenizer's mask token (``<mask>`` for XLM-R/e5, ``[MASK]`` for BERT), else its unknown token."""
    for piece in ("<mask>", "[MASK]", "<unk>", "[UNK]"):
        token_id = tokenizer.token_to_id(piece)
        if token_id is not None:
            return token_id
    raise DataError("the tokenizer has neither a mask nor an unknown token to mask with")


def masked_copy(ids: Sequence[int], special: Sequence[int], rate: float, mask_id: int, rng: random.Random) -> list[int]:
    """Replace each non-special token by ``mask_id`` with probability ``rate``."""
    pairs = zip(ids, special, strict=True)
    return [mask_id if not is_special and rng.random() < rate else token for token, is_special in pairs]


def perturb_text(text: str, rate: float, rng: random.Random, *, strip: bool) -> str:
    """A perturbed copy's text: diacritics stripped when ``strip``, then typos at ``rate``."""
    return add_typos(strip_diacritics(text) if strip else text, rate, rng)


def unlabelled_losses(
    clean: dict[str, torch.Tensor], perturbed: dict[str, torch.Tensor], pseudo_label_threshold: float
) -> dict[str, torch.Tensor]:
    """Per classification task: KL(clean || perturbed) averaged over the reports, plus (threshold > 0) the
    cross-entropy of the perturbed prediction against the clean argmax where the clean prediction is confident."""
    losses = {}
    for task in CLASSIFICATION_TASKS:
        target = clean[output_name(task)].float().softmax(dim=-1)
        log_student = perturbed[output_name(task)].float().log_softmax(dim=-1)
        loss = (target * (target.clamp_min(1e-12).log() - log_student)).sum(dim=-1).mean()
        if pseudo_label_threshold > 0:
            confidence, label = target.max(dim=-1)
            confident = confidence >= pseudo_label_threshold
            if confident.any():
                loss = loss + nn.functional.nll_loss(log_student[confident], label[confident]) * (
                    confident.float().mean()
                )
        losses[task] = loss
    return losses
