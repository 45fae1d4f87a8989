"""The one encode function: a text prefix is tokenised with the text, marked special, and left out of offsets."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from app.inference.encoding import encode_texts, prepare_tokenizer


def tokenizer(tiny_base_dir: Path, max_length: int = 64) -> Tokenizer:
    return prepare_tokenizer(Tokenizer.from_file(str(tiny_base_dir / "tokenizer.json")), max_length)


def test_prefix_tokens_are_special_and_offsets_point_into_the_text(tiny_base_dir: Path) -> None:
    text = "Hål i vägen vid skolan"
    plain = encode_texts(tokenizer(tiny_base_dir), [text])[0]
    prefixed = encode_texts(tokenizer(tiny_base_dir), [text], text_prefix="query: ")[0]
    assert len(prefixed.ids) > len(plain.ids)
    # the text's own tokens are the same, at the same offsets of the text as given
    text_tokens = [
        (token, offset) for token, offset, special in zip(prefixed.ids, prefixed.offsets, prefixed.special, strict=True)
    ]
    kept = [pair for pair, special in zip(text_tokens, prefixed.special, strict=True) if not special]
    assert kept == [
        (token, offset)
        for token, offset, special in zip(plain.ids, plain.offsets, plain.special, strict=True)
        if not special
    ]
    assert all(0 <= start <= end <= len(text) for start, end in prefixed.offsets)
    # <s>, the prefix's tokens and </s> are special, with empty offsets
    prefix_count = len(prefixed.ids) - len(plain.ids)
    assert prefixed.special[: prefix_count + 1] == [1] * (prefix_count + 1)
    assert all(prefixed.offsets[i] == (0, 0) for i in range(prefix_count + 1))


def test_truncation_counts_the_prefix(tiny_base_dir: Path) -> None:
    long_text = "vägen " * 100
    encoded = encode_texts(tokenizer(tiny_base_dir, max_length=20), [long_text], text_prefix="query: ")[0]
    assert len(encoded.ids) == 20
    assert encoded.special[-1] == 1  # </s> is kept


def test_without_a_prefix_the_encoding_is_the_tokenizers_own(tiny_base_dir: Path) -> None:
    # artifacts written before the text prefix (models/default) read texts exactly as before
    texts = ["Gatlampan på Storgatan 12 är trasig.", "x"]
    raw = tokenizer(tiny_base_dir).encode_batch(texts)
    encoded = encode_texts(tokenizer(tiny_base_dir), texts)
    for mine, theirs in zip(encoded, raw, strict=True):
        assert (mine.ids, mine.offsets, mine.special) == (theirs.ids, theirs.offsets, theirs.special_tokens_mask)
