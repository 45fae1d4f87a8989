"""The model artifact behind its engine: tokenise, run in length-sorted batches, turn logits into predictions.

Everything here is synchronous and runs in the micro-batcher's worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from app.artifact import (
    CLASSIFICATION_TASKS,
    MODEL_FILE,
    SPAN_TASK,
    TASKS,
    TOKENIZER_FILE,
    ArtifactError,
    Manifest,
    check_graph,
    output_name,
    read_manifest,
)
from app.config import EngineSetting, ExecutionProvider
from app.inference.encoding import EncodedText, encode_texts, prepare_tokenizer
from app.inference.engines import Engine, engine_candidates
from app.inference.selection import (
    BUILTIN_TEXTS,
    EngineChoice,
    ParitySample,
    builtin_parity_sample,
    choose_engine,
    read_parity_sample,
)
from app.inference.spans import NormalizedText, decode_spans, normalize_nfc
from app.inference.tensors import length_sorted_chunks, pad_batch, softmax

logger = logging.getLogger(__name__)

# Called after every model call with the number of texts and the seconds it took (for metrics).
ModelCallObserver = Callable[[int, float], None]


@dataclass(frozen=True)
class ScoredLabel:
    """A label of a task with its probability; ``index`` is its position in the manifest (severity level - 1)."""

    label: str
    name: str
    score: float
    index: int


@dataclass(frozen=True)
class Keyword:
    """A keyword span, with offsets into the text exactly as the caller sent it."""

    text: str
    type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class ModelPrediction:
    """What the model says about one text."""

    department: tuple[ScoredLabel, ...]  # every department, most probable first
    sentiment: ScoredLabel
    severity: ScoredLabel
    keywords: tuple[Keyword, ...]


def _encode_padded(tokenizer: Tokenizer, manifest: Manifest, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` of NFC-normalised texts, padded to the longest."""
    encodings = encode_texts(
        tokenizer, [normalize_nfc(text).text for text in texts], text_prefix=manifest.tokenizer.text_prefix
    )
    return pad_batch([encoding.ids for encoding in encodings], manifest.tokenizer.pad_token_id)


def _reproduces_token_ids(tokenizer: Tokenizer, manifest: Manifest, sample: ParitySample) -> bool:
    input_ids, mask = _encode_padded(tokenizer, manifest, sample.texts)
    return mask.shape == sample.attention_mask.shape and bool(
        np.array_equal(mask, sample.attention_mask) and np.array_equal(input_ids * mask, sample.input_ids * mask)
    )


class ReportModel:
    """One loaded artifact: the engine that runs its graph, the tokenizer and the manifest."""

    def __init__(
        self,
        manifest: Manifest,
        engine: Engine,
        tokenizer: Tokenizer,
        *,
        max_batch_tokens: int | None = None,
        on_model_call: ModelCallObserver | None = None,
        engine_choice: EngineChoice | None = None,
    ) -> None:
        self.manifest = manifest
        self.engine = engine
        self.engine_choice = engine_choice
        self._tokenizer = prepare_tokenizer(tokenizer, manifest.tokenizer.max_length)
        self._keyword_tags = manifest.keyword_tags
        self.max_batch_tokens = max_batch_tokens or engine.max_batch_tokens
        self._on_model_call = on_model_call

    @classmethod
    def load(
        cls,
        artifact_dir: Path,
        *,
        engine: EngineSetting = "auto",
        execution_provider: ExecutionProvider = "cpu",
        intra_op_threads: int,
        max_batch_tokens: int | None = None,
        on_model_call: ModelCallObserver | None = None,
    ) -> ReportModel:
        """Read, verify and load an artifact, and choose its engine by measurement (see
        :mod:`app.inference.selection`); raises :class:`ArtifactError` with every problem found.
        ``max_batch_tokens`` None takes the chosen engine's own budget."""
        manifest = read_manifest(artifact_dir)
        try:
            tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise ArtifactError(artifact_dir, [f"{TOKENIZER_FILE} cannot be loaded: {exc}"]) from exc
        candidates = engine_candidates(
            artifact_dir / MODEL_FILE, setting=engine, execution_provider=execution_provider, threads=intra_op_threads
        )

        def check(loaded: Engine) -> None:
            check_graph(artifact_dir, manifest, inputs=loaded.input_names, outputs=loaded.output_shapes)

        prepare_tokenizer(tokenizer, manifest.tokenizer.max_length)
        sample = read_parity_sample(artifact_dir, manifest)
        if sample is None:
            sample = builtin_parity_sample(BUILTIN_TEXTS, *_encode_padded(tokenizer, manifest, BUILTIN_TEXTS))
        elif not _reproduces_token_ids(tokenizer, manifest, sample):
            logger.warning(
                "the tokenizer does not give the token ids of the parity sample in %s: the engines are compared on "
                "the sample's ids, but the service does not compute what export checked",
                artifact_dir,
            )
        choice = choose_engine(candidates, sample, setting=engine, check=check)
        model = cls(
            manifest,
            choice.engine,
            tokenizer,
            max_batch_tokens=max_batch_tokens,
            on_model_call=on_model_call,
            engine_choice=choice,
        )
        chosen = choice.chosen
        logger.info(
            "model %s loaded from %s: engine %s (%s) chosen by %s in %.2f s, %.1f texts/s, department agreement %.1f%% "
            "with %s; %d intra-op threads, %d tokens per call",
            manifest.model_version,
            artifact_dir,
            model.engine.name,
            model.provider,
            engine,
            choice.startup_s,
            chosen.texts_per_s or 0.0,
            100 * (chosen.agreement or {}).get("department", float("nan")),
            choice.reference,
            intra_op_threads,
            model.max_batch_tokens,
        )
        return model

    @property
    def provider(self) -> str:
        """Where the graph runs (onnxruntime's execution provider, or OpenVINO's device and precision)."""
        return self.engine.device

    def predict(self, texts: Sequence[str]) -> list[ModelPrediction]:
        """Predictions for texts, in order. Texts are NFC-normalised, then run shortest first in batches whose
        padded size stays within the token budget; the attention mask keeps padding out of every result."""
        normalized = [normalize_nfc(text) for text in texts]
        encodings = encode_texts(
            self._tokenizer, [item.text for item in normalized], text_prefix=self.manifest.tokenizer.text_prefix
        )
        predictions: dict[int, ModelPrediction] = {}
        lengths = [len(encoding.ids) for encoding in encodings]
        for chunk in length_sorted_chunks(lengths, self.max_batch_tokens):
            probabilities = self._probabilities(self._run([encodings[i] for i in chunk]))
            for row, i in enumerate(chunk):
                predictions[i] = self._decode(probabilities, row, encodings[i], normalized[i], texts[i])
        return [predictions[i] for i in range(len(texts))]

    def _run(self, encodings: Sequence[EncodedText]) -> dict[str, np.ndarray]:
        input_ids, attention_mask = pad_batch(
            [encoding.ids for encoding in encodings], self.manifest.tokenizer.pad_token_id
        )
        started = time.perf_counter()
        outputs = self.engine.run(input_ids, attention_mask)
        if self._on_model_call is not None:
            self._on_model_call(len(encodings), time.perf_counter() - started)
        return outputs

    def _probabilities(self, outputs: dict[str, np.ndarray]) -> _BatchProbabilities:
        """Calibrated probabilities of a whole call at once, and the label rankings of each task."""
        probs = {task: softmax(outputs[output_name(task)], self.manifest.tasks[task].temperature) for task in TASKS}
        ranks = {task: np.argsort(-probs[task], axis=-1, kind="stable") for task in CLASSIFICATION_TASKS}
        return _BatchProbabilities(probs, ranks)

    def _ranked(
        self, task: str, batch: _BatchProbabilities, row: int, top: int | None = None
    ) -> tuple[ScoredLabel, ...]:
        labels, probs = self.manifest.tasks[task].labels, batch.probs[task][row]
        return tuple(
            ScoredLabel(label=labels[i].id, name=labels[i].name, score=float(probs[i]), index=int(i))
            for i in batch.ranks[task][row, :top]
        )

    def _decode(
        self,
        batch: _BatchProbabilities,
        row: int,
        encoding: EncodedText,
        normalized: NormalizedText,
        original: str,
    ) -> ModelPrediction:
        tag_probs = batch.probs[SPAN_TASK][row]
        keywords = []
        for span in decode_spans(tag_probs, encoding.offsets, self._keyword_tags, text=normalized.text):
            start, end = normalized.to_original(span.start, span.end)
            keywords.append(Keyword(text=original[start:end], type=span.type, start=start, end=end, score=span.score))
        return ModelPrediction(
            department=self._ranked("department", batch, row),
            # Severity is ordinal, yet decoded like the others, by argmax: training already charges distant
            # levels more (its ordinal loss term), and the argmax keeps the score the probability of the level
            # returned, which a rounded expected level would not have.
            sentiment=self._ranked("sentiment", batch, row, top=1)[0],
            severity=self._ranked("severity", batch, row, top=1)[0],
            keywords=tuple(keywords),
        )


@dataclass(frozen=True)
class _BatchProbabilities:
    probs: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
