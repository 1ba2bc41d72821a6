"""The demo's requests: one prediction per endpoint, similar listings for one demo photo (with
and without a filter), and the listing posted to the live index then sold, through the Python
client (`fbmr.client`).

python scripts/demo_requests.py URL PREPARED_DATASET
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq

from fbmr.client import Client, InvalidInput, Listing, Prediction, SimilarFilter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the facade, e.g. http://127.0.0.1:8080")
    parser.add_argument("prepared", type=Path, help="prepared demo dataset (queries: test split)")
    args = parser.parse_args()

    products = [
        p
        for p in pq.read_table(args.prepared / "products.parquet").to_pylist()
        if p["split"] == "test"
    ]
    images = pq.read_table(args.prepared / "images.parquet").to_pylist()
    product = next(p for p in products if any(i["product_id"] == p["product_id"] for i in images))
    photo_file = next(i["file"] for i in images if i["product_id"] == product["product_id"])
    photo = (args.prepared / photo_file).read_bytes()
    text = f"{product['product_name']}. {product['product_description']}"
    print(f"query: {product['product_name']!r} (category {product['label']!r}), photo {photo_file}")

    with Client(args.url) as client:
        predictions: dict[str, Prediction] = {
            "POST /v1/predict/image": client.predict_image(photo),
            "POST /v1/predict/text": client.predict_text(text),
            "POST /v1/predict/combined": client.predict_combined(photo, text),
        }
        for name, prediction in predictions.items():
            top3 = ", ".join(f"{c} {p:.2f}" for c, p in prediction.top(3))
            print(f"{name:28s} pred={prediction.pred!r}  top-3: {top3}")
        embedding = client.embed(photo=photo, text=text)
        print(f"{'POST /v1/embed':28s} {embedding.kind} embedding, {len(embedding.vector)} floats")
        similar = client.similar(photo=photo, text=text, k=5)
        print(f"POST /v1/similar (k=5, index {similar.index_version}): similarity, rank score")
        for item in similar.listings:
            print(f"  {item.score:.3f} {item.rank_score:6.3f}  {item.category:36s} {item.name}")
        cheaper = client.similar(photo=photo, text=text, k=3, where=SimilarFilter(price_max=20))
        print(f"POST /v1/similar (k=3, price_max=20): {[i.price for i in cheaper.listings]}")
        listing_id = f"demo-{product['product_id']}"
        stored = client.put_listing(
            Listing(listing_id, product["product_name"], product["product_description"], photo)
        )
        found = client.similar(photo=photo, text=text, k=1).ids
        print(f"PUT /v1/listings/{listing_id} -> {stored.category!r}; nearest now: {found}")
        client.delete_listing(listing_id)
        found = client.similar(photo=photo, text=text, k=1).ids
        print(f"DELETE /v1/listings/{listing_id} (sold) -> nearest now: {found}")
        try:
            client.predict_image(b"not a photo")
        except InvalidInput as err:
            print(f"a corrupt photo -> {err.status} {json.dumps({'error': err.message})}")


if __name__ == "__main__":
    main()
