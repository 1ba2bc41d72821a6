"""What a right answer of the facade looks like, for the load tests: pure functions, kept apart
from bench/locustfile.py so that they can be tested without importing Locust (which patches the
standard library with gevent on import). Each returns why an answer is wrong, or None.
"""

from __future__ import annotations

from typing import Any


def check_prediction(status: int, body: Any, classes: frozenset[str] | None) -> str | None:
    """Why a prediction answer is wrong, or None when it is right."""
    if status != 200:
        return f"HTTP {status}"
    if not isinstance(body, dict):
        return "not a JSON object"
    pred, ranked = body.get("pred"), body.get("classes")
    if not isinstance(ranked, list) or not ranked:
        return "no classes"
    if pred not in ranked:
        return f"pred {pred!r} not among classes"
    if classes is not None and set(ranked) != classes:
        return f"classes differ from the label map's: {sorted(set(ranked) ^ classes)[:3]}"
    if pred != ranked[0]:
        return f"pred {pred!r} is not the first class {ranked[0]!r}"
    return None


def check_similar(status: int, body: Any, k: int) -> str | None:
    """Why a similar-listings answer is wrong, or None when it is right."""
    if status != 200:
        return f"HTTP {status}"
    listings = body.get("listings") if isinstance(body, dict) else None
    if not isinstance(listings, list) or not listings:
        return "no listings"
    if len(listings) > k:
        return f"{len(listings)} listings for k={k}"
    if not all(isinstance(x, dict) and "id" in x and "category" in x for x in listings):
        return "a listing without id or category"
    return None
