"""What `fbmr data prepare` and `fbmr data demo` are asked for, with the defaults and limits.

Apart from the modules that do the work (pandas, numpy, Pillow) so that the CLI declares its
options from these fields without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrepareSettings:
    """Everything besides the source that decides the prepared dataset's content."""

    image_size: int = 512
    val_ratio: float = 0.1
    test_ratio: float = 0.1
    seed: int = 0
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be within 32..4096, got {self.image_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class DemoSettings:
    """What decides the demo files: the same settings give byte-identical files."""

    products_per_category: int = 24
    image_size: int = 128
    seed: int = 0
    hard_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.products_per_category < 3:
            raise ValueError(
                f"products_per_category must be at least 3 (got {self.products_per_category}): "
                "every quirk and both halves of a split need listings"
            )
        if not 32 <= self.image_size <= 1024:
            raise ValueError(
                f"image_size must be between 32 and 1024 pixels (got {self.image_size})"
            )
        if not 0 <= self.hard_fraction <= 0.5:
            raise ValueError(f"hard_fraction must be between 0 and 0.5 (got {self.hard_fraction})")
