"""Reference point for the text model: TF-IDF + logistic regression on the same prepared split.

    uv run python bench/text_baseline.py runs/real/prepared

Prints top-1 on the validation and test products (the unit the text model is scored on) and
writes them to `text_baseline.json` beside the dataset's manifest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from fbmr.core.text import tokenize
from fbmr.training.data.prepared import PreparedDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="prepared dataset (fbmr data prepare)")
    parser.add_argument("--c", type=float, default=10.0, help="inverse regularisation strength")
    args = parser.parse_args()

    data = PreparedDataset(args.prepared)
    texts = {s: data.products(s).apply(data.text, axis=1) for s in ("train", "val", "test")}
    labels = {s: data.products(s)["label_id"] for s in texts}
    # The project's own tokeniser, so the baseline sees the same words as the text CNN.
    vectorizer = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                                 ngram_range=(1, 2), min_df=2, sublinear_tf=True)  # fmt: skip
    features = vectorizer.fit_transform(texts["train"])
    model = LogisticRegression(C=args.c, max_iter=2000).fit(features, labels["train"])
    result = {
        split: float(model.score(vectorizer.transform(texts[split]), labels[split]))
        for split in ("val", "test")
    }
    print(json.dumps({"tfidf_logreg_top1": result}))
    (args.prepared / "text_baseline.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
