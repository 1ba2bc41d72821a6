"""Reference points for the text model: TF-IDF linear models on the same prepared split.

    uv run python bench/text_baseline.py runs/real/prepared

Three baselines, each fitted on the train split's products and scored on the validation and test
products (the unit the text model is scored on):

- word: word 1-2-gram TF-IDF (the project's tokeniser) with logistic regression;
- word+char, logistic regression: word 1-2-grams plus character 2-5-grams within word boundaries
  (`char_wb`), the usual strong baseline for short, noisy listings;
- word+char, linear SVM: the same features with a linear support vector machine.

Prints top-1, top-3 (where the model gives scores) and macro-F1 per split and writes them, with
the best baseline on validation (the bar the text model has to clear), to `text_baseline.json`
beside the dataset's manifest.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.svm import LinearSVC

from fbmr.core.text import tokenize
from fbmr.training.data.prepared import PreparedDataset

SPLITS = ("train", "val", "test")


def _word_vectorizer() -> TfidfVectorizer:
    # The project's own tokeniser, so the baseline sees the same words as the text model.
    return TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                           ngram_range=(1, 2), min_df=2, sublinear_tf=True)  # fmt: skip


def _char_vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                           lowercase=True, strip_accents="unicode")  # fmt: skip


def _scores(scores: NDArray[Any], labels: NDArray[Any], num_classes: int) -> dict[str, Any]:
    top3 = np.argsort(-scores, axis=1)[:, :3]
    predicted = top3[:, 0]
    return {
        "top1": float((predicted == labels).mean()),
        "top3": float((top3 == labels[:, None]).any(axis=1).mean()),
        "macro_f1": float(
            f1_score(labels, predicted, average="macro", labels=range(num_classes), zero_division=0)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="prepared dataset (fbmr data prepare)")
    parser.add_argument(
        "--c", type=float, default=10.0, help="logistic regression: inverse regularisation"
    )
    parser.add_argument(
        "--svm-c", type=float, default=0.5, help="linear SVM: inverse regularisation"
    )
    args = parser.parse_args()

    data = PreparedDataset(args.prepared)
    num_classes = len(data.label_map.classes)
    texts = {s: data.products(s).apply(data.text, axis=1).tolist() for s in SPLITS}
    labels = {s: data.products(s)["label_id"].to_numpy() for s in SPLITS}

    word = _word_vectorizer().fit(texts["train"])
    char = _char_vectorizer().fit(texts["train"])
    features = {
        "word": {s: word.transform(texts[s]) for s in SPLITS},
        "word+char": {
            s: hstack([word.transform(texts[s]), char.transform(texts[s])]).tocsr() for s in SPLITS
        },
    }
    candidates: dict[str, tuple[str, Callable[[], Any]]] = {
        "tfidf_word_logreg": ("word", lambda: LogisticRegression(C=args.c, max_iter=3000)),
        "tfidf_word_char_logreg": (
            "word+char",
            lambda: LogisticRegression(C=args.c, max_iter=3000),
        ),
        "tfidf_word_char_svm": ("word+char", lambda: LinearSVC(C=args.svm_c)),
    }
    result: dict[str, dict[str, Any]] = {}
    for name, (kind, make) in candidates.items():
        started = time.monotonic()
        model = make().fit(features[kind]["train"], labels["train"])
        result[name] = {
            s: _scores(model.decision_function(features[kind][s]), labels[s], num_classes)
            for s in ("val", "test")
        }
        result[name]["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps({name: result[name]}))
    best = max(result, key=lambda n: result[n]["val"]["top1"])
    summary = {"baselines": result, "best_on_val": best}
    print(json.dumps({"best_on_val": best, **result[best]}))
    (args.prepared / "text_baseline.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
