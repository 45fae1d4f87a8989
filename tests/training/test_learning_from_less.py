"""Learning from less: description heads, zero-shot artifacts, unlabelled reports and the small-data schedule, on the
tiny model through the real training loop."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from app.artifact import Label, read_manifest
from app.inference.model import ReportModel
from app.inference.tensors import pad_batch
from tests.conftest import FIXTURES, TAXONOMY, tiny_config_overrides
from training.config import LEGACY_VALUES, TrainConfig, load_config
from training.data import load_reports, load_taxonomy
from training.descriptions import description_items, description_layouts, label_texts
from training.model import PrototypeHead, encode_texts, load_checkpoint, pad_token_id
from training.train import (
    build_model,
    load_run_data,
    plan_schedule,
    train,
)
from training.unlabelled import add_typos, masked_copy, perturb_text, read_texts, strip_diacritics


def tiny_config(tiny_base_dir: Path, output_dir: Path, *extra: str) -> TrainConfig:
    overrides = tiny_config_overrides(tiny_base_dir, output_dir)
    return load_config(None, [*overrides, "run_baselines=false", "head_init=descriptions", *extra])


def epochs_of(run_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- the taxonomy's label texts --------------------------------------------------------------------------------


def test_description_items_split_outside_parentheses() -> None:
    assert description_items("dricksvatten (läckor, tryck), avlopp; dagvatten, ") == [
        "dricksvatten (läckor, tryck)",
        "avlopp",
        "dagvatten",
    ]


def test_label_texts_are_the_name_the_description_items_and_the_terms_once() -> None:
    label = Label(id="x", name="Avfall", description="bins, waste fees", terms=["soptunnor", "Avfall", "sophämtning"])
    assert label_texts(label) == ["Avfall", "bins", "waste fees", "soptunnor", "sophämtning"]


def test_the_bundled_taxonomy_has_swedish_terms_for_every_classification_label() -> None:
    taxonomy = load_taxonomy(TAXONOMY)
    for task in ("department", "sentiment", "severity"):
        assert all(label.terms for label in taxonomy.labels(task)), task
    assert "potthål" in next(label for label in taxonomy.department if label.id == "gata_park").terms


# --- description heads ------------------------------------------------------------------------------------------


def test_description_head_reproduces_the_description_ranking_before_any_step(
    tiny_base_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_base_dir, tmp_path / "run")
    data = load_run_data(config)
    from tokenizers import Tokenizer

    from training.model import build_encoder

    tokenizer = Tokenizer.from_file(str(tiny_base_dir / "tokenizer.json"))
    model = build_model(config, data, build_encoder(tiny_base_dir, random_init=False), tokenizer).eval()
    texts = [r.text for r in data.dev_reports]

    # The ranking computed directly from the encoder's sentence embeddings, in numpy: label texts as passages,
    # both sides centred, cosine times the scale, log-sum-exp over each label's texts.
    def embed_texts(texts: list[str]) -> np.ndarray:
        """E5's sentence embedding with the transformers model as saved: mean-pooled, normalised."""
        from transformers import BertModel

        encoder = BertModel.from_pretrained(tiny_base_dir, add_pooling_layer=False).eval()
        tokens = Tokenizer.from_file(str(tiny_base_dir / "tokenizer.json"))
        tokens.enable_truncation(config.max_length)
        batch = tokens.encode_batch(texts)
        ids = torch.tensor([e.ids for e in batch])
        mask = torch.tensor([e.attention_mask for e in batch])
        with torch.no_grad():
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    reports = [r.text for r in data.train_reports]  # the centre: the training texts (fewer than the sample size)
    centre = embed_texts(["query: " + t for t in reports]).mean(axis=0)
    queries = embed_texts(["query: " + t for t in texts])
    layouts, label_texts_by_task = description_layouts(data.taxonomy, data.labels, config.description_scale)

    def normalise(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    encoded = encode_texts(tokenizer, texts, config.max_length, text_prefix=config.text_prefix)
    ids, mask = (torch.from_numpy(a) for a in pad_batch(encoded.input_ids, pad_token_id(tokenizer)))
    with torch.no_grad():
        outputs = model(ids, mask)
    for task, layout in layouts.items():
        items = embed_texts(["passage: " + t for t in label_texts_by_task[task]])
        items = normalise(items - items.mean(axis=0))
        scores = config.description_scale * normalise(queries - centre) @ items.T
        owners = np.asarray(layout.owners)
        expected = np.stack(
            [np.log(np.exp(scores[:, owners == label]).sum(axis=1)) for label in range(owners.max() + 1)], axis=1
        )
        logits = outputs[f"{task}_logits"].numpy()
        assert list(logits.argmax(axis=1)) == list(expected.argmax(axis=1)), task
        np.testing.assert_allclose(logits, expected, atol=2e-3 * config.description_scale)


def test_a_description_head_reloads_from_its_checkpoint(tiny_base_dir: Path, tmp_path: Path) -> None:
    run_dir = train(tiny_config(tiny_base_dir, tmp_path / "run", "epochs=1")).run_dir
    model, _, labels = load_checkpoint(run_dir)
    head = model.heads["department"]
    assert isinstance(head, PrototypeHead)
    assert len(head.layout.owners) > len(labels.department)  # several texts per label
    saved = torch.load(run_dir / "checkpoint" / "model.pt", weights_only=True)
    assert torch.equal(head.prototypes, saved["heads.department.prototypes"])
    assert torch.equal(head.centre, saved["heads.department.centre"])
    assert head.centre.abs().sum() > 0


def test_random_heads_stay_linear(tiny_base_dir: Path, tmp_path: Path) -> None:
    run_dir = train(tiny_config(tiny_base_dir, tmp_path / "run", "epochs=1", "head_init=random")).run_dir
    model, _, _ = load_checkpoint(run_dir)
    assert isinstance(model.heads["department"], torch.nn.Linear)


# --- zero-shot ----------------------------------------------------------------------------------------------------


def test_a_zero_shot_run_trains_no_step(tiny_base_dir: Path, tmp_path: Path) -> None:
    run_dir = train(tiny_config(tiny_base_dir, tmp_path / "run", "train_fraction=0")).run_dir
    assert epochs_of(run_dir) == []
    evaluation = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())
    assert evaluation["labelled_reports"] == 0
    assert set(evaluation["temperatures"]) >= {"department", "sentiment", "severity"}
    # the untrained keyword head says O (tag 0) everywhere
    model, tokenizer, _ = load_checkpoint(run_dir)
    encoded = encode_texts(tokenizer, ["Gatlampan på Storgatan 12 är trasig"], 64, text_prefix="query: ")
    with torch.no_grad():
        tags = model(torch.tensor(encoded.input_ids), torch.ones(1, len(encoded.input_ids[0]), dtype=torch.long))
    assert (tags["keywords_logits"].argmax(dim=-1) == 0).all()


def test_a_zero_shot_artifact_serves(tiny_zero_shot_artifact: Path) -> None:
    zero_shot_artifact = tiny_zero_shot_artifact
    manifest = read_manifest(zero_shot_artifact)
    assert manifest.provenance["zero_shot"] is True
    assert manifest.provenance["labelled_reports"] == 0
    assert manifest.tokenizer.text_prefix == "query: "
    card = (zero_shot_artifact / "MODEL_CARD.md").read_text()
    assert "**Zero-shot**: trained on no labelled report" in card and "finds no spans" in card
    model = ReportModel.load(zero_shot_artifact, execution_provider="cpu", intra_op_threads=1, max_batch_tokens=4096)
    predictions = model.predict(["Det luktar avlopp i källaren", "Soptunnan har inte tömts"])
    assert all(len(p.department) == 10 and p.keywords == () for p in predictions)


def test_zero_shot_needs_description_heads() -> None:
    from app.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="zero-shot"):
        TrainConfig(train_fraction=0, head_init="random")


def test_no_training_file_at_all_is_zero_shot(tiny_base_dir: Path, tmp_path: Path) -> None:
    run_dir = train(tiny_config(tiny_base_dir, tmp_path / "run", "train_file=none")).run_dir
    assert json.loads((run_dir / "evaluation" / "evaluation.json").read_text())["labelled_reports"] == 0


# --- unlabelled reports -------------------------------------------------------------------------------------------


def test_strip_diacritics() -> None:
    assert strip_diacritics("Gatlampan på Östra vägen, café") == "Gatlampan pa Ostra vagen, cafe"


def test_typos_change_words_but_keep_their_first_and_last_letters() -> None:
    text = "Soptunnan har inte tömts på tre veckor"
    rng = random.Random(1)
    changed = add_typos(text, 1.0, rng)
    before, after = text.split(), changed.split()
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        if len(old) >= 3:
            assert new != old or len(set(old[1:-1])) <= 1  # a swap of equal letters changes nothing
            assert (new[0], new[-1]) == (old[0], old[-1])
            assert abs(len(new) - len(old)) <= 1
        else:
            assert new == old
    assert add_typos(text, 0.0, rng) == text


def test_masking_replaces_only_ordinary_tokens() -> None:
    ids, special = [0, 10, 11, 12, 13, 2], [1, 0, 0, 0, 0, 1]
    assert masked_copy(ids, special, 0.999999, 99, random.Random(0)) == [0, 99, 99, 99, 99, 2]
    assert masked_copy(ids, special, 0.0, 99, random.Random(0)) == ids
    shares = [masked_copy([5] * 1000, [0] * 1000, 0.15, 99, random.Random(seed)).count(99) for seed in range(5)]
    assert all(100 < share < 200 for share in shares)


def test_perturb_text_strips_only_when_asked() -> None:
    assert "å" in perturb_text("Hål på vägen", 0.0, random.Random(0), strip=False)
    assert perturb_text("Hål på vägen", 0.0, random.Random(0), strip=True) == "Hal pa vagen"


def test_unlabelled_files_are_jsonl_or_plain_lines(tmp_path: Path) -> None:
    jsonl = tmp_path / "u.jsonl"
    jsonl.write_text('{"id": "a", "text": "Hål i vägen", "department": null}\n\n{"text": "Tack!"}\n')
    plain = tmp_path / "u.txt"
    plain.write_text("Hål i vägen\n  Tack!  \n")
    assert read_texts(jsonl) == read_texts(plain) == ["Hål i vägen", "Tack!"]


def test_a_data_import_without_label_columns_is_an_unlabelled_file(tmp_path: Path) -> None:
    from training.importer import import_table

    table = tmp_path / "arende.csv"
    table.write_text("Ärende;Beskrivning\n1;Gatlampan är trasig\n2;Soptunnan har inte tömts\n", encoding="utf-8")
    out = tmp_path / "unlabelled.jsonl"
    import_table(
        table,
        taxonomy=load_taxonomy(TAXONOMY),
        text_column="Beskrivning",
        department_column=None,
        id_column="Ärende",
        out=out,
        rejects=tmp_path / "rejects.jsonl",
    )
    assert read_texts(out) == ["Gatlampan är trasig", "Soptunnan har inte tömts"]


def test_unlabelled_reports_change_training(tiny_base_dir: Path, tmp_path: Path) -> None:
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("\n".join(r.text for r in load_reports(FIXTURES / "dev.jsonl", load_taxonomy(TAXONOMY))))
    common = ("epochs=1", "train_fraction=0.5", "consistency_weight=1.0", "pseudo_label_threshold=0.5")
    without = train(tiny_config(tiny_base_dir, tmp_path / "without", *common)).run_dir
    with_file = train(tiny_config(tiny_base_dir, tmp_path / "with", *common, f"unlabelled_file={unlabelled}")).run_dir
    from_train = train(tiny_config(tiny_base_dir, tmp_path / "rest", *common, "unlabelled_from_train=true")).run_dir
    again = train(tiny_config(tiny_base_dir, tmp_path / "again", *common)).run_dir

    def weights(run_dir: Path) -> torch.Tensor:
        return torch.load(run_dir / "checkpoint" / "model.pt", weights_only=True)[
            "encoder.encoder.layer.1.output.dense.weight"
        ]

    assert torch.equal(weights(without), weights(again))  # same seed, same run
    assert not torch.equal(weights(without), weights(with_file))
    assert not torch.equal(weights(without), weights(from_train))
    assert epochs_of(without)[0]["train_loss"] != epochs_of(with_file)[0]["train_loss"]
    evaluation = json.loads((with_file / "evaluation" / "evaluation.json").read_text())
    assert evaluation["unlabelled_reports"] == 20
    rest = json.loads((from_train / "evaluation" / "evaluation.json").read_text())
    assert rest["labelled_reports"] + rest["unlabelled_reports"] == 40


def test_consistency_weight_zero_ignores_unlabelled_reports(tiny_base_dir: Path, tmp_path: Path) -> None:
    common = ("epochs=1", "train_fraction=0.5", "consistency_weight=0")
    plain = train(tiny_config(tiny_base_dir, tmp_path / "plain", *common)).run_dir
    rest = train(tiny_config(tiny_base_dir, tmp_path / "rest", *common, "unlabelled_from_train=true")).run_dir
    # the rest of train still centres the description heads, so compare the training losses' shape, not weights
    assert epochs_of(plain)[0]["train_loss"] > 0 and epochs_of(rest)[0]["train_loss"] > 0


# --- the small-data schedule --------------------------------------------------------------------------------------


def test_the_schedule_adapts_to_the_number_of_labelled_reports() -> None:
    config = TrainConfig(epochs=15, min_steps=100, batch_size=16)
    full = plan_schedule(810, config)
    assert (full.batch_size, full.steps_per_epoch, full.total_steps) == (16, 51, 765)  # as without adapting
    ten = plan_schedule(10, config)
    assert (ten.batch_size, ten.steps_per_epoch, ten.total_steps) == (4, 3, 100)
    forty = plan_schedule(40, config)
    assert (forty.batch_size, forty.steps_per_epoch) == (10, 4)
    fixed = plan_schedule(10, TrainConfig(epochs=15, min_steps=100, batch_size=16, adaptive_schedule=False))
    assert (fixed.batch_size, fixed.steps_per_epoch, fixed.total_steps) == (16, 1, 100)
    capped = plan_schedule(810, TrainConfig(epochs=15, batch_size=16, max_steps=120))
    assert (capped.total_steps, capped.epochs) == (120, 3)


def test_small_runs_are_judged_in_steps_not_epochs(tiny_base_dir: Path, tmp_path: Path) -> None:
    # 40 reports in batches of 8: 5 steps an epoch, 30 steps; judged at the first epoch end 10 steps after the last
    # judgement (the start counts as one), and after the last epoch
    run_dir = train(
        tiny_config(tiny_base_dir, tmp_path / "run", "epochs=6", "eval_every_steps=10", "warmup_ratio=0.1")
    ).run_dir
    assert [e["epoch"] for e in epochs_of(run_dir)] == [2, 4, 6]


def test_patience_counts_judgements_and_waits_for_min_steps(tiny_base_dir: Path, tmp_path: Path) -> None:
    frozen = ("learning_rate=1e-12", "head_learning_rate=1e-12", "warmup_ratio=0", "early_stopping_patience=1")
    early = train(tiny_config(tiny_base_dir, tmp_path / "a", "epochs=10", "eval_every_steps=5", *frozen)).run_dir
    assert [e["epoch"] for e in epochs_of(early)] == [1, 2]
    late = train(
        tiny_config(tiny_base_dir, tmp_path / "b", "epochs=10", "eval_every_steps=5", "min_steps=20", *frozen)
    ).run_dir
    assert [e["epoch"] for e in epochs_of(late)] == [1, 2, 3, 4]


def test_max_steps_stops_inside_an_epoch(tiny_base_dir: Path, tmp_path: Path) -> None:
    run_dir = train(tiny_config(tiny_base_dir, tmp_path / "run", "epochs=5", "max_steps=7")).run_dir
    assert [e["epoch"] for e in epochs_of(run_dir)] == [1, 2]


def test_configurations_written_before_these_options_keep_their_behaviour() -> None:
    old = {k: v for k, v in TrainConfig().to_json().items() if k not in LEGACY_VALUES}
    config = TrainConfig.from_json(old)
    assert (config.text_prefix, config.head_init, config.adaptive_schedule) == ("", "random", False)


def test_a_trained_artifact_records_what_it_learned_from(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    assert manifest.provenance["zero_shot"] is False
    assert manifest.provenance["labelled_reports"] == 40
    assert manifest.provenance["heads"]["department"] == "linear"  # the shared tiny model (conftest) has linear heads
    assert manifest.tokenizer.text_prefix == "query: "
    assert "potthål" in manifest.tasks["department"].labels[0].terms
    card = (tiny_artifact / "MODEL_CARD.md").read_text()
    assert "Zero-shot" not in card and "Trained on 40 labelled reports." in card
