"""The benchmark scripts on the tiny run and artifact, with a handful of texts: every field of their results is
there and consistent. No timing is asserted: these machines are shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import accuracy, bulk_classify, engines, inference, service_load
from bench.run_all import write_summary

FIXTURE_TEXTS = Path(__file__).parent / "fixtures" / "dev.jsonl"
LATENCY_FIELDS = {"p50", "p95", "p99", "mean", "count"}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, tiny_artifact: Path) -> Path:
    """inference.json and accuracy.json of the tiny run, as `make bench` would write them."""
    out = tmp_path_factory.mktemp("bench_results")
    inference.main(
        [
            f"--run={tiny_run}",
            f"--artifact={tiny_artifact}",
            f"--texts={FIXTURE_TEXTS}",
            "--batch1-texts=3",
            "--repeats=1",
            "--gemm-size=64",
            f"--out={out / 'inference.json'}",
        ]
    )
    engines.main(
        [
            f"--run={tiny_run}",
            f"--artifact={tiny_artifact}",
            f"--texts={FIXTURE_TEXTS}",
            "--batch1-texts=3",
            "--repeats=1",
            f"--out={out / 'engines.json'}",
        ]
    )
    (out / "learning_curve.json").write_text(json.dumps(LEARNING_CURVE_POINTS))
    accuracy.main(
        [f"--run={tiny_run}", f"--learning-curve={out / 'learning_curve.json'}", f"--out={out / 'accuracy.json'}"]
    )
    return out


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def test_inference_compares_four_ways_on_the_same_texts(results_dir: Path) -> None:
    result = load(results_dir / "inference.json")
    assert result["setup"]["batch_1_texts"] == 3
    assert result["setup"]["batch_32_texts"] == 20
    assert set(result["ways"]) == set(inference.WAYS)
    for way in result["ways"].values():
        for mode in inference.MODES:
            measured = way[mode]
            assert measured["texts_per_s"] > 0
            assert set(measured["latency_ms"]) == LATENCY_FIELDS
            assert 0 <= measured["department_agreement_with_a"] <= 1
            assert measured["texts_per_s_ratio_to_a"] > 0 and measured["p50_speedup_over_a"] > 0
    reference = result["ways"][inference.REFERENCE]
    assert reference["batch_32"]["texts_per_s_ratio_to_a"] == 1.0
    # Batch 1 times each of the 3 texts once; batch 32 is one call of all 20 texts.
    assert reference["batch_1"]["latency_ms"]["count"] == 3
    assert reference["batch_32"]["latency_ms"]["count"] == 1
    sweep = result["d_token_budget_sweep"]
    assert list(sweep["texts_per_s"]) == [str(budget) for budget in inference.TOKEN_BUDGETS]
    assert all(rate > 0 for rate in sweep["texts_per_s"].values())
    # (c) and (d) are exports of the very weights (a) runs: a bench that compared different models would show here.
    for way in ("c_onnxruntime_fp32", "d_kommunrouter"):
        for mode in inference.MODES:
            assert result["ways"][way][mode]["department_agreement_with_a"] == 1.0


def test_inference_reports_the_machine_limit(results_dir: Path) -> None:
    limit = load(results_dir / "inference.json")["machine_limit"]
    assert {"fp32", "bf16", "int8_onnxruntime"} <= set(limit["gemm"])
    assert all(gemm["gflops_best"] >= gemm["gflops_median"] > 0 for gemm in limit["gemm"].values())
    model = limit["model"]
    assert model["layers"] == 2 and model["hidden"] == 32  # the tiny encoder
    assert model["padded_flops_per_text_batch_32_test_order"] >= model["flops_per_text"] > 0
    assert set(limit["ceilings"]) == {"fp32", "bf16", "int8"}
    for ceiling in limit["ceilings"].values():
        assert ceiling["texts_per_s"] == pytest.approx(ceiling["gflops"] * 1e9 / model["flops_per_text"])
        assert ceiling["d_share_batch_1"] > 0 and ceiling["d_share_batch_32"] > 0
    targets = load(results_dir / "inference.json")["targets"]
    assert [t["name"] for t in targets] == [
        "d_speedup_batch_1",
        "d_speedup_batch_32",
        "d_department_agreement",
        "d_share_of_fp32_ceiling",
    ]
    assert all(isinstance(t["met"], bool) for t in targets)


def test_engines_puts_the_shipped_engine_beside_its_peers(results_dir: Path) -> None:
    result = load(results_dir / "engines.json")
    assert "flags" in result["machine"]["cpu"] and result["machine"]["packages"]["openvino"]
    ways = result["ways"]
    assert {"onnxruntime", "openvino_f32", engines.SERVICE, "pytorch_fp32", "pytorch_bf16"} <= set(ways)
    assert {"openvino_bf16_fp32_graph", "openvino_bf16_int8_graph"} <= set(ways)
    assert "ctranslate2_int8" in ways or "ctranslate2_int8_skipped" in result["notes"]
    for way in ways.values():
        for mode in engines.MODES:
            assert way[mode]["texts_per_s"] > 0 and set(way[mode]["latency_ms"]) == LATENCY_FIELDS
            # The tiny run is the artifact's: every way is held to PyTorch fp32 of the same weights.
            assert way[mode]["agreement_with"] == "pytorch_fp32"
    # Exports of the very weights PyTorch runs: a bench comparing different models would show here.
    for name in ("onnxruntime", "openvino_f32", engines.SERVICE, "openvino_bf16_fp32_graph"):
        assert ways[name]["batch_32"]["department_agreement"] == 1.0
    startup = result["auto_startup"]
    assert startup["engine"] in {c["engine"] for c in startup["candidates"] if c["passed"]}
    assert startup["choice_seconds"] <= startup["load_seconds"]
    assert set(result["token_budget_sweep"]["onnxruntime"]) == {str(b) for b in engines.TOKEN_BUDGETS}
    assert result["around_the_model"]["batch_1_ms_per_text"] > 0
    assert result["notes"]["graph_mb"]["int8"] < result["notes"]["graph_mb"]["fp32"]
    assert {t["name"] for t in result["targets"]} >= {"auto_startup_s", "service_vs_onnxruntime"}


def test_a_missing_run_says_to_train_first(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="make train"):
        inference.main([f"--run={tmp_path / 'missing'}", f"--out={tmp_path / 'inference.json'}"])
    with pytest.raises(SystemExit, match="make train"):
        accuracy.main([f"--run={tmp_path / 'missing'}", f"--out={tmp_path / 'accuracy.json'}"])


LEARNING_CURVE_POINTS = [
    {
        "method": "pretrained",
        "fraction": 0.1,
        "n_examples": 81,
        "seed": 1,
        "department_macro_f1": 0.6,
        "keywords_f1": 0.5,
    },
    {
        "method": "pretrained",
        "fraction": 0.1,
        "n_examples": 81,
        "seed": 2,
        "department_macro_f1": 0.8,
        "keywords_f1": None,
    },
    {"method": "tfidf", "fraction": 0.1, "n_examples": 81, "seed": 1, "department_macro_f1": 0.3},
]


def test_accuracy_puts_the_model_beside_the_baselines(results_dir: Path, tiny_run: Path) -> None:
    result = load(results_dir / "accuracy.json")
    evaluation = load(tiny_run / "evaluation" / "evaluation.json")
    assert set(result["model"]) == {"dev", "test"}
    assert result["model"]["test"]["department_macro_f1"] == evaluation["splits"]["test"]["department"]["macro_f1"]
    assert (
        result["model"]["test"]["severity_qwk"] == evaluation["splits"]["test"]["severity"]["quadratic_weighted_kappa"]
    )
    tfidf = result["baselines"]["tfidf_logreg"]["test"]
    assert tfidf["department_macro_f1"] == evaluation["baselines"]["tfidf_logreg"]["test"]["department"]
    assert set(tfidf) == set(result["model"]["test"])
    table = result["learning_curve"]["table"]
    assert [(row["method"], row["seeds"]) for row in table] == [("pretrained", 2), ("tfidf", 1)]
    assert table[0]["department_macro_f1"] == pytest.approx(0.7)  # mean over the seeds
    assert table[0]["keywords_f1"] == 0.5  # a missing score is left out of the mean
    assert table[1]["sentiment_macro_f1"] is None


def test_summary_shows_what_was_measured_and_names_what_was_not(results_dir: Path) -> None:
    summary = write_summary(results_dir).read_text()
    assert "## Inference: four ways to run the same weights" in summary
    assert "(d) kommunrouter artifact" in summary
    assert "| max_batch_tokens | texts/s | x (a) |" in summary
    assert "### Learning curve (test split)" in summary
    assert "(d) >= 4x (a) texts/s at batch 1" in summary  # the targets table
    assert "## Engines side by side" in summary and "`auto` at start-up chose" in summary
    assert "Not measured: service_load.json is missing." in summary
    assert "Not measured: export.json is missing." in summary
    assert (results_dir / "inference_throughput.png").stat().st_size > 0


@pytest.mark.slow
def test_service_load_counts_an_audit_row_per_answer(tiny_artifact: Path, results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "service_load.json"
    service_load.main(
        [
            f"--artifact={tiny_artifact}",
            f"--texts={FIXTURE_TEXTS}",
            "--concurrency=1,4",
            "--requests=5,12",
            "--backends=sqlite",
            f"--inference-json={results_dir / 'inference.json'}",
            f"--engines-json={results_dir / 'engines.json'}",
            f"--out={out}",
        ]
    )
    result = load(out)
    # engines.json measured this artifact: its service row is the reference.
    assert result["model_reference"]["source"] == str(results_dir / "engines.json")
    assert result["backends"]["sqlite"]["engine"]["setting"] == "auto"
    sqlite = result["backends"]["sqlite"]
    assert [(level["concurrency"], level["requests"]) for level in sqlite["levels"]] == [(1, 5), (4, 12)]
    for level in sqlite["levels"]:
        assert level["errors"] == 0 and level["audit_rows"] == level["answered"] == level["requests"]
        assert set(level["latency_ms"]) == LATENCY_FIELDS
        assert level["mean_model_batch"] >= 1
    assert sqlite["audit_rows_total"] == sqlite["requests_total"] == service_load.WARMUP_REQUESTS + 5 + 12
    assert {t["name"] for t in result["targets"]} == {
        "sqlite_errors",
        "sqlite_lost_audit_rows",
        "sqlite_c1_p50_ms",
        "sqlite_c1_p50_8ms",
    }


def test_student_speed_measures_each_shape_side_by_side(tiny_run: Path, tmp_path: Path) -> None:
    from bench import student_speed

    out = tmp_path / "student_speed.json"
    student_speed.main(
        [
            f"--run={tiny_run}",
            "--layers=2,1",
            f"--texts={FIXTURE_TEXTS}",
            "--batch1-texts=2",
            "--repeats=1",
            f"--out={out}",
        ]
    )
    result = load(out)
    assert set(result["shapes"]) == {"2_layers", "1_layers"}
    assert result["shapes"]["1_layers"]["kept_teacher_layers"] == [2]
    assert result["shapes"]["1_layers"]["int8_graph_bytes"] < result["shapes"]["2_layers"]["int8_graph_bytes"]
    for shape in result["shapes"].values():
        for mode in ("batch_1", "batch_32"):
            assert shape[mode]["texts_per_s"] > 0 and set(shape[mode]["latency_ms"]) == LATENCY_FIELDS
    assert result["shapes"]["2_layers"]["batch_32"]["speedup_over_first"] == 1.0


def test_bulk_classify_compares_the_run_with_the_engine_and_measures_memory(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bulk_classify.json"
    bulk_classify.main([f"--artifact={tiny_artifact}", "--rows=60", "--raw-texts=16", "--window=16", f"--out={out}"])
    result = load(out)
    assert result["setup"]["rows"] == 60 and "Windows-1252" in result["setup"]["read_as"]
    bulk = result["bulk"]
    assert bulk["classified"] == bulk["records_written"] == 60 and bulk["errors"] == {}
    # Each window's texts go through predict once: the engine saw exactly the classified texts.
    assert result["engine_in_run"]["texts"] == 60
    assert 0 < bulk["share_of_engine_rate_in_run"] <= 1.0
    assert result["raw_before"]["texts"] == result["raw_after"]["texts"] == 16
    memory = result["memory_mb"]
    assert memory["peak_rss"] >= memory["baseline_rss"] > 0
    assert memory["growth_peak"] == pytest.approx(memory["peak_rss"] - memory["baseline_rss"], abs=0.2)
    assert isinstance(result["machine"]["lscpu_flags"], list)
    assert [t["name"] for t in result["targets"]] == [
        "bulk rate / engine's batched rate on the same texts in the same run",
        "memory growth (MB)",
    ]
