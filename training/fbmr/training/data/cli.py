"""`fbmr data prepare` and `fbmr data demo`.

Their options mirror PrepareSettings' and DemoSettings' fields (`fbmr.core.cli.OptionGroup`), so
the defaults live with the settings. Heavy imports (pandas, fsspec) happen inside the commands so
that `fbmr --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from fbmr.core.cli import OptionGroup, ProgressOption, fail, with_options
from fbmr.core.datasets import PREPARED_MANIFEST, SEED_IMAGES, SEED_PRODUCTS
from fbmr.training.data.settings import DemoSettings, PrepareSettings

app = typer.Typer(
    help="Prepare seed-layout data for training, or generate demo data in that layout.",
    no_args_is_help=True,
)

PREPARE = OptionGroup(PrepareSettings, {
    "image_size": "Side of the stored square photos, in pixels.",
    "val_ratio": "Share of each category's products for validation.",
    "test_ratio": "Share of each category's products for test.",
    "seed": "Seed of the train/val/test split.",
})  # fmt: skip
DEMO = OptionGroup(DemoSettings, {
    "products_per_category": "Listings per category (13 categories).",
    "image_size": "Side of the generated photos, in pixels.",
    "seed": "Seed; the same seed gives the same files.",
    "hard_fraction": "Share of listings whose photo or text points to another category.",
}, names={"products_per_category": "per_category"})  # fmt: skip
SKIPPED_SHOWN = 10  # unreadable photos listed on screen; the manifest lists them all


@app.command()
@with_options(PREPARE)
def prepare(
    src: str = typer.Argument(
        ...,
        help=f"Seed layout ({SEED_PRODUCTS}, {SEED_IMAGES}, images/): a folder or an fsspec URL.",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the prepared dataset."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Threads decoding photos."),
    overwrite: bool = typer.Option(False, help="Replace what is at --out (atomically)."),
    progress: ProgressOption = True,
    **options: Any,
) -> None:
    """Clean, join and split seed data into a prepared dataset with a JSON manifest."""
    from fbmr.training.data.prepare import PrepareError, prepare_dataset
    from fbmr.training.data.seed import SeedLayoutError

    try:
        settings = PrepareSettings(**PREPARE.values(options))
        manifest = prepare_dataset(
            src, out, settings, workers=workers, overwrite=overwrite, progress=progress
        )
    except (PrepareError, SeedLayoutError, ValueError, FileNotFoundError) as err:
        fail(f"error: {err}")
    counts = manifest["counts"]
    typer.echo(f"prepared {out}: {counts['products']} products, {counts['images']} photos")
    for split, numbers in manifest["splits"].items():
        typer.echo(f"  {split:5s} {numbers['products']:6d} products {numbers['images']:6d} photos")
    removed = ("duplicate", "products_without", "images_without")
    dropped = {k: v for k, v in counts.items() if v and k.startswith(removed)}
    if dropped:
        typer.echo("  removed: " + ", ".join(f"{k}={v}" for k, v in dropped.items()))
    skipped = manifest["skipped"]
    if skipped:
        typer.echo(f"  skipped {len(skipped)} unreadable photos:")
        for item in skipped[:SKIPPED_SHOWN]:
            typer.echo(f"    {item['image_id']}: {item['reason']}")
        if len(skipped) > SKIPPED_SHOWN:
            typer.echo(f"    ... all listed in {out / PREPARED_MANIFEST}")


@app.command()
@with_options(DEMO)
def demo(
    out: Path = typer.Option(..., "--out", help="Folder for the demo data (new or empty)."),
    progress: ProgressOption = True,
    **options: Any,
) -> None:
    """Generate demo listings and photos in the seed layout (no download needed)."""
    from fbmr.training.data.demo import generate_demo

    try:
        summary = generate_demo(out, **DEMO.values(options), progress=progress)
    except (FileExistsError, ValueError) as err:
        fail(f"error: {err}")
    typer.echo(
        f"wrote {summary.products} listings and {summary.images} photos to {summary.out} "
        f"in {summary.seconds:.1f}s"
    )
