"""The category label map: class name <-> integer id, saved next to every model as an artifact.

Training writes it once from the prepared data; export and serving load the same file, so a logit
index means the same category everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

LABEL_MAP_FORMAT = "fbmr.label_map/1"


class LabelMap:
    """An ordered, immutable list of category names; a class's id is its position."""

    def __init__(self, classes: Sequence[str]) -> None:
        classes = tuple(classes)
        if not classes:
            raise ValueError("a label map needs at least one class")
        if any(not isinstance(c, str) or not c.strip() for c in classes):
            raise ValueError(f"class names must be non-empty strings, got {classes!r}")
        duplicates = sorted({c for c in classes if classes.count(c) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique; repeated: {duplicates}")
        self._classes = classes
        self._ids = {name: i for i, name in enumerate(classes)}

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> LabelMap:
        """The map of observed labels, sorted so that the same label set gives the same ids."""
        return cls(sorted(set(labels)))

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and other._classes == self._classes

    def __hash__(self) -> int:
        return hash(self._classes)

    def __repr__(self) -> str:
        return f"LabelMap({list(self._classes)!r})"

    def encode(self, name: str) -> int:
        """The id of a class name; unknown names raise a KeyError that lists the known ones."""
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"unknown category {name!r}; known: {list(self._classes)}") from None

    def decode(self, class_id: int) -> str:
        if not 0 <= class_id < len(self._classes):
            raise IndexError(f"class id {class_id} out of range 0..{len(self._classes) - 1}")
        return self._classes[class_id]

    def rank(
        self, probabilities: Sequence[float] | NDArray[np.floating[Any]]
    ) -> list[tuple[str, float]]:
        """Every class with its probability, most probable first (ties keep id order)."""
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.shape != (len(self),):
            raise ValueError(f"expected {len(self)} probabilities, got shape {probs.shape}")
        order = np.argsort(-probs, kind="stable")
        return [(self._classes[i], float(probs[i])) for i in order]

    def to_dict(self) -> dict[str, object]:
        return {"format": LABEL_MAP_FORMAT, "classes": list(self._classes)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabelMap:
        if data.get("format") != LABEL_MAP_FORMAT:
            raise ValueError(
                f"not a label map: format {data.get('format')!r}, want {LABEL_MAP_FORMAT!r}"
            )
        classes = data.get("classes")
        if not isinstance(classes, list):
            raise ValueError("label map has no 'classes' list")
        return cls(classes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        return cls.from_dict(json.loads(Path(path).read_text()))
