"""Export of the tiny model: fp32 and int8 parity, the artifact contract refusing tampered artifacts, Triton."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.artifact import ArtifactError, check_graph, read_manifest
from app.inference.model import ReportModel
from app.inference.tensors import softmax
from tests.conftest import FIXTURES
from training.evaluate import collect_outputs
from training.export import ExportParityError, ExportReport, export_run
from training.model import encode_texts, load_checkpoint, pad_token_id, torch_runner


@pytest.fixture(scope="module")
def int8_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportReport]:
    out = tmp_path_factory.mktemp("int8")
    report = export_run(tiny_run, out, quantize="int8", triton_dir=out.parent / f"{out.name}-triton")
    return out, report


def dev_texts() -> list[str]:
    return [json.loads(line)["text"] for line in (FIXTURES / "dev.jsonl").read_text(encoding="utf-8").splitlines()]


def served(artifact: Path) -> ReportModel:
    return ReportModel.load(artifact, execution_provider="cpu", intra_op_threads=1, max_batch_tokens=256)


def test_the_served_artifact_reproduces_pytorch(tiny_run: Path, tiny_artifact: Path) -> None:
    # Measured here through the service's own path (ReportModel: its tokenisation, batching and softmax), not
    # through export's checks: calibrated department probabilities of PyTorch and of the served graph agree.
    model, tokenizer, labels = load_checkpoint(tiny_run)
    manifest = read_manifest(tiny_artifact)
    texts = dev_texts()
    spec = manifest.tokenizer
    encoded = encode_texts(tokenizer, texts, spec.max_length, text_prefix=spec.text_prefix)
    logits = collect_outputs(torch_runner(model), encoded, 4, pad_token_id(tokenizer)).logits["department"]
    expected = softmax(logits, manifest.tasks["department"].temperature)
    for row, prediction in zip(expected, served(tiny_artifact).predict(texts), strict=True):
        scores = {label.label: label.score for label in prediction.department}
        assert [scores[label] for label in labels.department] == pytest.approx(list(row), abs=1e-4)
    assert read_manifest(tiny_artifact).metrics["export"]["int8_department_agreement"] is None


def test_int8_export_records_what_it_measured(int8_export: tuple[Path, ExportReport], tiny_artifact: Path) -> None:
    out, report = int8_export
    manifest = read_manifest(out)
    assert manifest.quantization == "int8"
    export = manifest.metrics["export"]
    assert export["int8_department_agreement"] == report.int8_department_agreement
    assert export["dev_scores"] == report.metrics
    assert report.sizes_bytes["int8"] < report.sizes_bytes["fp32"]
    # the agreement the export reports, measured again through the service's path on the fp32 and int8 artifacts
    texts = dev_texts()
    fp32 = [p.department[0].label for p in served(tiny_artifact).predict(texts)]
    int8 = [p.department[0].label for p in served(out).predict(texts)]
    agreement = sum(a == b for a, b in zip(fp32, int8, strict=True)) / len(texts)
    assert report.int8_department_agreement is not None
    assert abs(agreement - report.int8_department_agreement) <= 1 / len(texts)
    assert (out / "MODEL_CARD.md").read_text().count("kommunrouter") >= 2


def test_triton_repository(int8_export: tuple[Path, ExportReport]) -> None:
    out, _ = int8_export
    triton = out.parent / f"{out.name}-triton" / "kommunrouter"
    assert (triton / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    config = (triton / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "dynamic_batching" in config
    assert 'name: "keywords_logits" data_type: TYPE_FP32 dims: [ -1, 5 ]' in config
    assert 'name: "department_logits" data_type: TYPE_FP32 dims: [ 10 ]' in config


def test_parity_failures_are_collected_into_one_error(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("training.export.FP32_TOLERANCE", 0.0)
    monkeypatch.setattr("training.export.INT8_MIN_AGREEMENT", 1.01)
    with pytest.raises(ExportParityError) as error:
        export_run(tiny_run, tmp_path / "out", quantize="int8")
    messages = error.value.failures
    assert any("int8 department agreement" in m for m in messages)
    assert not (tmp_path / "out" / "manifest.json").exists()


def copy_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_a_changed_byte_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny_artifact, tmp_path / "a")
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx does not match its sha256"):
        read_manifest(artifact)


def test_a_missing_file_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny_artifact, tmp_path / "a")
    (artifact / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer.json is missing"):
        read_manifest(artifact)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


def test_an_invalid_manifest_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny_artifact, tmp_path / "a")
    manifest = json.loads((artifact / "manifest.json").read_text())
    del manifest["tasks"]["severity"]
    manifest["schema_version"] = 1
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="tasks missing from the manifest: severity"):
        read_manifest(artifact)
    (artifact / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(artifact)


def test_label_count_not_matching_the_graph_is_refused(tiny_artifact: Path) -> None:
    import onnxruntime as ort

    manifest = read_manifest(tiny_artifact)
    session = ort.InferenceSession(str(tiny_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = {o.name: o.shape for o in session.get_outputs()}
    inputs = [i.name for i in session.get_inputs()]
    check_graph(tiny_artifact, manifest, inputs=inputs, outputs=outputs)  # the real pair fits
    fewer = manifest.model_copy(deep=True)
    fewer.tasks["department"].labels.pop()
    with pytest.raises(ArtifactError, match="department_logits' has 10 values per item but the manifest lists 9"):
        check_graph(tiny_artifact, fewer, inputs=inputs, outputs=outputs)


def test_the_optimised_graph_keeps_the_word_embeddings_for_int8(tiny_run: Path, tmp_path: Path) -> None:
    import onnx

    from training.export import export_onnx, optimise_graph, quantise_graph

    model, _, _ = load_checkpoint(tiny_run)
    fp32, optimised, int8 = tmp_path / "fp32.onnx", tmp_path / "optimised.onnx", tmp_path / "int8.onnx"
    export_onnx(model, fp32)
    optimise_graph(fp32, optimised, model)
    assert not any(node.op_type == "EmbedLayerNormalization" for node in onnx.load(optimised).graph.node)
    quantise_graph(optimised, int8)
    names = {initializer.name for initializer in onnx.load(int8).graph.initializer}
    assert any("word_embeddings" in name and name.endswith("_int8") for name in names)
