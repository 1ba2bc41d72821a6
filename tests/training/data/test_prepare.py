"""`fbmr data prepare` end to end on a small hand-made seed layout with every quirk."""

import json
import shutil

import fsspec
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fbmr.core.cli import build_app
from fbmr.core.labels import LabelMap
from fbmr.training.data.prepare import PrepareError, PrepareSettings, prepare_dataset
from tests.helpers import encode, write_seed_layout

COLOURS = {
    "Appliances": (200, 30, 30),
    "Home & Garden": (30, 200, 30),
    "Other Goods": (30, 30, 200),
}
SETTINGS = PrepareSettings(image_size=48, val_ratio=0.2, test_ratio=0.2, seed=0)


def _photo(label: str, width: int = 40, height: int = 40) -> bytes:
    return encode(Image.new("RGB", (width, height), COLOURS[label]), "JPEG", quality=95)


@pytest.fixture
def seed(tmp_path):
    """10 products per label with 2 photos each, plus: a product without photo, one without a
    category, one whose only photo is corrupt, a missing file, a PNG under .jpg, a wide photo."""
    products, images, photos = [], [], {}
    for label in COLOURS:
        for i in range(10):
            pid = f"{label[:3].lower()}-{i}"
            products.append(
                {
                    "id": pid,
                    "product_name": f"{label} item {i} | in Leeds, West Yorkshire | Gumtree",
                    "category": f"{label} / Sub",
                    "product_description": f"good {label.lower()}\rthing {i}",
                    "price": f"£{i},000.00",
                    "location": "Leeds, West Yorkshire",
                }
            )
            for view in range(2):
                images.append({"id": f"{pid}-v{view}", "product_id": pid})
                photos[f"{pid}-v{view}"] = _photo(label)
    products.append({"id": "no-photo", "category": "Appliances / Sub", "price": "£1.00"})
    products.append({"id": "no-label", "category": "", "price": "£1.00"})
    images.append({"id": "no-label-v0", "product_id": "no-label"})
    photos["no-label-v0"] = _photo("Appliances")
    products.append({"id": "corrupt", "category": "Other Goods / Sub", "price": "£1.00"})
    images.append({"id": "corrupt-v0", "product_id": "corrupt"})
    photos["corrupt-v0"] = _photo("Other Goods")[:300]
    photos["app-0-v1"] = encode(Image.new("RGB", (40, 40), COLOURS["Appliances"]), "PNG")
    photos["app-1-v0"] = _photo("Appliances", width=80, height=40)
    del photos["app-2-v1"]
    return write_seed_layout(tmp_path / "seed", products, images, photos)


def test_prepare_cleans_joins_splits_and_reports(seed, tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare_dataset(str(seed), out, SETTINGS, workers=2, progress=False)

    counts = manifest["counts"]
    assert counts["products_read"] == 33
    assert counts["products_without_label"] == 1
    assert counts["products_without_photo"] == 1
    assert counts["products_without_usable_photo"] == 1  # its only photo is corrupt
    assert counts["products"] == 30 and counts["images"] == 59  # 60 photos, one file missing
    skipped = {s["image_id"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"corrupt-v0", "app-2-v1"}
    assert skipped["app-2-v1"] == "file not found"
    assert "truncated" in skipped["corrupt-v0"].lower()

    assert manifest["classes"] == sorted(COLOURS)
    assert LabelMap.load(out / "label_map.json").classes == tuple(sorted(COLOURS))
    per_class = {s: manifest["splits"][s]["per_class"] for s in ("train", "val", "test")}
    assert all(per_class["test"][c]["products"] == 2 for c in COLOURS)
    assert all(per_class["train"][c]["products"] == 6 for c in COLOURS)
    assert sum(manifest["splits"][s]["images"] for s in per_class) == 59
    assert manifest["settings"]["image_size"] == 48 and manifest["source"].endswith("seed")

    products = pd.read_parquet(out / "products.parquet")
    images = pd.read_parquet(out / "images.parquet")
    assert products["product_name"].str.contains("Gumtree").sum() == 0
    assert not products["product_description"].str.contains("\r").any()
    assert products["price"].max() == 9000.0
    # No product's photos on two sides of the split.
    assert images.groupby("product_id")["split"].nunique().max() == 1
    assert set(images["product_id"]) == set(products["product_id"])
    stored = sorted(p.name for p in (out / "images").iterdir())
    assert stored == sorted(images["file"].str.removeprefix("images/"))
    for file in images["file"]:
        with Image.open(out / file) as photo:
            assert photo.format == "JPEG" and photo.mode == "RGB" and photo.size == (48, 48)
    # The wide photo is padded with black above and below.
    with Image.open(out / "images" / "app-1-v0.jpg") as wide:
        assert max(wide.getpixel((24, 1))) < 20 and wide.getpixel((24, 24))[0] > 150
    assert not (tmp_path / "prepared.partial").exists()


def test_rerun_with_same_settings_does_nothing(seed, tmp_path):
    out = tmp_path / "prepared"
    first = prepare_dataset(str(seed), out, SETTINGS, progress=False)
    stamp = (out / "products.parquet").stat().st_mtime_ns
    assert prepare_dataset(str(seed), out, SETTINGS, progress=False) == first
    assert (out / "products.parquet").stat().st_mtime_ns == stamp


def test_other_settings_or_foreign_folder_are_refused_untouched(seed, tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset(str(seed), out, SETTINGS, progress=False)
    before = sorted(p.name for p in out.rglob("*"))
    other = PrepareSettings(image_size=32, val_ratio=0.2, test_ratio=0.2)
    with pytest.raises(PrepareError, match="other settings"):
        prepare_dataset(str(seed), out, other, progress=False)
    assert sorted(p.name for p in out.rglob("*")) == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(PrepareError, match="not a prepared dataset"):
        prepare_dataset(str(seed), foreign, SETTINGS, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_the_dataset(seed, tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset(str(seed), out, SETTINGS, progress=False)
    other = PrepareSettings(image_size=32, val_ratio=0.2, test_ratio=0.2)
    manifest = prepare_dataset(str(seed), out, other, overwrite=True, progress=False)
    assert json.loads((out / "manifest.json").read_text())["settings"]["image_size"] == 32
    assert manifest["counts"]["images_written"] == 59
    with Image.open(next((out / "images").iterdir())) as photo:
        assert photo.size == (32, 32)
    assert not (tmp_path / "prepared.old").exists()


def test_interrupted_run_resumes_keeping_written_photos(seed, tmp_path):
    out = tmp_path / "prepared"
    seen = []

    def interrupt_after_ten(outcome):
        seen.append(outcome)
        if len(seen) == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(
            str(seed), out, SETTINGS, workers=1, progress=False, on_image=interrupt_after_ten
        )
    assert not out.exists(), "an interrupted run must not publish a half dataset"
    partial = tmp_path / "prepared.partial"
    written_before = len(list((partial / "images").glob("*.jpg")))
    assert written_before >= 9

    # A different configuration must not be mixed into the interrupted run.
    with pytest.raises(PrepareError, match="interrupted run"):
        prepare_dataset(str(seed), out, PrepareSettings(image_size=32), progress=False)

    manifest = prepare_dataset(str(seed), out, SETTINGS, progress=False)
    assert manifest["counts"]["images_reused"] == written_before
    assert manifest["counts"]["images_written"] == 59 - written_before
    assert manifest["counts"]["images"] == 59 and not partial.exists()
    fresh = prepare_dataset(str(seed), tmp_path / "fresh", SETTINGS, progress=False)
    for table in ("products.parquet", "images.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / table), pd.read_parquet(tmp_path / "fresh" / table)
        )
    assert fresh["splits"] == manifest["splits"]


def test_any_fsspec_filesystem_is_a_source(seed, tmp_path):
    memory = fsspec.filesystem("memory")
    for path in seed.rglob("*"):
        if path.is_file():
            memory.pipe_file(f"/seed-copy/{path.relative_to(seed)}", path.read_bytes())
    try:
        manifest = prepare_dataset(
            "memory://seed-copy", tmp_path / "from-memory", SETTINGS, progress=False
        )
    finally:
        memory.rm("/seed-copy", recursive=True)
    assert manifest["source"] == "memory:///seed-copy"
    assert manifest["counts"]["images"] == 59


def test_cli_prepare_reports_and_refuses_clearly(seed, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-out"
    args = ["data", "prepare", str(seed), "--out", str(out), "--image-size", "48"]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "30 products, 59 photos" in result.output
    assert "corrupt-v0" in result.output and "file not found" in result.output

    result = runner.invoke(build_app(), [*args[:-1], "40"])
    assert result.exit_code == 1 and "other settings" in result.output
    shutil.rmtree(seed / "images")
    (seed / "Products.csv").unlink()
    result = runner.invoke(
        build_app(), ["data", "prepare", str(seed), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "Products.csv not found" in result.output
    assert "Traceback" not in result.output
