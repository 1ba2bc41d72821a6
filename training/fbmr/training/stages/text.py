"""Stage 3: the text model: a bag of hashed word and character n-grams (optionally beside a CNN
over the word2vec space, its embedding initialised from word2vec), and by default three such
encoders and a pretrained sentence encoder (MiniLM, `fbmr.training.sentence`) trained side by
side as one ensemble (`TextModel`'s members).

The sentence member's frozen layers never change, so their output for every listing is computed
once, before training (`sentence_cache`), and the training and validation batches carry it
beside the token ids: each epoch runs only the layers that train."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from gensim.models import KeyedVectors
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from fbmr.core.text import Tokenizer
from fbmr.training.checkpoints import stage_fields
from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import token_dataset
from fbmr.training.engine import SPLITS, fit, predict
from fbmr.training.layout import RunLayout
from fbmr.training.meta import TextMeta
from fbmr.training.metrics import Report, report
from fbmr.training.models import VIEWS, EnsembleHead, TextEnsembleEncoder, TextModel
from fbmr.training.sentence import minilm_dir, sentence_spec
from fbmr.training.stage_settings import fit_settings
from fbmr.training.stages.word2vec import embedding_matrix


def build_text_model(meta: TextMeta, num_classes: int) -> TextModel:
    """A text model of the shape a checkpoint's `meta` describes."""
    return TextModel(
        num_classes,
        meta.embedding_dim,
        members=meta.members,
        vocab_size=meta.vocab_size,
        word_dim=meta.word_dim,
        filters=meta.filters,
        widths=meta.widths,
        dropout=meta.dropout,
        max_words=meta.max_words,
        ngram_buckets=meta.ngram_buckets,
        ngram_dim=meta.ngram_dim,
        ngram_kinds=meta.ngram_kinds,
        name_dropout=meta.name_dropout,
        ngram_rows=None if meta.ngram_rows is None else list(meta.ngram_rows),
        sentence=meta.sentence,
    )


@torch.no_grad()
def sentence_cache(
    model: TextModel,
    token_ids: torch.Tensor,
    device: torch.device,
    progress: bool = False,
    desc: str = "sentence encoder",
    batch: int = 128,
) -> torch.Tensor:
    """The output of the sentence member's frozen layers for each text's token ids (N, L):
    (N, pieces, hidden), on the CPU."""
    member, encoder = model.sentence, model.encoder
    assert member is not None and isinstance(encoder, TextEnsembleEncoder)
    member.to(device).eval()
    starts = tqdm(range(0, len(token_ids), batch), desc=desc, disable=not progress)
    parts = [
        member.lower(encoder.cut(token_ids[i : i + batch].to(device))[1]).cpu() for i in starts
    ]
    return (
        torch.cat(parts) if parts else torch.zeros(0, member.length, member.bert.shape.hidden_size)
    )


def member_views(views: str, members: int, weighed: bool = True) -> list[str]:
    """The view (`VIEWS`) each of `members` reads: the comma-separated `views` in turn. A view
    is made by the IDF weights `NgramBag.set_idf` gives, so views other than "all" need them
    (`weighed`: an n-gram bag weighted by IDF)."""
    names = [v.strip() for v in views.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VIEWS))
    if not names or unknown:
        raise ValueError(f"text views must be some of {sorted(VIEWS)}: {views!r}")
    if not weighed and set(names) != {"all"}:
        raise ValueError(f"text views other than 'all' need the n-gram bag with IDF: {views!r}")
    return [names[i % len(names)] for i in range(members)]


def start_members(
    model: TextModel,
    views: list[str],
    idf_from: torch.Tensor | None,
    words: NDArray[np.float32] | None,
) -> list[int]:
    """Give each of the model's members its starting point before training: with `idf_from`
    (the training listings' token ids), n-gram weights by inverse document frequency over them,
    0 for the kinds of n-gram outside the member's view (`views`, one per member), its table
    pruned to the weighed rows; with `words` (the word2vec matrix), its CNN's word embedding.
    Returns the members' pruned table sizes (empty without IDF weights)."""
    rows = []
    # the members split token ids alike: the n-gram ids once for all of them
    ngrams = model.encoder.split(idf_from)[1] if idf_from is not None else None
    for encoder, view in zip(model.encoders, views, strict=True):
        if encoder.bag is not None and ngrams is not None:
            encoder.bag.set_idf(ngrams, view=view)
            pruned = encoder.bag.rows
            assert pruned is not None  # set_idf keeps the weighed rows alone
            rows.append(pruned)
        if words is not None:
            with torch.no_grad():
                encoder.words.weight.copy_(torch.from_numpy(words))
    return rows


def train_text(
    config: TrainConfig, data: PreparedDataset, run_dir: Path, device: torch.device
) -> Report:
    layout = RunLayout(run_dir)
    stage_dir = layout.stage("text")
    tokenizer = Tokenizer.load(layout.tokenizer)
    vectors = KeyedVectors.load(str(layout.vectors))
    sentence = sentence_spec(
        config.text_sentence, config.text_sentence_frozen, config.text_sentence_length
    )
    # The n-gram members find their ids by cutting the WordPiece ids off the end of the array,
    # which only the sentence member reads: both must agree on how many there are.
    written = tokenizer.wordpiece.length if tokenizer.wordpiece else 0
    read = sentence.length if sentence is not None else 0
    if written != read:
        raise ValueError(
            f"the tokeniser writes {written} WordPiece ids, the text model would read {read} "
            f"(--text-sentence {config.text_sentence}): retrain the word2vec stage, which writes "
            "the tokeniser, with the same settings and --force"
        )
    meta = TextMeta(
        embedding_dim=config.embedding_dim * (config.text_members + (sentence is not None)),
        members=config.text_members,
        vocab_size=tokenizer.vocab_size,
        word_dim=vectors.vector_size,
        filters=config.text_filters,
        widths=tuple(config.text_widths),
        dropout=config.text_dropout,
        max_length=tokenizer.max_length,
        max_words=tokenizer.max_words,
        ngram_buckets=tokenizer.ngrams.buckets if tokenizer.ngrams else 0,
        ngram_dim=config.ngram_dim if tokenizer.ngrams else 0,
        ngram_kinds=tokenizer.ngrams.kinds if tokenizer.ngrams else 2,
        name_dropout=config.text_name_dropout,
        views=tuple(
            member_views(
                config.text_views,
                config.text_members,
                config.ngram_idf and bool(tokenizer.ngrams),
            )
        ),
        sentence=sentence,
    )
    classes = data.label_map.classes
    model = build_text_model(meta, len(classes))
    sets = {s: token_dataset(data, data.products(s), tokenizer) for s in SPLITS}
    words = embedding_matrix(vectors, tokenizer) if config.text_filters else None
    idf_from = sets["train"].tensors[0] if config.ngram_idf else None
    rows = start_members(model, list(meta.views), idf_from, words)
    if rows:
        meta = replace(meta, ngram_rows=tuple(rows))
    if model.sentence is not None:
        if config.text_sentence == "minilm":
            model.sentence.bert.load_pretrained(minilm_dir())
        for s in SPLITS:
            ids, labels = sets[s].tensors
            cache = sentence_cache(model, ids, device, config.progress, f"sentence {s}")
            sets[s] = TensorDataset(ids, cache, labels)
    settings = fit_settings(config, "text", pretrained=model.sentence is not None)
    fields = stage_fields("text", config, classes, meta)

    def members_own_losses(
        embedding: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, loss_fn: nn.Module
    ) -> torch.Tensor:
        # Each member fits the targets on its own; a loss on the averaged logits instead draws
        # the members together (0.8 points lower on test over three ensembles, docs/results.md).
        return sum(
            (loss_fn(own, target) for own in model.member_logits(embedding)), logits.new_zeros(())
        )

    history = fit(
        model,
        sets["train"],
        sets["val"],
        stage_dir,
        settings,
        device,
        fields,
        objective=members_own_losses if isinstance(model.head, EnsembleHead) else None,
    )
    predictions = {s: predict(model, sets[s], settings, device)[1:] for s in SPLITS}
    return report(stage_dir, "text model", history, predictions, classes, {"unit": "product"})
