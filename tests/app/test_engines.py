"""The engines behind one interface, the parity sample and the start-up choice of `auto`."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from app.artifact import MANIFEST_FILE, MODEL_FILE, PARITY_FILE, ArtifactError, Manifest, read_manifest, write_manifest
from app.config import Settings
from app.errors import ConfigurationError
from app.inference import engines as engines_module
from app.inference.engines import Engine, EngineCandidate, OnnxRuntimeEngine, OpenVinoEngine, engine_candidates
from app.inference.model import ReportModel
from app.inference.selection import ParitySample, choose_engine, read_parity_sample
from app.main import create_app
from tests.app.conftest import CLASSIFY_HEADERS, serve_app


def load(artifact: Path, **options: Any) -> ReportModel:
    return ReportModel.load(artifact, **({"intra_op_threads": 1} | options))


@pytest.fixture(scope="module")
def sample(tiny_artifact: Path) -> ParitySample:
    parity = read_parity_sample(tiny_artifact, read_manifest(tiny_artifact))
    assert parity is not None
    return parity


def candidate(name: str, runtime: str, load: Callable[[], Engine]) -> EngineCandidate:
    return EngineCandidate(name, runtime, load)  # type: ignore[arg-type]


def ort_candidate(artifact: Path) -> EngineCandidate:
    return candidate(
        "onnxruntime-cpu",
        "onnxruntime",
        lambda: OnnxRuntimeEngine.load(artifact / MODEL_FILE, providers=["CPUExecutionProvider"], threads=1),
    )


class Changed:
    """An engine that runs another and changes its answers or its speed: the engine that fails parity, or a slow one."""

    runtime = "openvino"

    def __init__(
        self, inner: Engine, name: str, *, flip_departments: bool = False, delay_s: float = 0.0, tokens: int = 4096
    ) -> None:
        self.inner, self.name, self.flip, self.delay_s, self.max_batch_tokens = (
            inner,
            name,
            flip_departments,
            delay_s,
            tokens,
        )
        self.device = f"changed {inner.device}"
        self.input_names, self.output_shapes = inner.input_names, inner.output_shapes

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(self.delay_s)
        outputs = self.inner.run(input_ids, attention_mask)
        if self.flip:
            # Every text's department becomes the one the model finds least likely.
            outputs["department_logits"] = -outputs["department_logits"]
        return outputs


def changed_candidate(artifact: Path, name: str, **changes: Any) -> EngineCandidate:
    inner = ort_candidate(artifact)
    return candidate(name, "openvino", lambda: Changed(inner.load(), name, **changes))


def no_check(_engine: Engine) -> None:
    return None


# --- the engines ------------------------------------------------------------------------------------------------


def test_onnxruntime_and_openvino_load_the_tiny_artifact_and_agree(tiny_artifact: Path, sample: ParitySample) -> None:
    ort_outputs = OnnxRuntimeEngine.load(tiny_artifact / MODEL_FILE, providers=["CPUExecutionProvider"], threads=1).run(
        sample.input_ids, sample.attention_mask
    )
    model = engines_module.read_openvino_model(tiny_artifact / MODEL_FILE)
    mask = sample.attention_mask.astype(bool)
    # bf16 keeps about 3 significant digits: its error grows with the logits' size (a description head's are ~15)
    for precision, tolerance, relative in (("f32", 1e-4, 1e-6), ("bf16", 0.1, 0.02)):
        engine = OpenVinoEngine.load(model, precision=precision, threads=1)
        assert engine.name == f"openvino-{precision}"
        outputs = engine.run(sample.input_ids, sample.attention_mask)
        assert set(outputs) == set(ort_outputs)
        for name in ("department_logits", "sentiment_logits", "severity_logits"):
            np.testing.assert_allclose(outputs[name], ort_outputs[name], atol=tolerance, rtol=relative)
        np.testing.assert_allclose(
            outputs["keywords_logits"][mask], ort_outputs["keywords_logits"][mask], atol=tolerance, rtol=relative
        )
        departments = outputs["department_logits"].argmax(-1) == ort_outputs["department_logits"].argmax(-1)
        assert departments.mean() >= 0.95


def test_the_graph_check_runs_on_the_openvino_engine(tiny_artifact: Path) -> None:
    engine = OpenVinoEngine.load(
        engines_module.read_openvino_model(tiny_artifact / MODEL_FILE), precision="f32", threads=1
    )
    assert engine.input_names == ["input_ids", "attention_mask"]
    assert engine.output_shapes["department_logits"] == [
        None,
        len(read_manifest(tiny_artifact).tasks["department"].labels),
    ]


def test_candidates_per_setting(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny_artifact / MODEL_FILE

    def names(setting: Any, provider: Any = "cpu") -> list[str]:
        return [c.name for c in engine_candidates(path, setting=setting, execution_provider=provider, threads=1)]

    monkeypatch.setattr(engines_module, "openvino_precisions", lambda: ["bf16", "f32"])
    assert names("auto") == ["openvino-bf16", "openvino-f32", "onnxruntime-cpu"]
    assert names("openvino") == ["openvino-bf16", "openvino-f32"]
    assert names("onnxruntime") == ["onnxruntime-cpu"]
    monkeypatch.setattr(engines_module, "openvino_precisions", lambda: ["f32"])  # a CPU without bf16
    assert names("auto") == ["openvino-f32", "onnxruntime-cpu"]
    monkeypatch.setattr(
        engines_module, "execution_providers", lambda _: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert names("auto", "cuda") == ["onnxruntime-cuda"]  # CUDA stays on onnxruntime
    monkeypatch.setattr(engines_module, "openvino_available", lambda: False)
    monkeypatch.setattr(engines_module, "execution_providers", lambda _: ["CPUExecutionProvider"])
    assert names("auto") == ["onnxruntime-cpu"]
    with pytest.raises(ConfigurationError, match="openvino package is not installed"):
        names("openvino")


def test_openvino_setting_serves_openvino(tiny_artifact: Path) -> None:
    model = load(tiny_artifact, engine="openvino")
    assert isinstance(model.engine, OpenVinoEngine)
    assert model.provider.startswith("OpenVINO CPU")
    assert model.max_batch_tokens == model.engine.max_batch_tokens
    assert load(tiny_artifact, engine="openvino", max_batch_tokens=64).max_batch_tokens == 64


# --- the parity sample ------------------------------------------------------------------------------------------


def test_export_writes_a_parity_sample_that_onnxruntime_reproduces(tiny_artifact: Path, sample: ParitySample) -> None:
    manifest = read_manifest(tiny_artifact)
    assert manifest.parity is not None and manifest.parity.reference.startswith("PyTorch fp32")
    assert PARITY_FILE in manifest.files
    assert sample.size == manifest.parity.texts == len(sample.texts) > 0
    model = load(tiny_artifact, engine="onnxruntime")
    choice = model.engine_choice
    assert choice is not None and choice.passed
    # The fp32 graph against the PyTorch reference: every prediction the same.
    assert choice.chosen.agreement == {"department": 1.0, "sentiment": 1.0, "severity": 1.0, "keywords": 1.0}
    assert "PyTorch fp32" in choice.reference


def test_a_changed_parity_sample_fails_its_checksum(tiny_artifact: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tiny_artifact, tmp_path / "broken"))
    (broken / PARITY_FILE).write_bytes(b"not numpy")
    with pytest.raises(ArtifactError, match="parity.npz does not match its sha256"):
        load(broken)


def without_parity_sample(artifact: Path, target: Path) -> Path:
    """The artifact as export wrote it before parity samples existed."""
    shutil.copytree(artifact, target)
    (target / PARITY_FILE).unlink()
    manifest = Manifest.model_validate_json((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    write_manifest(target, manifest.model_copy(update={"parity": None}))
    return target


def test_an_artifact_without_parity_sample_is_compared_with_onnxruntime(
    tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = without_parity_sample(tiny_artifact, tmp_path / "old")
    assert read_manifest(old).files.keys() == {"model.onnx", "tokenizer.json"}
    with caplog.at_level(logging.INFO):
        model = load(old)
    choice = model.engine_choice
    assert choice is not None
    assert "no parity sample" in choice.reference and "built-in texts" in choice.reference
    assert choice.measurements[0].engine == "onnxruntime-cpu"  # it computes the reference, so it runs first
    assert choice.measurements[0].agreement == {"department": 1.0, "sentiment": 1.0, "severity": 1.0, "keywords": 1.0}
    assert "no parity sample" in caplog.text


# --- choosing ---------------------------------------------------------------------------------------------------


def test_auto_rejects_an_engine_that_fails_parity_and_falls_back(tiny_artifact: Path, sample: ParitySample) -> None:
    candidates = [
        changed_candidate(tiny_artifact, "openvino-broken", flip_departments=True),
        ort_candidate(tiny_artifact),
    ]
    choice = choose_engine(candidates, sample, setting="auto", check=no_check)
    broken, kept = choice.measurements
    assert not broken.passed and broken.agreement is not None and broken.agreement["department"] < 0.995
    assert "department agreement" in broken.note
    assert broken.texts_per_s is not None  # it was measured, and its speed did not save it
    assert kept.passed and choice.engine.name == "onnxruntime-cpu" and choice.passed


def test_auto_keeps_the_fastest_engine_that_passes(tiny_artifact: Path, sample: ParitySample) -> None:
    slow = changed_candidate(tiny_artifact, "openvino-slow", delay_s=0.02, tokens=64)
    fast = changed_candidate(tiny_artifact, "openvino-fast")
    choice = choose_engine([slow, fast, ort_candidate(tiny_artifact)], sample, setting="auto", check=no_check)
    assert choice.engine.name in {"openvino-fast", "onnxruntime-cpu"}
    rates = {m.engine: m.texts_per_s for m in choice.measurements if m.passed}
    assert choice.chosen.texts_per_s == max(rates.values())
    assert "openvino-slow" in rates  # measured in full: it ran first, with nothing to beat


def test_a_later_engine_stops_once_it_cannot_win(tiny_artifact: Path, sample: ParitySample) -> None:
    slow = changed_candidate(tiny_artifact, "openvino-slow", delay_s=0.05, tokens=64)
    choice = choose_engine([ort_candidate(tiny_artifact), slow], sample, setting="auto", check=no_check)
    fast, stopped = choice.measurements
    assert choice.engine.name == "onnxruntime-cpu"
    assert not stopped.passed and stopped.texts_per_s is None and stopped.note.startswith("stopped")


def test_no_engine_is_tried_after_the_budget_once_one_passed(tiny_artifact: Path, sample: ParitySample) -> None:
    candidates = [ort_candidate(tiny_artifact), changed_candidate(tiny_artifact, "openvino-fast")]
    choice = choose_engine(candidates, sample, setting="auto", check=no_check, budget_s=0.0)
    assert choice.engine.name == "onnxruntime-cpu"
    assert "budget" in choice.measurements[1].note


def test_when_no_engine_passes_the_last_candidate_serves_with_a_warning(
    tiny_artifact: Path, sample: ParitySample, caplog: pytest.LogCaptureFixture
) -> None:
    candidates = [
        changed_candidate(tiny_artifact, "openvino-broken", flip_departments=True),
        changed_candidate(tiny_artifact, "onnxruntime-broken", flip_departments=True),
    ]
    with caplog.at_level(logging.WARNING):
        choice = choose_engine(candidates, sample, setting="auto", check=no_check)
    assert choice.engine.name == "onnxruntime-broken" and not choice.passed
    assert "no engine reproduced the reference" in caplog.text


def test_an_engine_that_cannot_load_is_skipped_but_the_last_resort_must_load(
    tiny_artifact: Path, sample: ParitySample
) -> None:
    def cannot_load() -> Engine:
        raise ArtifactError(tiny_artifact, ["openvino cannot load model.onnx (bf16): unsupported"])

    choice = choose_engine(
        [candidate("openvino-bf16", "openvino", cannot_load), ort_candidate(tiny_artifact)],
        sample,
        setting="auto",
        check=no_check,
    )
    assert choice.engine.name == "onnxruntime-cpu"
    assert "unsupported" in choice.measurements[0].note
    with pytest.raises(ArtifactError, match="unsupported"):
        choose_engine([candidate("openvino-bf16", "openvino", cannot_load)], sample, setting="openvino", check=no_check)


def test_auto_on_the_tiny_artifact_measures_every_engine_of_this_machine(tiny_artifact: Path) -> None:
    model = load(tiny_artifact)
    choice = model.engine_choice
    assert choice is not None and choice.setting == "auto" and choice.passed
    offered = [
        c.name
        for c in engine_candidates(tiny_artifact / MODEL_FILE, setting="auto", execution_provider="cpu", threads=1)
    ]
    assert [m.engine for m in choice.measurements] == offered
    assert choice.engine.name == choice.chosen.engine
    assert choice.chosen.texts_per_s == max(m.texts_per_s or 0.0 for m in choice.measurements if m.passed)
    assert choice.startup_s < 30


# --- the service shows it ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_choice_is_visible_in_the_model_summary_and_the_metrics(
    make_settings: Callable[..., Settings],
) -> None:
    app: FastAPI = create_app(make_settings(engine="auto"))
    async with serve_app(app) as client:
        model = (await client.get("/v1/model", headers=CLASSIFY_HEADERS)).json()
        metrics = (await client.get("/metrics", headers=CLASSIFY_HEADERS)).text
        response = await client.post("/v1/classify", json={"text": "Gatlampan är trasig"}, headers=CLASSIFY_HEADERS)
    assert response.status_code == 200
    engine = model["engine"]
    assert engine["setting"] == "auto"
    chosen = next(c for c in engine["candidates"] if c["engine"] == engine["engine"])
    assert chosen["passed"] and engine["texts_per_s"] == chosen["texts_per_s"] > 0
    assert engine["department_agreement"] == chosen["agreement"]["department"] >= 0.995
    assert engine["device"] == model["execution_provider"]
    assert "PyTorch fp32" in engine["reference"]
    assert {c["engine"] for c in engine["candidates"]} >= {"onnxruntime-cpu", "openvino-f32"}
    assert (
        f'kommunrouter_engine_info{{device="{engine["device"]}",engine="{engine["engine"]}",setting="auto"}} 1.0'
        in metrics
    )
    assert 'kommunrouter_engine_agreement_ratio{task="department"}' in metrics
    assert "kommunrouter_engine_texts_per_second" in metrics and "kommunrouter_engine_startup_seconds" in metrics


@pytest.mark.anyio
async def test_the_onnxruntime_setting_is_what_serves(client: httpx.AsyncClient) -> None:
    model = (await client.get("/v1/model", headers=CLASSIFY_HEADERS)).json()
    assert model["engine"]["engine"] == "onnxruntime-cpu" and model["engine"]["setting"] == "onnxruntime"
    assert [c["engine"] for c in model["engine"]["candidates"]] == ["onnxruntime-cpu"]
    assert model["engine"]["max_batch_tokens"] == 256
