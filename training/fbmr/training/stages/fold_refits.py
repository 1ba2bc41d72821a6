"""The text and image models refit for each fold of the training listings
(`fbmr.training.stages.crossfit` says why and how), each by its stage's own recipe on the other
folds, and asked about its own: `text_out_of_fold` and `image_out_of_fold` give every training
listing's (and photo's) logits from models that never saw it, as a `Fitted`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from gensim.models import KeyedVectors
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from fbmr.training.checkpoints import stage_fields
from fbmr.training.config import ImageMode, TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import PhotoDataset, token_dataset
from fbmr.training.engine import fit, predict, seed_everything
from fbmr.training.layout import RunLayout
from fbmr.training.models import EnsembleHead, ImageModel, TextModel
from fbmr.training.optim import mark_pretrained
from fbmr.training.sentence import minilm_dir
from fbmr.training.stage_settings import fit_settings
from fbmr.training.stages.image import image_objective
from fbmr.training.stages.image_cache import CachedFeatures, OverCache
from fbmr.training.stages.text import build_text_model, sentence_cache, start_members
from fbmr.training.stages.word2vec import embedding_matrix
from fbmr.training.trained import TrainedModels
from fbmr.training.trunks import RANDOM_INIT

log = logging.getLogger(__name__)


@dataclass
class Fitted:
    """One input model's out-of-fold answers, filled fold by fold (see `OutOfFold`)."""

    logits: NDArray[np.float32]
    model: NDArray[np.int64]
    seen: list[list[str]]

    @classmethod
    def empty(cls, rows: int, classes: int) -> Fitted:
        return cls(
            np.zeros((rows, classes), dtype=np.float32), np.full(rows, -1, dtype=np.int64), []
        )

    def add(
        self,
        fold: int,
        trained_on: NDArray[np.str_],
        held: NDArray[np.int64],
        answers: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]],
    ) -> None:
        """Fold `fold`'s model, trained on the products `trained_on`, answered rows `held`."""
        self.logits[held] = answers[1]
        self.model[held] = fold
        self.seen.append(sorted(set(trained_on.tolist())))


def _epochs(layout: RunLayout, stage: str, configured: int) -> int:
    """As many epochs as the stage's best checkpoint took (its metrics' best epoch, from 0)."""
    path = layout.metrics(stage)
    best = json.loads(path.read_text()).get("best_epoch") if path.is_file() else None
    return configured if best is None else min(configured, int(best) + 1)


def _members_own_losses(model: TextModel) -> object:
    """The text stage's objective: each ensemble member fits the targets on its own."""

    def objective(
        embedding: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, loss_fn: nn.Module
    ) -> torch.Tensor:
        return sum(
            (loss_fn(own, target) for own in model.member_logits(embedding)), logits.new_zeros(())
        )

    return objective if isinstance(model.head, EnsembleHead) else None


def text_out_of_fold(
    config: TrainConfig,
    data: PreparedDataset,
    trained: TrainedModels,
    fold: NDArray[np.int64],
    device: torch.device,
    scratch: Path,
) -> Fitted:
    """Each training product's text logits from a text model trained on the other folds."""
    meta = trained.text_meta
    classes = trained.classes
    sentence = meta.sentence
    if sentence is not None:  # every layer frozen in a fold: see the module's docstring
        sentence = replace(sentence, frozen=sentence.shape.num_hidden_layers)
    fold_meta = replace(meta, sentence=sentence, ngram_rows=None)
    sets = {s: token_dataset(data, data.products(s), trained.tokenizer) for s in ("train", "val")}
    words = None
    if meta.filters:
        vectors = KeyedVectors.load(str(trained.layout.vectors))
        words = embedding_matrix(vectors, trained.tokenizer)

    def fresh() -> TextModel:
        seed_everything(config.seed)
        model = build_text_model(fold_meta, len(classes))
        full = trained.text.sentence
        if model.sentence is not None and full is not None:
            if config.text_sentence == "minilm":
                model.sentence.bert.load_pretrained(minilm_dir())
            # the layers the served model kept frozen are the ones it was given: take them
            bert, served = model.sentence.bert, full.bert
            bert.embeddings.load_state_dict(served.embeddings.state_dict())
            for layer in range(full.frozen):
                bert.encoder.layer[layer].load_state_dict(served.encoder.layer[layer].state_dict())
        return model

    template = fresh()
    if template.sentence is not None:
        for s in sets:
            ids, labels = sets[s].tensors
            cache = sentence_cache(template, ids, device, config.progress, f"sentence {s} (folds)")
            sets[s] = TensorDataset(ids, cache, labels)
    settings = fit_settings(
        config,
        "text",
        pretrained=template.sentence is not None,
        epochs=_epochs(trained.layout, "text", config.text_epochs),
    )
    train = sets["train"]
    owners = data.products("train")["product_id"].astype(str).to_numpy()
    fitted = Fitted.empty(len(fold), len(classes))
    for f in range(int(fold.max()) + 1):
        fit_rows, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        model = fresh()
        if template.sentence is not None:
            assert model.sentence is not None
            model.sentence.load_state_dict(template.sentence.state_dict())
        idf_from = train.tensors[0][fit_rows] if config.ngram_idf else None
        start_members(model, list(meta.views), idf_from, words)
        fields = stage_fields("text", config, classes, fold_meta)
        fit(
            model,
            Subset(train, fit_rows.tolist()),
            sets["val"],
            scratch / f"text-{f}",
            settings,
            device,
            fields,
            objective=_members_own_losses(model),  # type: ignore[arg-type]
        )
        fitted.add(
            f,
            owners[fit_rows],
            held,
            predict(model, Subset(train, held.tolist()), settings, device),
        )
    return fitted


def image_out_of_fold(
    config: TrainConfig,
    data: PreparedDataset,
    trained: TrainedModels,
    photo_fold: NDArray[np.int64],
    device: torch.device,
    scratch: Path,
) -> Fitted:
    """Each training photo's image logits from an image model trained on the other folds."""
    meta = trained.image_meta
    classes = trained.classes
    first = meta.trainable_from
    settings = fit_settings(
        config,
        "image",
        pretrained=meta.weights_source != RANDOM_INIT,
        epochs=_epochs(trained.layout, "image", config.image_epochs),
    )
    images = data.images("train")
    cache = trained.layout.image_features("train")
    cached = trained.image_cached and cache.is_file()
    plain: Dataset[tuple[torch.Tensor, torch.Tensor]]  # the training photos, not augmented
    train: Dataset[tuple[torch.Tensor, torch.Tensor]]
    val: Dataset[tuple[torch.Tensor, torch.Tensor]]
    if cached:
        stored = {
            s: torch.load(trained.layout.image_features(s), map_location="cpu", weights_only=True)
            for s in ("train", "val")
        }
        plain = CachedFeatures(stored["train"]["features"], stored["train"]["labels"], False)
        train = CachedFeatures(stored["train"]["features"], stored["train"]["labels"], True)
        val = CachedFeatures(stored["val"]["features"], stored["val"]["labels"], False)
    else:
        spec = meta.image_spec
        plain = PhotoDataset(data, images, spec, augment=False)
        train = PhotoDataset(data, images, spec, augment=meta.mode == ImageMode.finetune)
        val = PhotoDataset(data, data.images("val"), spec, augment=False)
    owners = images["product_id"].astype(str).to_numpy()
    fitted = Fitted.empty(len(images), len(classes))
    for f in range(int(photo_fold.max()) + 1):
        fit_rows, held = np.flatnonzero(photo_fold != f), np.flatnonzero(photo_fold == f)
        # the image stage's start: the same trunk weights and seed, its frozen stages exactly
        # the served model's (a random trunk's batch-norm statistics were measured on photos)
        seed_everything(config.seed)
        model = ImageModel(meta.backbone, len(classes), meta.embedding_dim, config.image_weights)
        model.encoder.freeze_until(first)
        mark_pretrained(model.encoder.trunk, model.weights_source != RANDOM_INIT)
        cut = model.encoder.cut(first)
        model.encoder.trunk[:cut].load_state_dict(trained.image.encoder.trunk[:cut].state_dict())
        model.to(device)
        trainable: nn.Module = OverCache(model, first) if cached else model
        fields = stage_fields("image", config, classes, meta)
        fit(
            trainable,
            Subset(train, fit_rows.tolist()),
            val,
            scratch / f"image-{f}",
            settings,
            device,
            fields,
            saved=model,
            objective=image_objective(config),
        )
        answers = predict(trainable, Subset(plain, held.tolist()), settings, device)
        fitted.add(f, owners[fit_rows], held, answers)
    return fitted
