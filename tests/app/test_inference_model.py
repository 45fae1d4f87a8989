"""The onnxruntime model: loading and its checks, batching without changing results, calibration, offsets."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from app.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ArtifactError,
    Label,
    Manifest,
    read_manifest,
    write_manifest,
)
from app.inference import session as session_module
from app.inference.encoding import encode_texts, prepare_tokenizer
from app.inference.engines import OnnxRuntimeEngine
from app.inference.model import ModelPrediction, ReportModel
from app.inference.session import execution_providers
from app.inference.tensors import softmax

TEXTS = [
    "Gatlampan på Storgatan 12 är trasig.",
    "Hål i vägen",
    "Det har inte kommit något vatten i kranen sedan i morse och grannarna har samma problem, "
    "kan ni skicka någon till Ekvägen 4 så snart som möjligt?",
    "Tack för snöröjningen!",
    "x",
]


def load(artifact: Path, **kwargs: Any) -> ReportModel:
    options: dict[str, Any] = {"execution_provider": "cpu", "intra_op_threads": 1, "max_batch_tokens": 4096}
    return ReportModel.load(artifact, **(options | kwargs))


@pytest.fixture(scope="module")
def tiny_model(tiny_artifact: Path) -> ReportModel:
    return load(tiny_artifact)


def _manifest(artifact: Path) -> Manifest:
    """The manifest as written, without the checks of read_manifest."""
    return Manifest.model_validate_json((artifact / MANIFEST_FILE).read_text(encoding="utf-8"))


def copy_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def assert_same(a: ModelPrediction, b: ModelPrediction) -> None:
    for task in ("department",):
        assert [x.label for x in getattr(a, task)] == [x.label for x in getattr(b, task)]
        np.testing.assert_allclose([x.score for x in getattr(a, task)], [x.score for x in getattr(b, task)], atol=1e-5)
    for task in ("sentiment", "severity"):
        assert getattr(a, task).label == getattr(b, task).label
        assert getattr(a, task).score == pytest.approx(getattr(b, task).score, abs=1e-5)
    assert [(k.start, k.end, k.type) for k in a.keywords] == [(k.start, k.end, k.type) for k in b.keywords]
    np.testing.assert_allclose([k.score for k in a.keywords], [k.score for k in b.keywords], atol=1e-5)


def test_batched_predictions_equal_one_by_one(tiny_model: ReportModel) -> None:
    batched = tiny_model.predict(TEXTS)
    for text, prediction in zip(TEXTS, batched, strict=True):
        assert_same(prediction, tiny_model.predict([text])[0])


def test_padding_does_not_change_outputs(tiny_model: ReportModel) -> None:
    """The same text alone and padded next to a long one: the attention mask keeps padding out."""
    long_text = TEXTS[2]
    alone = tiny_model.predict([TEXTS[1]])[0]
    padded = tiny_model.predict([TEXTS[1], long_text])[0]
    assert_same(alone, padded)


def test_calls_are_length_sorted_within_the_token_budget(tiny_artifact: Path) -> None:
    sizes: list[int] = []
    texts = ["Hål i vägen", TEXTS[2], "Tack!", "Trasig lampa", "Soptunnan"]
    manifest = read_manifest(tiny_artifact)
    tokenizer = prepare_tokenizer(
        Tokenizer.from_file(str(tiny_artifact / TOKENIZER_FILE)), manifest.tokenizer.max_length
    )
    lengths = [len(e.ids) for e in encode_texts(tokenizer, texts, text_prefix=manifest.tokenizer.text_prefix)]
    assert lengths[1] == manifest.tokenizer.max_length  # truncated
    # the four short texts fit in one call, the long one with no other text
    budget = 4 * max(lengths[0], *lengths[2:])
    assert budget < 2 * lengths[1]
    model = load(tiny_artifact, max_batch_tokens=budget, on_model_call=lambda size, _seconds: sizes.append(size))
    predictions = model.predict(texts)
    # The long text (truncated) runs alone; the four short ones share one call.
    assert sorted(sizes) == [1, 4]
    for text, prediction in zip(texts, predictions, strict=True):
        assert_same(prediction, model.predict([text])[0])


def test_keyword_offsets_refer_to_the_text_as_sent(tiny_model: ReportModel) -> None:
    for text in TEXTS:
        for keyword in tiny_model.predict([text])[0].keywords:
            assert text[keyword.start : keyword.end] == keyword.text
            assert keyword.text == keyword.text.strip() and keyword.text


class EveryWordIsAPlace:
    """A stand-in engine: uniform class logits, B-PLATS for every token."""

    name = "every-word-is-a-place"
    device = "test"
    max_batch_tokens = 4096

    def __init__(self, manifest: Any) -> None:
        self.manifest = manifest

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        batch, width = input_ids.shape
        outputs = {
            f"{task}_logits": np.zeros((batch, len(spec.labels)), np.float32)
            for task, spec in self.manifest.tasks.items()
        }
        tags = np.zeros((batch, width, len(self.manifest.keyword_tags)), np.float32)
        tags[:, :, self.manifest.keyword_tags.index("B-PLATS")] = 5.0
        outputs["keywords_logits"] = tags
        return outputs


def test_offsets_map_back_through_nfc_normalisation(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    tokenizer = Tokenizer.from_file(str(tiny_artifact / TOKENIZER_FILE))
    model = ReportModel(manifest, EveryWordIsAPlace(manifest), tokenizer)  # type: ignore[arg-type]
    sent = "Ga\u030angen vid Sto\u0308rgatan 3"  # decomposed å and ö, as some phones send them
    keywords = model.predict([sent])[0].keywords
    assert [k.text for k in keywords] == ["Ga\u030angen", "vid", "Sto\u0308rgatan", "3"]
    assert all(sent[k.start : k.end] == k.text for k in keywords)
    assert keywords[2].start == sent.index("Sto")
    assert keywords[0].score == pytest.approx(np.exp(5.0) / (np.exp(5.0) + 4))


def test_temperature_scales_the_logits_before_softmax(tiny_artifact: Path, tmp_path: Path) -> None:
    hot = copy_artifact(tiny_artifact, tmp_path / "hot")
    manifest = read_manifest(hot)
    tasks = dict(manifest.tasks)
    tasks["department"] = tasks["department"].model_copy(update={"temperature": tasks["department"].temperature * 3})
    write_manifest(hot, manifest.model_copy(update={"tasks": tasks}))
    base = load(tiny_artifact).predict([TEXTS[0]])[0].department
    scaled = load(hot).predict([TEXTS[0]])[0].department
    assert [x.label for x in base] == [x.label for x in scaled]
    log_ratio = np.log(base[0].score / base[1].score)
    assert np.log(scaled[0].score / scaled[1].score) == pytest.approx(log_ratio / 3, rel=1e-4)


def test_softmax_is_stable_and_sums_to_one() -> None:
    probs = softmax(np.array([[1000.0, 1000.0, -1000.0]]), 2.0)
    np.testing.assert_allclose(probs, [[0.5, 0.5, 0.0]])


def test_session_options_follow_the_settings(tiny_artifact: Path) -> None:
    model = load(tiny_artifact, intra_op_threads=2, engine="onnxruntime")
    assert isinstance(model.engine, OnnxRuntimeEngine)
    options = model.engine.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert model.provider == "CPUExecutionProvider"


def test_cuda_falls_back_to_cpu_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(session_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        assert execution_providers("cuda") == ["CPUExecutionProvider"]
    assert "cuda requested" in caplog.text
    monkeypatch.setattr(
        session_module.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert execution_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("cpu") == ["CPUExecutionProvider"]


def test_a_missing_artifact_fails_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_a_changed_model_file_fails_its_checksum(tiny_artifact: Path, tmp_path: Path) -> None:
    broken = copy_artifact(tiny_artifact, tmp_path / "broken")
    with (broken / MODEL_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        load(broken)


def test_a_file_onnxruntime_cannot_read_fails_with_a_clear_error(tiny_artifact: Path, tmp_path: Path) -> None:
    broken = copy_artifact(tiny_artifact, tmp_path / "broken")
    (broken / MODEL_FILE).write_bytes(b"not a graph")
    write_manifest(broken, _manifest(broken))  # checksums that match the broken file
    with pytest.raises(ArtifactError, match="onnxruntime cannot load"):
        load(broken)


def test_a_graph_that_does_not_fit_the_labels_fails(tiny_artifact: Path, tmp_path: Path) -> None:
    broken = copy_artifact(tiny_artifact, tmp_path / "broken")
    manifest = _manifest(broken)
    tasks = dict(manifest.tasks)
    labels = [*tasks["department"].labels, Label(id="ny_namnd", name="Ny nämnd")]
    tasks["department"] = tasks["department"].model_copy(update={"labels": labels})
    write_manifest(broken, manifest.model_copy(update={"tasks": tasks}))
    with pytest.raises(ArtifactError, match="department_logits"):
        load(broken)
