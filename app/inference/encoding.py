"""Texts to token ids, the one way training, evaluation, export and the service all do it.

An encoder may want a fixed prefix before every text (multilingual-e5 was trained on ``"query: " + text``). The
prefix is tokenised with the text, so the ids are the ones the encoder was trained on; its tokens are marked
special, like ``<s>``, and the offsets of the other tokens are shifted back into the original text, so that keyword
spans can never include the prefix and always point into the text as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass(frozen=True)
class EncodedText:
    """One text's token ids; per token its ``[start, end)`` characters in the text (``(0, 0)`` for special and
    prefix tokens) and 1 where it is special (``<s>``, ``</s>``, the prefix) or 0."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[int]


def prepare_tokenizer(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """Truncate to ``max_length`` tokens (prefix and special tokens included) and never pad: batches are padded to
    their own longest text by :func:`app.inference.tensors.pad_batch`."""
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], *, text_prefix: str = "") -> list[EncodedText]:
    """Tokenise ``text_prefix + text`` for each text (the tokenizer as :func:`prepare_tokenizer` set it up)."""
    shift = len(text_prefix)
    encodings = tokenizer.encode_batch([text_prefix + text for text in texts])
    result = []
    for encoding in encodings:
        offsets: list[tuple[int, int]] = []
        special: list[int] = []
        for (start, end), is_special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True):
            # A token that ends inside the prefix belongs to it; the first word's token may start on the prefix's
            # last character (the space a SentencePiece "▁" stands for), so its start is clamped to the text's.
            if is_special or (shift and end <= shift):
                offsets.append((0, 0))
                special.append(1)
            else:
                offsets.append((max(start - shift, 0), end - shift))
                special.append(0)
        result.append(EncodedText(ids=list(encoding.ids), offsets=offsets, special=special))
    return result
