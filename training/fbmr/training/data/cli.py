"""`fbmr data prepare` and `fbmr data demo`.

Heavy imports (pandas, fsspec) happen inside the commands so that `fbmr --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(
    help="Prepare seed-layout data for training, or generate demo data in that layout.",
    no_args_is_help=True,
)


@app.command()
def prepare(
    src: str = typer.Argument(
        ..., help="Seed layout (Products.csv, Images.csv, images/): a folder or an fsspec URL."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the prepared dataset."),
    image_size: int = typer.Option(512, help="Side of the stored square photos, in pixels."),
    val_ratio: float = typer.Option(0.1, help="Share of each category's products for validation."),
    test_ratio: float = typer.Option(0.1, help="Share of each category's products for test."),
    seed: int = typer.Option(0, help="Seed of the train/val/test split."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Threads decoding photos."),
    overwrite: bool = typer.Option(False, help="Replace what is at --out (atomically)."),
) -> None:
    """Clean, join and split seed data into a prepared dataset with a JSON manifest."""
    from fbmr.training.data.prepare import PrepareError, PrepareSettings, prepare_dataset
    from fbmr.training.data.seed import SeedLayoutError

    try:
        settings = PrepareSettings(
            image_size=image_size, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
        )
        manifest = prepare_dataset(src, out, settings, workers=workers, overwrite=overwrite)
    except (PrepareError, SeedLayoutError, ValueError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    counts = manifest["counts"]
    typer.echo(f"prepared {out}: {counts['products']} products, {counts['images']} photos")
    for split, numbers in manifest["splits"].items():
        typer.echo(f"  {split:5s} {numbers['products']:6d} products {numbers['images']:6d} photos")
    dropped = {
        k: v
        for k, v in counts.items()
        if v and (k.startswith(("duplicate", "products_without", "images_without")))
    }
    if dropped:
        typer.echo("  removed: " + ", ".join(f"{k}={v}" for k, v in dropped.items()))
    if manifest["skipped"]:
        typer.echo(f"  skipped {len(manifest['skipped'])} unreadable photos:")
        for item in manifest["skipped"][:10]:
            typer.echo(f"    {item['image_id']}: {item['reason']}")
        if len(manifest["skipped"]) > 10:
            typer.echo(f"    ... all listed in {out / 'manifest.json'}")


@app.command()
def demo(
    out: Path = typer.Option(..., "--out", help="Folder for the demo data (must not exist)."),
    products_per_category: int = typer.Option(24, help="Listings per category (13 categories)."),
    image_size: int = typer.Option(128, help="Side of the generated photos, in pixels."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same files."),
    hard_fraction: float = typer.Option(
        0.1, help="Share of listings whose photo or text points to another category."
    ),
) -> None:
    """Generate demo listings and photos in the seed layout (no download needed)."""
    from fbmr.training.data.demo import generate_demo

    try:
        summary = generate_demo(
            out,
            products_per_category=products_per_category,
            image_size=image_size,
            seed=seed,
            hard_fraction=hard_fraction,
        )
    except (FileExistsError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"wrote {summary.products} listings and {summary.images} photos to {summary.out} "
        f"in {summary.seconds:.1f}s"
    )
