"""Keyword spans from per-token BIO tag probabilities, and character offsets across NFC normalisation.

Pure functions over numpy arrays and strings, free of service state: the training pipeline evaluates keyword
spans with the same :func:`decode_spans` that the service answers with.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OUTSIDE_TAG = "O"


@dataclass(frozen=True)
class Span:
    """A decoded keyword: characters ``[start, end)`` of a text, its span type and its score."""

    start: int
    end: int
    type: str
    score: float


@dataclass(frozen=True)
class _Word:
    start: int
    end: int
    first_token: int


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    # sentencepiece tokenizers count the space before a word into its first token ("▁på" covers " på"),
    # which would make every word touch the one before it.
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _words(text: str, offsets: Sequence[tuple[int, int]]) -> list[_Word]:
    """Group tokens into words: a token that continues the previous one inside a run of letters or digits, or
    overlaps it, is a subword of the same word; special tokens and whitespace-only tokens (empty after
    trimming) belong to none."""
    words: list[_Word] = []
    for index, (raw_start, raw_end) in enumerate(offsets):
        start, end = _trimmed(text, raw_start, raw_end)
        if start >= end:
            continue
        previous = words[-1] if words else None
        # Overlap: a text-initial "▁" piece gets the offsets of the first character, which the next piece has too.
        if previous is not None and (
            start < previous.end or (start == previous.end and text[start - 1].isalnum() and text[start].isalnum())
        ):
            words[-1] = _Word(previous.start, max(end, previous.end), previous.first_token)
        else:
            words.append(_Word(start, end, index))
    return words


def decode_spans(
    tag_probs: np.ndarray, offsets: Sequence[tuple[int, int]], tags: Sequence[str], *, text: str
) -> list[Span]:
    """Keyword spans of one text from its token tag probabilities (first-subword convention).

    ``tag_probs`` is ``[tokens, len(tags)]`` (rows past ``len(offsets)``, such as padding, are ignored),
    ``offsets`` the tokenizer's character offsets into ``text`` (special tokens as empty ranges) and ``tags``
    the BIO tag names (``O``, ``B-PLATS``, ``I-PLATS``, ...). Each word takes the most probable tag of its first
    token. A span starts at a word tagged ``B-X`` (or ``I-X`` when the word before is not in a span of type X)
    and continues over the following words tagged ``I-X``; its score is the mean probability of the chosen
    tags. Offsets are in the coordinates of ``offsets``.
    """
    spans: list[Span] = []
    current: tuple[str, int, int, list[float]] | None = None

    def close() -> None:
        if current is not None:
            kind, start, end, scores = current
            spans.append(Span(start=start, end=end, type=kind, score=float(np.mean(scores))))

    for word in _words(text, offsets):
        probs = tag_probs[word.first_token]
        best = int(np.argmax(probs))
        tag = tags[best]
        if tag == OUTSIDE_TAG:
            close()
            current = None
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and current is not None and current[0] == kind:
            current = (kind, current[1], word.end, [*current[3], float(probs[best])])
        else:
            close()
            current = (kind, word.start, word.end, [float(probs[best])])
    close()
    return spans


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
