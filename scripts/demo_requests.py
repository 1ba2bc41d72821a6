"""The demo's requests: one prediction per endpoint and similar listings for one demo photo.

python scripts/demo_requests.py URL PREPARED_DATASET
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq


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

    with httpx.Client(base_url=args.url, timeout=60) as client:
        calls = {
            "POST /v1/predict/image": lambda: client.post(
                "/v1/predict/image", files={"photo": ("photo.jpg", photo)}
            ),
            "POST /v1/predict/text": lambda: client.post("/v1/predict/text", json={"text": text}),
            "POST /v1/predict/combined": lambda: client.post(
                "/v1/predict/combined", files={"photo": ("photo.jpg", photo)}, data={"text": text}
            ),
        }
        for name, call in calls.items():
            body = call().raise_for_status().json()
            top3 = ", ".join(
                f"{c} {p:.2f}"
                for c, p in zip(body["classes"][:3], body["probabilities"][:3], strict=True)
            )
            print(f"{name:28s} pred={body['pred']!r}  top-3: {top3}")
        embedding = client.post(
            "/v1/embed", files={"photo": ("photo.jpg", photo)}, data={"text": text}
        )
        body = embedding.raise_for_status().json()
        print(f"{'POST /v1/embed':28s} {body['kind']} embedding, {len(body['embedding'])} floats")
        similar = client.post(
            "/v1/similar", files={"photo": ("photo.jpg", photo)}, data={"text": text, "k": "5"}
        )
        body = similar.raise_for_status().json()
        print(f"POST /v1/similar (k=5, index {body['index_version']}):")
        for item in body["listings"]:
            print(f"  {item['score']:.3f}  {item['category']:36s} {item['name']}")
        bad = client.post("/v1/predict/image", files={"photo": ("photo.jpg", b"not a photo")})
        print(f"a corrupt photo -> {bad.status_code} {json.dumps(bad.json())}")


if __name__ == "__main__":
    main()
