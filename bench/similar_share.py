"""How often similar listings share the query's category: each test-split listing (never in the
index; its first photo and its text by default) is sent to a running facade's POST /v1/similar,
and the share of the top-k results in the query's category is reported, overall and per
category. `--kind image` sends the photos alone; `--photos all` every photo of the listing (the
facade pools them), as training's photo-only figure queries.

    uv run python bench/similar_share.py --url http://127.0.0.1:8080 --data runs/real/prepared
    uv run python bench/similar_share.py ... --kind image --photos all
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
    parser.add_argument(
        "--kind",
        choices=("combined", "image"),
        default="combined",
        help="combined: the photos and the text; image: the photos alone",
    )
    parser.add_argument("--photos", choices=("first", "all"), default="first",
                        help="the listing's first photo, or all of them")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/bench/similar_share.json"))
    args = parser.parse_args()

    data = PreparedDataset(args.data)
    images = data.images("test")
    if args.photos == "first":
        images = images.drop_duplicates("product_id")
    photos = images.groupby("product_id")["image_id"].apply(list)
    queries = [
        (
            tuple(data.image_path(image_id).read_bytes() for image_id in photos[p["product_id"]]),
            data.text(p) if args.kind == "combined" else None,
            p["label"],
        )
        for _, p in data.products("test").iterrows()
        if p["product_id"] in photos.index
    ]

    with Client(args.url, timeout_s=120) as client:

        def ask(query: tuple[tuple[bytes, ...], str | None, str]) -> tuple[str, list[str]]:
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
        "kind": args.kind,
        "photos": args.photos,
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
