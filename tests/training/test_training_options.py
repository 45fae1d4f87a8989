"""Every transfer-learning option, exercised on the tiny model through the real training loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from app.errors import ConfigurationError
from tests.conftest import tiny_config_overrides
from training.config import TrainConfig, load_config
from training.model import MultiTaskModel
from training.train import (
    learning_rate_factor,
    parameter_groups,
    resolve_precision,
    set_trainable_layers,
    stratified_subset,
    train,
)


def tiny_model(layers: int = 3) -> MultiTaskModel:
    config = BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32
    )
    counts = {"department": 10, "sentiment": 3, "severity": 4, "keywords": 5}
    return MultiTaskModel(BertModel(config, add_pooling_layer=False), counts)


def run(tmp_path: Path, tiny_base_dir: Path, *extra: str) -> tuple[Path, list[dict]]:  # type: ignore[type-arg]
    config = load_config(None, [*tiny_config_overrides(tiny_base_dir, tmp_path / "run"), "run_baselines=false", *extra])
    result = train(config)
    epochs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return result.run_dir, epochs


def test_discriminative_learning_rates_decay_downwards() -> None:
    config = TrainConfig(learning_rate=1e-3, head_learning_rate=1e-2, layer_lr_decay=0.5)
    groups = parameter_groups(tiny_model(layers=3), config)
    # heads, layer 0, layer 1, layer 2, embeddings
    assert [g["lr"] for g in groups] == pytest.approx([1e-2, 2.5e-4, 5e-4, 1e-3, 1.25e-4])


def test_gradual_unfreezing_opens_one_more_top_layer_per_epoch() -> None:
    model = tiny_model(layers=3)
    config = TrainConfig(gradual_unfreezing=True, freeze_word_embeddings=False)

    def trainable_layers() -> list[bool]:
        return [all(p.requires_grad for p in layer.parameters()) for layer in model.encoder_layers]

    assert set_trainable_layers(model, config, 0) == 1 and trainable_layers() == [False, False, True]
    assert not model.encoder.embeddings.word_embeddings.weight.requires_grad
    assert set_trainable_layers(model, config, 1) == 2 and trainable_layers() == [False, True, True]
    assert set_trainable_layers(model, config, 2) == 3 and trainable_layers() == [True, True, True]
    assert model.encoder.embeddings.word_embeddings.weight.requires_grad


def test_feature_extraction_freezes_the_whole_encoder() -> None:
    model = tiny_model()
    set_trainable_layers(model, TrainConfig(strategy="feature_extraction"), 0)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())


def test_warmup_then_linear_and_cosine_decay() -> None:
    linear = TrainConfig(warmup_ratio=0.1, schedule="linear")
    assert [round(learning_rate_factor(s, 100, linear), 3) for s in (0, 4, 9, 10, 55, 100)] == [
        0.1,
        0.5,
        1.0,
        1.0,
        0.5,
        0.0,
    ]
    cosine = TrainConfig(warmup_ratio=0.0, schedule="cosine")
    assert learning_rate_factor(50, 100, cosine) == pytest.approx(0.5)


def test_config_validation_and_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="layer_lr_decay must be in"):
        TrainConfig(layer_lr_decay=1.5)
    with pytest.raises(ConfigurationError, match="keyword_tag_weight must be positive"):
        TrainConfig(keyword_tag_weight=0)
    with pytest.raises(ConfigurationError, match="gradual_unfreezing needs strategy=finetune"):
        TrainConfig(gradual_unfreezing=True, strategy="feature_extraction")
    with pytest.raises(ConfigurationError, match="unknown configuration field 'learning_rat'"):
        load_config(None, ["learning_rat=1"])
    with pytest.raises(ConfigurationError, match="strategy must be one of"):
        load_config(None, ["strategy=everything"])
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = 3\nstrategy = "feature_extraction"\n')
    config = load_config(toml, ["epochs=5", 'task_weights={"keywords": 0.5}'])
    assert (config.epochs, config.strategy, config.task_weights["keywords"], config.task_weights["department"]) == (
        5,
        "feature_extraction",
        0.5,
        1.0,
    )


def test_stratified_subset_keeps_every_department(tiny_base_dir: Path) -> None:
    from tests.conftest import FIXTURES, TAXONOMY
    from training.data import load_reports, load_taxonomy

    reports = load_reports(FIXTURES / "train.jsonl", load_taxonomy(TAXONOMY))
    subset = stratified_subset(reports, 0.3, seed=1)
    assert {r.department for r in subset} == {r.department for r in reports}
    assert len(subset) < len(reports)
    assert subset == stratified_subset(reports, 0.3, seed=1)


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_the_cpu_has_amx(
    monkeypatch: pytest.MonkeyPatch, amx: bool, expected: str
) -> None:
    monkeypatch.setattr("training.train.cpu_has_amx", lambda: amx)
    assert resolve_precision(TrainConfig(device="cpu", precision="auto")).precision == expected
    assert resolve_precision(TrainConfig(device="cpu", precision="fp32")).precision == "fp32"
    assert resolve_precision(TrainConfig(device="cpu", precision="bf16")).precision == "bf16"


def test_a_run_records_the_precision_auto_chose(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_base_dir: Path
) -> None:
    monkeypatch.setattr("training.train.cpu_has_amx", lambda: False)
    run_dir, _ = run(tmp_path, tiny_base_dir, "precision=auto", "epochs=1")
    assert json.loads((run_dir / "config.json").read_text())["precision"] == "fp32"


def test_feature_extraction_run_leaves_the_encoder_unchanged(tmp_path: Path, tiny_base_dir: Path) -> None:
    run_dir, _ = run(tmp_path, tiny_base_dir, "strategy=feature_extraction", "epochs=2")
    trained = torch.load(run_dir / "checkpoint" / "model.pt", weights_only=True)
    original = BertModel.from_pretrained(tiny_base_dir, add_pooling_layer=False).state_dict()
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(trained[f"encoder.{name}"], original[name])


def test_gradual_unfreezing_run_records_trainable_layers(tmp_path: Path, tiny_base_dir: Path) -> None:
    _, epochs = run(tmp_path, tiny_base_dir, "gradual_unfreezing=true", "epochs=3")
    assert [e["trainable_layers"] for e in epochs] == [1, 2, 2]


def test_early_stopping_stops_when_dev_does_not_improve(tmp_path: Path, tiny_base_dir: Path) -> None:
    # a zero learning rate cannot improve the dev score after the first epoch
    _, epochs = run(
        tmp_path,
        tiny_base_dir,
        "epochs=10",
        "early_stopping_patience=2",
        "learning_rate=1e-12",
        "head_learning_rate=1e-12",
        "warmup_ratio=0",
    )
    assert len(epochs) == 3


def test_same_seed_same_run(tmp_path: Path, tiny_base_dir: Path) -> None:
    _, first = run(tmp_path / "a", tiny_base_dir, "epochs=1")
    _, second = run(tmp_path / "b", tiny_base_dir, "epochs=1")
    assert first[0]["train_loss"] == pytest.approx(second[0]["train_loss"], abs=1e-6)


def test_masked_lm_adaptation_changes_what_fine_tuning_alone_leaves(tmp_path: Path, tiny_base_dir: Path) -> None:
    # The word embeddings stay frozen while fine-tuning (freeze_word_embeddings), so the same run with and
    # without the masked-LM step differs in them only through that step.
    name = "encoder.embeddings.word_embeddings.weight"
    plain_dir, _ = run(tmp_path / "plain", tiny_base_dir, "epochs=1")
    mlm_dir, epochs = run(tmp_path / "mlm", tiny_base_dir, "mlm_epochs=1", "epochs=1")
    plain = torch.load(plain_dir / "checkpoint" / "model.pt", weights_only=True)[name]
    adapted = torch.load(mlm_dir / "checkpoint" / "model.pt", weights_only=True)[name]
    original = BertModel.from_pretrained(tiny_base_dir, add_pooling_layer=False).state_dict()[
        name.removeprefix("encoder.")
    ]
    assert torch.equal(plain, original)
    assert not torch.equal(adapted, plain)
    assert len(epochs) == 1


def test_random_init_trains_from_random_weights(tmp_path: Path, tiny_base_dir: Path) -> None:
    random_dir, _ = run(tmp_path / "random", tiny_base_dir, "random_init=true", "epochs=1")
    trained = torch.load(random_dir / "checkpoint" / "model.pt", weights_only=True)
    name = "embeddings.word_embeddings.weight"
    original = BertModel.from_pretrained(tiny_base_dir, add_pooling_layer=False).state_dict()[name]
    assert not torch.equal(trained[f"encoder.{name}"], original)


def test_training_accepts_reports_with_unknown_labels(tmp_path: Path, tiny_base_dir: Path) -> None:
    from tests.conftest import FIXTURES

    rows = [json.loads(line) for line in (FIXTURES / "train.jsonl").read_text().splitlines()]
    for row in rows:
        row.update(sentiment=None, severity=None, keywords=None)
    only_departments = tmp_path / "departments.jsonl"
    only_departments.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _, epochs = run(tmp_path, tiny_base_dir, f"train_file={only_departments}", "epochs=1")
    assert epochs[0]["train_loss"] > 0


def test_no_judging_before_warmup_and_min_steps(tmp_path: Path, tiny_base_dir: Path) -> None:
    # 40 reports in batches of 8: 5 steps an epoch; min_steps=12 means epochs 1 and 2 (10 steps) are not judged,
    # so early stopping cannot stop a model that has not started learning
    _, epochs = run(
        tmp_path, tiny_base_dir, "epochs=3", "min_steps=12", "early_stopping_patience=1", "adaptive_schedule=false"
    )
    assert [e["epoch"] for e in epochs] == [3]
