"""What the benchmarks' figures share: matplotlib without a display, and a figure finished
(title, layout) and written once. Not a benchmark itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display: the figures are files
import matplotlib.pyplot as plt  # after the backend is chosen

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plt", "save"]


def save(figure: Figure, path: Path, title: str | None = None, dpi: int = 120) -> None:
    """`figure`, under `title` if given, laid out, written to `path` (its folder made), closed."""
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
