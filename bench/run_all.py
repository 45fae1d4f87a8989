"""`make bench`: run every benchmark in order, each in a process of its own, then write
bench/results/summary.md (tables and PNG plots the README shows) from the JSON results.

    python bench/run_all.py [--only inference,accuracy] [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# In this order: service_load reads the in-process rates from engines.json (and inference.json).
SCRIPTS = ("export_bench", "inference", "engines", "service_load", "accuracy")
RESULT_FILES = {
    "export_bench": "export.json",
    "inference": "inference.json",
    "engines": "engines.json",
    "service_load": "service_load.json",
    "accuracy": "accuracy.json",
}
# export.json names the optimised graph's latency after the fp32 graph it was made from.
EXPORT_LATENCY_KEYS = {"optimised": "fp32_optimised"}
WAY_NAMES = {
    "a_pytorch_fp32": "(a) PyTorch eager fp32",
    "b_pytorch_bf16": "(b) PyTorch bf16",
    "c_onnxruntime_fp32": "(c) onnxruntime fp32",
    "d_kommunrouter": "(d) kommunrouter artifact",
}


def run_scripts(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Run ``python -m bench.<name>`` for each name; a failure is recorded and the next one still runs."""
    status = {}
    for name in names:
        print(f"== bench.{name}", flush=True)
        # A failed script must not leave an older result in the summary as if it were this run's.
        (RESULTS / RESULT_FILES[name]).unlink(missing_ok=True)
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"}
        )
        status[name] = {"returncode": completed.returncode, "seconds": round(time.perf_counter() - started, 1)}
    return status


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / RESULT_FILES[name]
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _plot_inference(inference: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ways = list(inference["ways"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, mode, title in zip(axes, ("batch_1", "batch_32"), ("batch 1", "batch 32"), strict=True):
        values = [inference["ways"][way][mode]["texts_per_s"] for way in ways]
        bars = ax.bar([WAY_NAMES.get(w, w).split(" ", 1)[0] for w in ways], values, color="#4c72b0")
        bars[-1].set_color("#dd8452")
        for bar, way in zip(bars, ways, strict=True):
            ratio = inference["ways"][way][mode]["texts_per_s_ratio_to_a"]
            ax.annotate(
                f"{ratio:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
            )
        if mode == "batch_32":
            # Ceilings far above the bars would squash them; they are in the table.
            shown = False
            for precision, style in (("fp32", "--"), ("bf16", ":"), ("int8", "-.")):
                ceiling = inference["machine_limit"]["ceilings"][precision]["texts_per_s"]
                if ceiling < 3 * max(values):
                    ax.axhline(ceiling, linestyle=style, color="grey", label=f"{precision} ceiling")
                    shown = True
            if shown:
                ax.legend(loc="upper left", fontsize=8)
        ax.margins(y=0.15)
        ax.set_title(f"texts/s, {title}")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("(a) PyTorch fp32  (b) PyTorch bf16  (c) onnxruntime fp32  (d) kommunrouter", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_service(service: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (throughput, latency) = plt.subplots(1, 2, figsize=(10, 3.8))
    concurrency: list[int] = []
    for (backend, result), colour in zip(service["backends"].items(), ("#4c72b0", "#dd8452", "#55a868"), strict=False):
        levels = result.get("levels", [])
        if not levels:
            continue
        concurrency = [level["concurrency"] for level in levels]
        throughput.plot(concurrency, [level["texts_per_s"] for level in levels], "o-", color=colour, label=backend)
        for quantile, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            values = [level["latency_ms"][quantile] for level in levels]
            latency.plot(concurrency, values, style, color=colour, label=f"{backend} {quantile}")
    throughput.axhline(
        service["model_reference"]["batched_texts_per_s"], color="grey", linestyle="--", label="(d) model, batch 32"
    )
    for ax, title in ((throughput, "texts/s"), (latency, "latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.set_xlabel("requests in flight")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    latency.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _inference_section(inference: dict[str, Any], results: Path) -> list[str]:
    setup = inference["setup"]
    rows = []
    for way, result in inference["ways"].items():
        one, batched = result["batch_1"], result["batch_32"]
        rows.append(
            [
                WAY_NAMES.get(way, way),
                _number(one["texts_per_s"]),
                _number(one["latency_ms"]["p50"]),
                _number(one["latency_ms"]["p95"]),
                f"{one['texts_per_s_ratio_to_a']:.2f}x",
                _number(batched["texts_per_s"]),
                _number(batched["latency_ms"]["p50"], 0),
                f"{batched['texts_per_s_ratio_to_a']:.2f}x",
                f"{one['department_agreement_with_a']:.1%} / {batched['department_agreement_with_a']:.1%}",
            ]
        )
    _plot_inference(inference, results / "inference_throughput.png")
    limit = inference["machine_limit"]
    model = limit["model"]
    limit_rows = [
        [
            precision,
            _number(ceiling["gflops"], 0),
            limit["gemm"][ceiling["gemm"]]["how"],
            _number(ceiling["texts_per_s"], 0),
            f"{ceiling['d_share_batch_32']:.0%}",
            f"{ceiling['d_share_batch_1']:.0%}",
        ]
        for precision, ceiling in limit["ceilings"].items()
    ]
    return [
        "## Inference: four ways to run the same weights",
        "",
        f"{setup['batch_1_texts']} test texts one at a time, then all {setup['batch_32_texts']} test texts in batches "
        f"of 32 ({setup['batch_32_repeats']} passes); {setup['threads']} threads; calls interleaved in one process. "
        f"Latency at batch 1 is per text, at batch 32 per call. Artifact `{setup['artifact_version']}`.",
        "",
        *_table(
            [
                "way",
                "batch 1 texts/s",
                "p50 ms",
                "p95 ms",
                "x (a)",
                "batch 32 texts/s",
                "call p50 ms",
                "x (a)",
                "department agreement with (a), batch 1 / 32",
            ],
            rows,
        ),
        "![texts per second by way of running](inference_throughput.png)",
        "",
        *_budget_lines(inference),
        "### The machine's limit",
        "",
        f"The model costs {model['flops_per_text'] / 1e9:.2f} GFLOP per text ({model['mean_tokens']:.1f} tokens on "
        f"average, {model['layers']} layers, hidden {model['hidden']}); padded to the longest text of each batch "
        f"of 32 in test order it costs {model['padded_flops_per_text_batch_32_test_order'] / 1e9:.2f} GFLOP "
        f"({model['padding_share_batch_32_test_order']:.0%} of the tokens are padding). "
        "A ceiling is the best GEMM rate divided by the FLOPs per text.",
        "",
        *_table(
            [
                "precision",
                "GEMM GFLOP/s",
                "measured with",
                "ceiling texts/s",
                "(d) batch 32 share",
                "(d) batch 1 share",
            ],
            limit_rows,
        ),
    ]


def _budget_lines(inference: dict[str, Any]) -> list[str]:
    sweep = inference["d_token_budget_sweep"]
    reference = inference["ways"]["a_pytorch_fp32"]["batch_32"]["texts_per_s"]
    rows = [
        [
            budget + (" (the service's setting)" if int(budget) == sweep["service_setting"] else ""),
            _number(rate),
            f"{rate / reference:.2f}x",
        ]
        for budget, rate in sweep["texts_per_s"].items()
    ]
    return [
        "(d) at batch 32 by the service's token budget per model call (`KOMMUNROUTER_MAX_BATCH_TOKENS`): a batch "
        "is cut into length-sorted calls of at most this many padded tokens.",
        "",
        *_table(["max_batch_tokens", "texts/s", "x (a)"], rows),
    ]


def _engines_section(engines: dict[str, Any]) -> list[str]:
    setup, startup = engines["setup"], engines["auto_startup"]
    rows = []
    for name, way in engines["ways"].items():
        one, batched = way["batch_1"], way["batch_32"]
        rows.append(
            [
                f"**{name}**" if name == "service" else name,
                way["family"],
                _number(one["texts_per_s"]),
                _number(one["latency_ms"]["p50"]),
                _number(batched["texts_per_s"]),
                f"{one['department_agreement']:.1%} / {batched['department_agreement']:.1%} "
                f"({batched['agreement_with']})",
            ]
        )
    candidates = [
        [
            c["engine"],
            "-" if c["texts_per_s"] is None else _number(c["texts_per_s"]),
            "-" if not c["agreement"] else f"{c['agreement']['department']:.1%}",
            "yes" if c["passed"] else "no",
            c["note"] or "-",
        ]
        for c in startup["candidates"]
    ]
    sweep = engines["token_budget_sweep"]
    budgets = sorted({budget for rates in sweep.values() for budget in rates}, key=int)
    around = engines["around_the_model"]
    graph = engines["notes"].get("graph_mb", {})
    skipped = engines["notes"].get("ctranslate2_int8_skipped")
    return [
        "## Engines side by side",
        "",
        f"{setup['batch_1_texts']} test texts one at a time, then all {setup['batch_32_texts']} in length-sorted "
        f"batches of 32 ({setup['batch_32_repeats']} passes), {setup['threads']} threads, calls interleaved in one "
        "process. "
        f"Rows `artifact`: {setup['artifact_version']} through the service's `ReportModel.predict`; rows `checkpoint`: "
        f"{setup['checkpoint']}.",
        "",
        *_table(
            ["way", "family", "batch 1 texts/s", "p50 ms", "batch 32 texts/s", "department agreement, batch 1 / 32"],
            rows,
        ),
        f"`auto` at start-up chose **{startup['engine']}** ({startup['device']}, {startup['max_batch_tokens']} tokens "
        f"per call) in {startup['choice_seconds']:.2f} s (load {startup['load_seconds']:.2f} s), against "
        f"{startup['reference']}:",
        "",
        *_table(["candidate", "texts/s", "department agreement", "kept", "note"], candidates),
        "Token budget per call (`KOMMUNROUTER_MAX_BATCH_TOKENS`), texts/s at batch 32:",
        "",
        *_table(
            ["engine", *budgets], [[name, *(_number(rates.get(b)) for b in budgets)] for name, rates in sweep.items()]
        ),
        f"Work around the model call (tokenisation, padding, softmax, ranking, keyword spans): "
        f"{around['batch_1_ms_per_text']:.2f} ms per text at batch 1, "
        f"{around['batch_32_ms_per_text']:.2f} at batch 32. "
        + (
            f"Graph sizes of the checkpoint: fp32 {graph['fp32']:.1f} MB, fp16 about {graph['fp16_estimate']:.1f} MB, "
            f"int8 {graph['int8']:.1f} MB."
            if graph
            else ""
        )
        + (f" CTranslate2 skipped: {skipped}." if skipped else ""),
        "",
    ]


def _service_section(service: dict[str, Any], results: Path) -> list[str]:
    reference = service["model_reference"]
    rows = []
    for backend, result in service["backends"].items():
        if "skipped" in result:
            rows.append([backend, "skipped: " + result["skipped"], *["-"] * 9])
            continue
        for level in result["levels"]:
            latency = level["latency_ms"]
            rows.append(
                [
                    backend,
                    str(level["concurrency"]),
                    _number(level["texts_per_s"]),
                    f"{level['ratio_to_model_batched']:.0%}",
                    _number(latency["p50"]),
                    _number(latency["p95"]),
                    _number(latency["p99"]),
                    f"{level['errors']} / {level['requests']}",
                    f"{level['audit_rows']} / {level['answered']}",
                    _number(level["mean_model_batch"]),
                    _number(level["server_cpu_ms_per_request"]),
                ]
            )
    _plot_service(service, results / "service_load.png")
    return [
        "## The service under load",
        "",
        "`kommunrouter serve` (one worker) on loopback, audit log in SQLite, then in PostgreSQL; each request a "
        "POST /v1/classify of one test text. The model's own rate in process, batch 32: "
        f"{reference['batched_texts_per_s']:.1f} texts/s, batch-1 p50 {reference['batch_1_p50_ms']:.1f} ms "
        f"({reference['source']}). The served engine: "
        + ", ".join(
            f"{backend} {result['engine']['engine']}"
            for backend, result in service["backends"].items()
            if "engine" in result
        )
        + ".",
        "",
        *_table(
            [
                "audit DB",
                "in flight",
                "texts/s",
                "of in-process",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors / requests",
                "audit rows / answered",
                "texts per model call",
                "server CPU ms/request",
            ],
            rows,
        ),
        "![service throughput and latency by concurrency](service_load.png)",
        "",
    ]


def _export_section(export: dict[str, Any]) -> list[str]:
    rows = []
    for graph, size in export["sizes_bytes"].items():
        scores = export["metrics"].get(graph, {})
        rows.append(
            [
                graph,
                _number(size / 1e6),
                _number(export["latency_ms"].get(EXPORT_LATENCY_KEYS.get(graph, graph))),
                _number(scores.get("department"), 3),
                _number(scores.get("keywords"), 3),
            ]
        )
    largest = max(export["fp32_max_abs_diff"].values())
    agreement = export["int8_department_agreement"]
    return [
        "## Export",
        "",
        f"fp32 graph against PyTorch: largest logit difference {largest:.1e}; int8 department agreement with fp32: "
        f"{'-' if agreement is None else f'{agreement:.1%}'}; transformer fusions kept: {export['optimised']}. "
        f"Dev split, {export['setup']['dev_reports']} reports.",
        "",
        *_table(["graph", "MB", "batch-1 p50 ms", "dev department macro-F1", "dev keyword F1"], rows),
    ]


def _accuracy_section(accuracy: dict[str, Any], results: Path) -> list[str]:
    columns = ("department_macro_f1", "sentiment_macro_f1", "severity_qwk", "severity_mae", "keywords_f1")
    rows = [
        ["model", split, *(_number(scores.get(c), 3) for c in columns)] for split, scores in accuracy["model"].items()
    ]
    for name, by_split in accuracy["baselines"].items():
        rows += [[name, split, *(_number(scores.get(c), 3) for c in columns)] for split, scores in by_split.items()]
    lines = [
        "## Accuracy",
        "",
        *_table(
            ["", "split", "department macro-F1", "sentiment macro-F1", "severity QWK", "severity MAE", "keyword F1"],
            rows,
        ),
    ]
    curve = accuracy.get("learning_curve")
    if curve:
        metrics = ("department_macro_f1", "sentiment_macro_f1", "severity_qwk", "keywords_f1")

        def shown(row: dict[str, Any], metric: str) -> str:
            std = row.get(f"{metric}_std")
            spread = f" ± {std:.3f}" if row.get("seeds", 1) > 1 and std is not None else ""
            return _number(row.get(metric), 3) + spread

        curve_rows = [
            [row["method"], str(row["n_examples"]), str(row.get("seeds", 1)), *(shown(row, m) for m in metrics)]
            for row in curve["table"]
        ]
        lines += [
            "### Learning curve (test split)",
            "",
            *_table(
                ["method", "training reports", "seeds", "department", "sentiment", "severity QWK", "keywords"],
                curve_rows,
            ),
        ]
        if (results / "learning_curve.png").exists():
            lines += ["![learning curve](learning_curve.png)", ""]
    return lines


def _targets_section(loaded: dict[str, dict[str, Any] | None]) -> list[str]:
    rows = []
    for name, result in loaded.items():
        for goal in (result or {}).get("targets", []):
            value = goal["value"]
            shown = "-" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))
            rows.append([name, goal["target"], shown, {True: "yes", False: "**no**", None: "-"}[goal["met"]]])
    return ["## Targets", "", *_table(["benchmark", "target", "measured", "reached"], rows)]


def write_summary(results: Path, status: dict[str, dict[str, Any]] | None = None) -> Path:
    """summary.md and its plots from whatever results exist; missing ones are named."""
    loaded = {name: _load(results, name) for name in SCRIPTS}
    lines = ["# Benchmarks", ""]
    machines = [(name, r["machine"]) for name, r in loaded.items() if r and "machine" in r]
    if machines:
        lines += [
            "Each result records where and when it was measured (the machine is shared, so absolute numbers drift; "
            "ratios were measured side by side):",
            "",
            *_table(
                ["benchmark", "measured", "CPU", "flags", "load average at the start"],
                [
                    [
                        name,
                        machine["measured_at"],
                        f"{machine['cpu']['model']} ({machine['cpu']['logical_cores']} logical cores)",
                        ", ".join(machine["cpu"]["flags"]),
                        _number(machine["load_average_1m"]),
                    ]
                    for name, machine in machines
                ],
            ),
        ]
    lines += _targets_section(loaded)
    sections = {
        "inference": lambda r: _inference_section(r, results),
        "engines": _engines_section,
        "service_load": lambda r: _service_section(r, results),
        "export_bench": _export_section,
        "accuracy": lambda r: _accuracy_section(r, results),
    }
    for name, section in sections.items():
        result = loaded[name]
        lines += (
            section(result) if result else [f"## {name}", "", f"Not measured: {RESULT_FILES[name]} is missing.", ""]
        )
    if status:
        lines += ["## This run", ""]
        lines += _table(
            ["script", "exit status", "seconds"],
            [[f"bench.{n}", str(s["returncode"]), _number(s["seconds"])] for n, s in status.items()],
        )
    path = results / "summary.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scripts to run: " + ", ".join(SCRIPTS))
    parser.add_argument("--summary-only", action="store_true", help="rewrite summary.md from the existing results")
    args = parser.parse_args(argv)
    names = [n for n in SCRIPTS if args.only is None or n in args.only.split(",")]
    status = {} if args.summary_only else run_scripts(names)
    write_summary(RESULTS, status)
    failed = [name for name, s in status.items() if s["returncode"] != 0]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (see their messages above)")


if __name__ == "__main__":
    main()
