"""How often similar listings share the query's category: each test-split listing (photo + text,
never in the index) is sent to a running facade's POST /v1/similar, and the share of the top-k
results in the query's category is reported, overall and per category.

    uv run python bench/similar_share.py --url http://127.0.0.1:8080 --data runs/real/prepared
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from fbmr.client import Client
from fbmr.training.data.prepared import PreparedDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the facade's base URL")
    parser.add_argument(
        "--data", type=Path, required=True, help="prepared dataset (queries: test split)"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/similar_share.json"))
    args = parser.parse_args()

    data = PreparedDataset(args.data)
    photos = data.images("test").drop_duplicates("product_id").set_index("product_id")
    queries = [
        (
            data.image_path(photos.loc[p["product_id"], "image_id"]).read_bytes(),
            data.text(p),
            p["label"],
        )
        for _, p in data.products("test").iterrows()
        if p["product_id"] in photos.index
    ]

    with Client(args.url, timeout_s=120) as client:

        def ask(query: tuple[bytes, str, str]) -> tuple[str, list[str]]:
            photo, text, label = query
            similar = client.similar(photo=photo, text=text, k=args.k)
            return label, [item.category for item in similar.listings]

        with ThreadPoolExecutor(4) as pool:
            answers = list(
                tqdm(pool.map(ask, queries), total=len(queries), desc="similar", unit="query")
            )

    per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for label, categories in answers:
        per_class[label][0] += sum(c == label for c in categories)
        per_class[label][1] += len(categories)
    same = sum(s for s, _ in per_class.values())
    total = sum(n for _, n in per_class.values())
    result = {
        "queries": len(answers),
        "k": args.k,
        "same_category_share": same / total,
        "top1_same_category": sum(c[:1] == [label] for label, c in answers) / len(answers),
        "per_category": {label: s / n for label, (s, n) in sorted(per_class.items())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
