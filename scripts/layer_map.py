"""The reader's map of the serving layers, drawn from the code: which folder does what, which
imports which (read with `ast`, every import counted), and the path of one request through them.

    python scripts/layer_map.py            print the imports between the layers
    python scripts/layer_map.py --write    redraw docs/img/serving-layers.png and the table of
                                           imports in docs/architecture.md (between markers)

tests/deploy/test_docs.py fails when the table in the docs differs from the code's imports, so
the picture, drawn from the same edges, is redrawn whenever a layer starts or stops importing
another.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING = ROOT / "serving" / "fbmr" / "serving"
PICTURE = ROOT / "docs" / "img" / "serving-layers.png"
DOC = ROOT / "docs" / "architecture.md"
MARKERS = re.compile(r"<!-- layer-map:start -->.*?<!-- layer-map:end -->", re.DOTALL)

# each box: where it is drawn (centre x, y) and what it holds
BOXES = {
    "cli": ((0.12, 0.90), "cli.py\nfbmr serve, index, model"),
    "http": ((0.50, 0.90), "http/\napp, middleware, auth, inputs,\nroutes, schemas, errors"),
    "service": (
        (0.50, 0.64),
        "service/\nanswers, similar, listings,\nstate, admission; own errors",
    ),
    "triton": ((0.27, 0.36), "triton/\ninference, rollout,\nlocal server, supervisor"),
    "index": ((0.73, 0.36), "index/\nFAISS and Milvus engines,\nversions, update log, compact"),
    "shared": ((0.88, 0.64), "settings, metrics,\nrequest_context"),
    "client": ((0.88, 0.12), "fbmr.client\n(the batched scorer)"),
    "core": ((0.40, 0.10), "fbmr.core\nlabels, preprocessing, tokeniser"),
}
# the path of `POST /v1/similar` with a photo, through the boxes
REQUEST = ["http", "service", "triton", "service", "index", "service", "http"]


def layer(module: str) -> str | None:
    """The box a module of fbmr (or fbmr.serving) belongs to; None outside the map."""
    parts = module.split(".")
    if parts[:2] in (["fbmr", "core"], ["fbmr", "client"]):
        return parts[1]
    if parts[:2] != ["fbmr", "serving"] or len(parts) < 3:
        return None
    if parts[2] in ("http", "service", "triton", "index", "cli"):
        return parts[2]
    if parts[2] in ("settings", "metrics", "request_context"):
        return "shared"
    return None


def _module(path: Path) -> str:
    parts = list(path.relative_to(SERVING.parent.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The fbmr modules and packages `path` imports (relative imports resolved)."""
    module, names = _module(path), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                package = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                base = ".".join([*package, base] if base else package)
            names.add(base)
    return names


def edges() -> Counter[tuple[str, str]]:
    """(from box, to box): how many modules of the first import the second."""
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted(SERVING.rglob("*.py")):
        source = layer(_module(path))
        if source is None:
            continue
        targets = {layer(name) for name in _imports(path)} - {None, source}
        found.update((source, target) for target in targets if target is not None)
    return found


def table() -> str:
    rows = ["| layer | imports (modules that do) |", "| --- | --- |"]
    by_source: dict[str, list[str]] = {}
    for (source, target), count in sorted(edges().items()):
        by_source.setdefault(source, []).append(f"{target} ({count})")
    rows += [f"| {source} | {', '.join(targets)} |" for source, targets in by_source.items()]
    return "\n".join(rows)


def draw(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 7.5))
    axes.set_axis_off()
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    style = {"boxstyle": "round,pad=0.6", "facecolor": "#eef3fb", "edgecolor": "#34558b"}
    for (x, y), text in BOXES.values():
        axes.text(x, y, text, ha="center", va="center", fontsize=10, bbox=style, zorder=3)
    # the commands start whichever layer they need: their arrows would cross the whole map
    for (source, target), count in sorted(edges().items()):
        if source == "cli":
            continue
        (x0, y0), (x1, y1) = BOXES[source][0], BOXES[target][0]
        axes.annotate(
            "", xy=(x1, y1), xytext=(x0, y0), zorder=1,
            arrowprops={"arrowstyle": "-|>", "color": "#aab3c2", "shrinkA": 34, "shrinkB": 34,
                        "lw": 0.6 + 0.2 * count},
        )  # fmt: skip
    bend = 0.22
    for step, (source, target) in enumerate(itertools.pairwise(REQUEST), 1):
        (x0, y0), (x1, y1) = BOXES[source][0], BOXES[target][0]
        axes.annotate(
            "", xy=(x1, y1), xytext=(x0, y0), zorder=2,
            arrowprops={"arrowstyle": "-|>", "color": "#c0392b", "shrinkA": 30, "shrinkB": 30,
                        "connectionstyle": f"arc3,rad={bend}", "lw": 1.6},
        )  # fmt: skip
        # the middle of the arc: half the control point's offset from the chord's middle
        dx, dy = x1 - x0, y1 - y0
        mx, my = (x0 + x1) / 2 + bend / 2 * dy * 1.4, (y0 + y1) / 2 - bend / 2 * dx / 1.4
        axes.text(mx, my, str(step), color="#c0392b", fontsize=12, fontweight="bold",
                  ha="center", va="center", zorder=4)  # fmt: skip
    axes.set_title(
        "fbmr.serving: grey, which layer imports which (thicker: more modules; cli.py starts any)\n"
        "red, POST /v1/similar: 1 route to service, 2-3 Triton's answer, 4-5 the search, 6 schema",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def replaced(text: str) -> str:
    return MARKERS.sub(f"<!-- layer-map:start -->\n{table()}\n<!-- layer-map:end -->", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="redraw the picture, update the doc")
    if parser.parse_args().write:
        draw(PICTURE)
        DOC.write_text(replaced(DOC.read_text()))
    else:
        print(table())


if __name__ == "__main__":
    main()
