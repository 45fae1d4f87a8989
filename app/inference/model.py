"""The model artifact in onnxruntime: tokenise, run in length-sorted batches, turn logits into predictions.

Everything here is synchronous and runs in the micro-batcher's worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from app.artifact import (
    CLASSIFICATION_TASKS,
    MODEL_FILE,
    SPAN_TASK,
    TOKENIZER_FILE,
    ArtifactError,
    Manifest,
    check_graph,
    output_name,
    read_manifest,
)
from app.config import ExecutionProvider
from app.inference.encoding import EncodedText, encode_texts, prepare_tokenizer
from app.inference.session import create_session, execution_providers
from app.inference.spans import NormalizedText, decode_spans, normalize_nfc
from app.inference.tensors import pad_batch, softmax

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


class ReportModel:
    """One loaded artifact: the onnxruntime session, the tokenizer and the manifest."""

    def __init__(
        self,
        manifest: Manifest,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        max_batch_tokens: int,
        on_model_call: ModelCallObserver | None = None,
    ) -> None:
        self.manifest = manifest
        self._session = session
        self._tokenizer = prepare_tokenizer(tokenizer, manifest.tokenizer.max_length)
        self._max_batch_tokens = max_batch_tokens
        self._on_model_call = on_model_call
        self._output_names = [output_name(task) for task in (*CLASSIFICATION_TASKS, SPAN_TASK)]

    @classmethod
    def load(
        cls,
        artifact_dir: Path,
        *,
        execution_provider: ExecutionProvider,
        intra_op_threads: int,
        max_batch_tokens: int,
        on_model_call: ModelCallObserver | None = None,
    ) -> ReportModel:
        """Read, verify and load an artifact; raises :class:`ArtifactError` with every problem found."""
        manifest = read_manifest(artifact_dir)
        try:
            session = create_session(
                artifact_dir / MODEL_FILE,
                providers=execution_providers(execution_provider),
                intra_op_threads=intra_op_threads,
            )
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ArtifactError(artifact_dir, [f"onnxruntime cannot load {MODEL_FILE}: {exc}"]) from exc
        check_graph(
            artifact_dir,
            manifest,
            inputs=[node.name for node in session.get_inputs()],
            outputs={node.name: node.shape for node in session.get_outputs()},
        )
        try:
            tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise ArtifactError(artifact_dir, [f"{TOKENIZER_FILE} cannot be loaded: {exc}"]) from exc
        model = cls(manifest, session, tokenizer, max_batch_tokens=max_batch_tokens, on_model_call=on_model_call)
        logger.info(
            "model %s loaded from %s on %s (%d intra-op threads)",
            manifest.model_version,
            artifact_dir,
            model.provider,
            intra_op_threads,
        )
        return model

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph."""
        providers: list[str] = self._session.get_providers()
        return providers[0]

    def predict(self, texts: Sequence[str]) -> list[ModelPrediction]:
        """Predictions for texts, in order. Texts are NFC-normalised, then run shortest first in batches whose
        padded size stays within the token budget; the attention mask keeps padding out of every result."""
        normalized = [normalize_nfc(text) for text in texts]
        encodings = encode_texts(
            self._tokenizer, [item.text for item in normalized], text_prefix=self.manifest.tokenizer.text_prefix
        )
        predictions: dict[int, ModelPrediction] = {}
        for chunk in self._length_sorted_chunks([len(encoding.ids) for encoding in encodings]):
            outputs = self._run([encodings[i] for i in chunk])
            for row, i in enumerate(chunk):
                predictions[i] = self._decode(outputs, row, encodings[i], normalized[i], texts[i])
        return [predictions[i] for i in range(len(texts))]

    def _length_sorted_chunks(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped shortest first, each group's ``size x longest`` within the token budget."""
        chunks: list[list[int]] = []
        for index in sorted(range(len(lengths)), key=lengths.__getitem__):
            # Sorted ascending, so the newcomer is the longest of its group.
            if chunks and (len(chunks[-1]) + 1) * lengths[index] <= self._max_batch_tokens:
                chunks[-1].append(index)
            else:
                chunks.append([index])
        return chunks

    def _run(self, encodings: Sequence[EncodedText]) -> dict[str, np.ndarray]:
        input_ids, attention_mask = pad_batch(
            [encoding.ids for encoding in encodings], self.manifest.tokenizer.pad_token_id
        )
        started = time.perf_counter()
        outputs = self._session.run(self._output_names, {"input_ids": input_ids, "attention_mask": attention_mask})
        if self._on_model_call is not None:
            self._on_model_call(len(encodings), time.perf_counter() - started)
        return dict(zip(self._output_names, outputs, strict=True))

    def _ranked(self, task: str, logits: np.ndarray) -> tuple[ScoredLabel, ...]:
        spec = self.manifest.tasks[task]
        probs = softmax(logits, spec.temperature)
        return tuple(
            ScoredLabel(label=spec.labels[i].id, name=spec.labels[i].name, score=float(probs[i]), index=int(i))
            for i in np.argsort(-probs, kind="stable")
        )

    def _decode(
        self,
        outputs: dict[str, np.ndarray],
        row: int,
        encoding: EncodedText,
        normalized: NormalizedText,
        original: str,
    ) -> ModelPrediction:
        tag_probs = softmax(
            outputs[output_name(SPAN_TASK)][row, : len(encoding.ids)], self.manifest.tasks[SPAN_TASK].temperature
        )
        keywords = []
        for span in decode_spans(tag_probs, encoding.offsets, self.manifest.keyword_tags, text=normalized.text):
            start, end = normalized.to_original(span.start, span.end)
            keywords.append(Keyword(text=original[start:end], type=span.type, start=start, end=end, score=span.score))
        return ModelPrediction(
            department=self._ranked("department", outputs[output_name("department")][row]),
            # Severity is ordinal, yet decoded like the others, by argmax: training already charges distant
            # levels more (its ordinal loss term), and the argmax keeps the score the probability of the level
            # returned, which a rounded expected level would not have.
            sentiment=self._ranked("sentiment", outputs[output_name("sentiment")][row])[0],
            severity=self._ranked("severity", outputs[output_name("severity")][row])[0],
            keywords=tuple(keywords),
        )
