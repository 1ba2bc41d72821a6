"""Stage 1: gensim word2vec (skip-gram, negative sampling) on the train split's listing texts.

Writes the word vectors, the tokeniser whose vocabulary is word2vec's (most frequent first) for
fbmr.core to use at serving time (with the sentence encoder's WordPiece vocabulary beside it, when
the text model has one), and a t-SNE map of the most frequent words.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors, Word2Vec
from gensim.models.callbacks import CallbackAny2Vec
from numpy.typing import NDArray
from sklearn.manifold import TSNE
from tqdm.auto import tqdm

from fbmr.core.fileio import atomic_write_json
from fbmr.core.ngrams import NgramHashing
from fbmr.core.text import Tokenizer, tokenize
from fbmr.training import plots
from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.data.split import SPLITS
from fbmr.training.layout import SUMMARY, TOKENIZER, TSNE_PLOT, VECTORS
from fbmr.training.metrics import Report
from fbmr.training.sentence import wordpiece


class _EpochBar(CallbackAny2Vec):  # type: ignore[misc]  # gensim has no type information
    def __init__(self, epochs: int, enabled: bool) -> None:
        self.bar = tqdm(total=epochs, desc="word2vec epochs", disable=not enabled)

    def on_epoch_end(self, model: Word2Vec) -> None:
        self.bar.update(1)

    def on_train_end(self, model: Word2Vec) -> None:
        self.bar.close()


def _corpus(data: PreparedDataset, split: str) -> list[list[str]]:
    return [tokenize(data.text(row)) for _, row in data.products(split).iterrows()]


def ngram_hashing(config: TrainConfig) -> NgramHashing | None:
    """The tokeniser's n-gram settings from the training settings (None: no n-gram bag)."""
    if not config.ngram_buckets:
        return None
    return NgramHashing(
        buckets=config.ngram_buckets,
        slots=config.ngram_slots,
        word_ngrams=config.word_ngrams,
        char_min=config.char_min,
        char_max=config.char_max,
        name_ngrams=config.name_ngrams,
    )


def embedding_matrix(
    vectors: KeyedVectors, tokenizer: Tokenizer, seed: int = 0
) -> NDArray[np.float32]:
    """Rows in token-id order: zeros for padding, noise for unknown words, then the vectors of
    the tokeniser's words, centred and scaled to unit variance.

    Skip-gram vectors share a large common direction (on a small corpus they are nearly
    parallel); removing it and rescaling gives the convolutions distinct inputs to start from.
    """
    words = vectors[tokenizer.words].astype(np.float32)
    words = (words - words.mean(axis=0)) / (words.std() + 1e-6)
    matrix = np.zeros((tokenizer.vocab_size, vectors.vector_size), dtype=np.float32)
    matrix[1] = np.random.default_rng(seed).normal(0, 1.0, vectors.vector_size)
    matrix[2:] = words
    return matrix


def train_word2vec(config: TrainConfig, data: PreparedDataset, stage_dir: Path) -> Report:
    stage_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if config.w2v_corpus not in ("train", "all"):
        raise ValueError(f"w2v_corpus is train or all, not {config.w2v_corpus!r}")
    # Every split's text is unlabelled text a user has at training time; labels stay unused.
    splits = ("train",) if config.w2v_corpus == "train" else SPLITS
    sentences = [s for split in splits for s in _corpus(data, split)]
    model = Word2Vec(
        sentences=sentences,
        vector_size=config.w2v_dim,
        window=config.w2v_window,
        min_count=config.w2v_min_count,
        sg=1,  # skip-gram: better vectors for the many rare product words than CBOW
        negative=config.w2v_negative,
        hs=0,
        epochs=config.w2v_epochs,
        seed=config.seed,
        workers=1,  # one worker makes the vectors reproducible for a seed
        callbacks=[_EpochBar(config.w2v_epochs, config.progress)],
    )
    pieces = wordpiece(config.text_sentence, config.text_sentence_length)
    tokenizer = Tokenizer(model.wv.index_to_key, config.max_length, ngram_hashing(config), pieces)
    model.wv.save(str(stage_dir / VECTORS))
    tokenizer.save(stage_dir / TOKENIZER)

    words = model.wv.index_to_key[: config.tsne_words]
    if len(words) >= 5:
        points = TSNE(
            n_components=2,
            perplexity=min(30.0, len(words) - 1.0),
            init="pca",
            random_state=config.seed,
        ).fit_transform(model.wv[words])
        plots.word_map(
            points, words, stage_dir / TSNE_PLOT, f"word2vec: {len(words)} most frequent"
        )

    # With the "all" corpus the validation words were seen: then this is 1 by construction.
    val_tokens = [t for sentence in _corpus(data, "val") for t in sentence]
    in_vocab = sum(t in model.wv.key_to_index for t in val_tokens)
    summary = {
        "vocabulary": len(tokenizer.words),
        "train_tokens": sum(len(s) for s in sentences),
        "val_token_coverage": in_vocab / max(len(val_tokens), 1),
        "neighbours": {
            w: [n for n, _ in model.wv.most_similar(w, topn=5)] for w in model.wv.index_to_key[:10]
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_json(stage_dir / SUMMARY, summary)
    return summary
