"""Session fixtures: a tiny random BERT with the real tokenizer pipeline, trained for a few steps by the real
training code and exported by the real export code. Nothing touches a hub or the working tree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent
TAXONOMY = REPO / "data" / "taxonomy.json"

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def fixture_texts() -> list[str]:
    return [
        json.loads(line)["text"]
        for name in ("train.jsonl", "dev.jsonl")
        for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    ]


def build_tiny_base(out_dir: Path, texts: list[str]) -> Path:
    """A base-encoder directory like the real one: config + safetensors + tokenizer.json, but with a vocabulary of
    about 200 pieces (every character of the texts plus their most frequent words) and 2 layers of width 32."""
    from collections import Counter

    import torch
    from transformers import BertConfig, BertModel

    from training.tokenizer import build_unigram_tokenizer

    words = Counter(word.lower() for text in texts for word in text.split() if word.isalpha())
    characters = sorted({char for text in texts for char in text if not char.isspace()})
    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁", -3.0)] + [(char, -8.0) for char in characters] + [("▁" + char, -8.5) for char in characters]
    pieces += [("▁" + word, -4.0) for word, _ in words.most_common(80)]
    pieces.append(("<mask>", 0.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    build_unigram_tokenizer(pieces).save(str(out_dir / "tokenizer.json"))
    config = BertConfig(
        vocab_size=len(pieces),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
        pad_token_id=1,
    )
    with torch.random.fork_rng():  # the same tiny base in every session: tests that train on it are repeatable
        torch.manual_seed(0)
        BertModel(config, add_pooling_layer=False).save_pretrained(out_dir)
    return out_dir


def tiny_config_overrides(base_dir: Path, output_dir: Path) -> list[str]:
    return [
        f"base_model={base_dir}",
        "trim_vocab=false",
        f"train_file={FIXTURES / 'train.jsonl'}",
        f"dev_file={FIXTURES / 'dev.jsonl'}",
        f"test_file={FIXTURES / 'dev.jsonl'}",
        f"taxonomy_file={TAXONOMY}",
        f"output_dir={output_dir}",
        "max_length=64",
        "epochs=3",
        "batch_size=8",
        "learning_rate=3e-3",
        "head_learning_rate=1e-2",
        "precision=fp32",
        "early_stopping_patience=0",
        "eval_every_steps=1",  # tiny epochs of 5 steps: judge every one, as the tests count epochs
        # The shared tiny model has linear heads, as the shipped model does; description heads (scale 50 on a model
        # that learned nothing) make int8 and bf16 ties flip at random. Their own tests set head_init=descriptions.
        "head_init=random",
    ]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Base-encoder builds of the tests go to a temporary cache, never to the user's."""
    os.environ["KOMMUNROUTER_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny_base"), fixture_texts())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_base_dir: Path) -> Path:
    """A training run directory of the tiny model (a few steps of the real training loop)."""
    from training.config import load_config
    from training.train import train

    output_dir = tmp_path_factory.mktemp("tiny_run")
    return train(load_config(None, tiny_config_overrides(tiny_base_dir, output_dir))).run_dir


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """The tiny run exported to an fp32 artifact (model.onnx + tokenizer.json + manifest.json)."""
    from training.export import export_run

    out = tmp_path_factory.mktemp("tiny_artifact")
    export_run(tiny_run, out, quantize="none", model_version="tiny-test")
    return out


@pytest.fixture(scope="session")
def tiny_zero_shot_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_base_dir: Path) -> Path:
    """The tiny model trained on no labelled report (train_fraction=0: description heads only), exported."""
    from training.config import load_config
    from training.export import export_run
    from training.train import train

    overrides = [
        *tiny_config_overrides(tiny_base_dir, tmp_path_factory.mktemp("zero_shot_run")),
        "train_fraction=0",
        "head_init=descriptions",
    ]
    run_dir = train(load_config(None, [*overrides, "run_baselines=false"])).run_dir
    out = tmp_path_factory.mktemp("zero_shot_artifact")
    export_run(run_dir, out, quantize="none", model_version="tiny-zero-shot")
    return out
