"""Keyword spans from per-token BIO tag probabilities, and character offsets across NFC normalisation.

Pure functions over numpy arrays and strings, free of service state: the training pipeline evaluates keyword
spans with the same :func:`decode_spans` that the service answers with.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

OUTSIDE_TAG = "O"


@dataclass(frozen=True)
class Span:
    """A decoded keyword: characters ``[start, end)`` of a text, its span type and its score."""

    start: int
    end: int
    type: str
    score: float


_SPACE = 1
_ALNUM = 2
_BMP = 0x10000


@cache
def _bmp_classes() -> np.ndarray:
    """``_SPACE`` / ``_ALNUM`` (or 0) of every character of the Basic Multilingual Plane, by code point."""
    chars = list(map(chr, range(_BMP)))
    classes = np.fromiter(map(str.isspace, chars), np.uint8, _BMP) * np.uint8(_SPACE)
    classes |= np.fromiter(map(str.isalnum, chars), np.uint8, _BMP) * np.uint8(_ALNUM)
    return classes


def _char_classes(text: str) -> np.ndarray:
    """The class of each character of ``text`` (as :func:`_bmp_classes`), looked up, not computed per character."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    classes = _bmp_classes()[np.minimum(codes, _BMP - 1)]
    # Characters beyond the BMP (emoji, historic scripts) are rare: classify just those.
    for position in np.flatnonzero(codes >= _BMP):
        char = text[position]
        classes[position] = _SPACE * char.isspace() + _ALNUM * char.isalnum()
    return classes


@dataclass(frozen=True)
class _Words:
    """Tokens grouped into words: each word's character range and the index of its first token."""

    starts: np.ndarray
    ends: np.ndarray
    first_tokens: np.ndarray


def _words(text: str, offsets: np.ndarray) -> _Words:
    """Group tokens into words: a token that continues the previous one inside a run of letters or digits, or
    overlaps it, is a subword of the same word; special tokens and whitespace-only tokens (empty after
    trimming) belong to none. sentencepiece counts the space before a word into its first token ("▁på" covers
    " på"), so every token is trimmed of whitespace first, or every word would touch the one before it."""
    classes = _char_classes(text)
    visible = np.flatnonzero(classes != _SPACE)  # positions of the characters that are not whitespace
    first = np.searchsorted(visible, offsets[:, 0])  # the first visible character at or after a token's start
    last = np.searchsorted(visible, offsets[:, 1]) - 1  # the last visible character before its end
    padded = np.append(visible, len(text))
    trimmed_starts = padded[first]
    trimmed_ends = np.where(last >= 0, padded[np.maximum(last, 0)] + 1, 0)
    tokens = np.flatnonzero(trimmed_starts < trimmed_ends)
    starts, ends = trimmed_starts[tokens], trimmed_ends[tokens]
    if len(tokens) == 0:
        return _Words(starts, ends, tokens)
    # Word ends never decrease, so the end of the word before a token is the largest end of the tokens before it.
    previous_end = np.concatenate(([-1], np.maximum.accumulate(ends)[:-1]))
    alnum = (classes & _ALNUM) != 0
    touching = (starts == previous_end) & alnum[starts - 1] & alnum[starts]
    # Overlap: a text-initial "▁" piece gets the offsets of the first character, which the next piece has too.
    heads = np.flatnonzero(~((starts < previous_end) | touching))
    return _Words(starts[heads], np.maximum.reduceat(ends, heads), tokens[heads])


@cache
def _tag_structure(tags: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The span types, and per tag its type's index (-1 for ``O``) and whether it is an ``I-`` tag."""
    kinds = tuple(dict.fromkeys(tag.split("-", 1)[1] for tag in tags if tag != OUTSIDE_TAG))
    kind_of = np.array([-1 if tag == OUTSIDE_TAG else kinds.index(tag.split("-", 1)[1]) for tag in tags])
    inside = np.array([tag.startswith("I-") for tag in tags])
    return kinds, kind_of, inside


def decode_spans(
    tag_probs: np.ndarray, offsets: Sequence[tuple[int, int]], tags: Sequence[str], *, text: str
) -> list[Span]:
    """Keyword spans of one text from its token tag probabilities (first-subword convention).

    ``tag_probs`` is ``[tokens, len(tags)]`` (rows past ``len(offsets)``, such as padding, are ignored),
    ``offsets`` the tokenizer's character offsets into ``text`` (special tokens as empty ranges) and ``tags``
    the BIO tag names (``O``, ``B-PLATS``, ``I-PLATS``, ...). Each word takes the most probable tag of its first
    token. A span starts at a word tagged ``B-X`` (or ``I-X`` when the word before is not in a span of type X)
    and continues over the following words tagged ``I-X``; its score is the mean probability of the chosen
    tags. Offsets are in the coordinates of ``offsets``. Array operations throughout: no loop over tokens.
    """
    kinds, kind_of, inside = _tag_structure(tuple(tags))
    count = len(offsets)
    best = tag_probs[:count].argmax(axis=-1)
    if count == 0 or not (kind_of[best] >= 0).any():
        return []  # a word's tag is one of its tokens' tags
    words = _words(text, np.asarray(offsets, dtype=np.int64).reshape(count, 2))
    word_tags = best[words.first_tokens]
    word_scores = tag_probs[words.first_tokens, word_tags].astype(np.float64)
    word_kinds = kind_of[word_tags]
    tagged = word_kinds >= 0
    in_spans = np.flatnonzero(tagged)
    if len(in_spans) == 0:
        return []
    # An I-X word continues a span when the word before it is in a span (any tag but O) of the same type X.
    continues = inside[word_tags] & np.concatenate(([False], tagged[:-1] & (word_kinds[:-1] == word_kinds[1:])))
    heads = np.flatnonzero(~continues[in_spans])  # the positions in in_spans where a span starts
    lengths = np.diff(np.append(heads, len(in_spans)))
    means = np.add.reduceat(word_scores[in_spans], heads) / lengths
    first_words, last_words = in_spans[heads], in_spans[heads + lengths - 1]
    return [
        Span(start=int(start), end=int(end), type=kinds[kind], score=float(score))
        for start, end, kind, score in zip(
            words.starts[first_words], words.ends[last_words], word_kinds[first_words], means, strict=True
        )
    ]


@dataclass(frozen=True)
class NormalizedText:
    """A text in Unicode NFC and, for each of its characters, the range of the original text it came from."""

    text: str
    original_starts: tuple[int, ...] | None
    original_ends: tuple[int, ...] | None

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map ``[start, end)`` of the NFC text (``end > start``) to the matching range of the original text."""
        if self.original_starts is None or self.original_ends is None:
            return start, end
        return self.original_starts[start], self.original_ends[end - 1]


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def normalize_nfc(text: str) -> NormalizedText:
    """NFC-normalise ``text`` and keep the way back to its character offsets.

    The text is cut before each character of canonical combining class 0 (a starter), and NFC is applied per
    piece; a piece that composes with the previous one (Hangul jamo, the rare starters that compose) is merged
    into it. Every character of a normalised piece maps to the whole original piece.
    """
    if unicodedata.is_normalized("NFC", text):
        return NormalizedText(text=text, original_starts=None, original_ends=None)
    pieces: list[tuple[int, int, str]] = []
    for index, char in enumerate(text):
        if pieces and unicodedata.combining(char) != 0:
            start, _, _ = pieces[-1]
            pieces[-1] = (start, index + 1, _nfc(text[start : index + 1]))
            continue
        normalized = _nfc(char)
        if pieces:
            start, _, previous = pieces[-1]
            joined = _nfc(text[start : index + 1])
            if joined != previous + normalized:
                pieces[-1] = (start, index + 1, joined)
                continue
        pieces.append((index, index + 1, normalized))
    starts = tuple(start for start, _, piece in pieces for _ in piece)
    ends = tuple(end for _, end, piece in pieces for _ in piece)
    return NormalizedText(text="".join(piece for _, _, piece in pieces), original_starts=starts, original_ends=ends)
