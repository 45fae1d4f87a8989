"""Keyword span decoding (first-subword convention) and offsets across NFC normalisation."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.artifact import bio_tags
from app.inference.spans import Span, decode_spans, normalize_nfc

TAGS = bio_tags(["PLATS", "OBJEKT"])  # O, B-PLATS, I-PLATS, B-OBJEKT, I-OBJEKT


def probs_for(tags: list[str], confidence: float = 0.9) -> np.ndarray:
    """One row per token, the given tag at ``confidence`` and the rest spread evenly."""
    rows = np.full((len(tags), len(TAGS)), (1 - confidence) / (len(TAGS) - 1))
    for row, tag in enumerate(tags):
        rows[row, TAGS.index(tag)] = confidence
    return rows


def test_spans_follow_bio_tags_over_words() -> None:
    text = "Gatlampan på Storgatan 12 är trasig"
    # <s> ▁Gat lampa n ▁på ▁Stor gatan ▁12 ▁är ▁trasig </s>: sentencepiece offsets include the space before a word.
    offsets = [(0, 0), (0, 3), (3, 8), (8, 9), (9, 12), (12, 17), (17, 22), (22, 25), (25, 28), (28, 35), (0, 0)]
    tags = ["O", "B-OBJEKT", "O", "O", "O", "B-PLATS", "O", "I-PLATS", "O", "O", "O"]
    spans = decode_spans(probs_for(tags), offsets, TAGS, text=text)
    assert [(text[s.start : s.end], s.type) for s in spans] == [("Gatlampan", "OBJEKT"), ("Storgatan 12", "PLATS")]
    assert all(s.score == pytest.approx(0.9) for s in spans)


def test_subword_tags_are_ignored_and_the_score_is_the_mean_of_first_subwords() -> None:
    text = "Storgatan 12"
    offsets = [(0, 4), (4, 9), (9, 12)]  # Stor, gatan, ▁12
    probs = probs_for(["B-PLATS", "B-OBJEKT", "I-PLATS"])
    probs[2] = [0.0, 0.0, 0.5, 0.25, 0.25]
    (span,) = decode_spans(probs, offsets, TAGS, text=text)
    assert span == Span(start=0, end=12, type="PLATS", score=pytest.approx((0.9 + 0.5) / 2))


def test_i_tag_without_a_span_of_its_type_starts_one() -> None:
    text = "soptunna Ängsvägen"
    offsets = [(0, 8), (8, 18)]
    spans = decode_spans(probs_for(["I-OBJEKT", "I-PLATS"]), offsets, TAGS, text=text)
    assert [(s.start, s.end, s.type) for s in spans] == [(0, 8, "OBJEKT"), (9, 18, "PLATS")]


def test_b_tag_after_a_span_of_the_same_type_starts_a_new_one() -> None:
    text = "gungor rutschkanor"
    spans = decode_spans(probs_for(["B-OBJEKT", "B-OBJEKT"]), [(0, 6), (6, 18)], TAGS, text=text)
    assert [(s.start, s.end) for s in spans] == [(0, 6), (7, 18)]


def test_punctuation_that_touches_a_word_is_a_word_of_its_own() -> None:
    text = "Storgatan, igen"
    offsets = [(0, 9), (9, 10), (10, 15)]
    spans = decode_spans(probs_for(["B-PLATS", "O", "O"]), offsets, TAGS, text=text)
    assert [(s.start, s.end) for s in spans] == [(0, 9)]


def test_whitespace_only_and_special_tokens_belong_to_no_span() -> None:
    text = "vid  Storgatan"
    offsets = [(0, 0), (0, 3), (3, 4), (4, 14), (0, 0)]  # <s> ▁vid ▁(extra space) ▁Storgatan </s>
    spans = decode_spans(probs_for(["B-PLATS", "O", "B-PLATS", "I-PLATS", "I-PLATS"]), offsets, TAGS, text=text)
    assert [(text[s.start : s.end]) for s in spans] == ["Storgatan"]


def test_padding_rows_beyond_the_offsets_are_ignored() -> None:
    probs = np.vstack([probs_for(["B-PLATS"]), probs_for(["I-PLATS"] * 3)])
    spans = decode_spans(probs, [(0, 4)], TAGS, text="Torg")
    assert [(s.start, s.end) for s in spans] == [(0, 4)]


def test_normalize_nfc_maps_composed_characters_back_to_the_text_as_sent() -> None:
    sent = "Ga\u030angen vid Sto\u0308rgatan"  # decomposed å and ö
    normalized = normalize_nfc(sent)
    assert normalized.text == unicodedata.normalize("NFC", sent) == "Gången vid Störgatan"
    start = normalized.text.index("Störgatan")
    original = normalized.to_original(start, start + len("Störgatan"))
    assert sent[original[0] : original[1]] == "Sto\u0308rgatan"
    assert normalized.to_original(0, 2) == (0, 3)  # "Gå" covers "Ga" + combining ring


def test_normalize_nfc_is_the_identity_for_normalized_text() -> None:
    normalized = normalize_nfc("Gången vid Störgatan")
    assert normalized.text == "Gången vid Störgatan"
    assert normalized.to_original(4, 9) == (4, 9)


@pytest.mark.parametrize(
    "sent",
    [
        "a\u030a",  # å decomposed
        "\u212b ohm \u2126",  # Ångström and ohm signs (singleton decompositions)
        "e\u0301\u0323x",  # combining marks out of canonical order
        "\u1100\u1161\u11a8 \u1100\u1161",  # Hangul jamo compose across starters
        "\u0301leading mark",
        "q\u0307\u0323 ok",
    ],
)
def test_every_normalized_character_maps_into_the_original(sent: str) -> None:
    normalized = normalize_nfc(sent)
    assert normalized.text == unicodedata.normalize("NFC", sent)
    for index in range(len(normalized.text)):
        start, end = normalized.to_original(index, index + 1)
        assert 0 <= start < end <= len(sent)
        assert unicodedata.normalize("NFC", sent[start:end]).find(normalized.text[index]) >= 0
    assert normalized.to_original(0, len(normalized.text)) == (0, len(sent))


def test_a_text_initial_space_piece_joins_the_first_word() -> None:
    # "▁" prepended to the text gets the first character's offsets, like the "G" piece after it.
    text = "Gången"
    offsets = [(0, 0), (0, 1), (0, 1), (1, 2), (2, 6), (0, 0)]
    spans = decode_spans(probs_for(["O", "B-PLATS", "O", "O", "O", "O"]), offsets, TAGS, text=text)
    assert [(s.start, s.end, s.type) for s in spans] == [(0, 6, "PLATS")]


# --- the array decoder against the per-token loop it replaced ---------------------------------------------------


def _loop_decode_spans(tag_probs: np.ndarray, offsets: list[tuple[int, int]], tags: list[str], text: str) -> list:
    """The decoder as it was, one Python step per token: the reference the array version must reproduce."""
    words: list[list[int]] = []  # [start, end, first token]
    for index, (raw_start, raw_end) in enumerate(offsets):
        start, end = raw_start, raw_end
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start >= end:
            continue
        previous = words[-1] if words else None
        if previous is not None and (
            start < previous[1] or (start == previous[1] and text[start - 1].isalnum() and text[start].isalnum())
        ):
            previous[1] = max(end, previous[1])
        else:
            words.append([start, end, index])
    spans: list[tuple[int, int, str, float]] = []
    current: list | None = None
    for start, end, first in words:
        probs = tag_probs[first]
        best = int(np.argmax(probs))
        if tags[best] == "O":
            if current is not None:
                spans.append((current[1], current[2], current[0], float(np.mean(current[3]))))
            current = None
            continue
        prefix, kind = tags[best].split("-", 1)
        if prefix == "I" and current is not None and current[0] == kind:
            current = [kind, current[1], end, [*current[3], float(probs[best])]]
        else:
            if current is not None:
                spans.append((current[1], current[2], current[0], float(np.mean(current[3]))))
            current = [kind, start, end, [float(probs[best])]]
    if current is not None:
        spans.append((current[1], current[2], current[0], float(np.mean(current[3]))))
    return spans


@st.composite
def tokenised_texts(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]], np.ndarray]:
    """A text cut into tokens the way sentencepiece cuts: contiguous pieces (a space joins the piece after it),
    now and then an empty special token or a piece that overlaps the one before, and random tag probabilities."""
    text = draw(st.text(alphabet="ab Åö1,.-\u00a0\t😀ᄀ", min_size=1, max_size=40))
    cuts = sorted(draw(st.sets(st.integers(1, len(text)), max_size=len(text))) | {len(text)})
    offsets, start = [(0, 0)], 0
    for end in cuts:
        offsets.append((start, end))
        if draw(st.integers(0, 9)) == 0:
            offsets.append((start, min(start + 1, end)))  # overlaps the piece before
        start = end
    offsets.append((0, 0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(size=(len(offsets) + draw(st.integers(0, 3)), len(TAGS))) * 2
    logits[:, 0] += draw(st.floats(-2, 2))
    return text, offsets, np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


@settings(max_examples=400, deadline=None)
@given(tokenised_texts())
def test_array_decoder_equals_the_per_token_loop(case: tuple[str, list[tuple[int, int]], np.ndarray]) -> None:
    text, offsets, probs = case
    spans = decode_spans(probs, offsets, TAGS, text=text)
    expected = _loop_decode_spans(probs, offsets, TAGS, text)
    assert [(s.start, s.end, s.type) for s in spans] == [(start, end, kind) for start, end, kind, _ in expected]
    assert [s.score for s in spans] == pytest.approx([score for *_, score in expected], abs=1e-12)
