"""What `fbmr score` reads: the seed layout (with the real export's quirks) and tables."""

from __future__ import annotations

import fsspec
import pandas as pd
import pytest

from fbmr.client.batch.inputs import InputError, fingerprint, read_input
from tests.helpers import write_seed_layout


def test_seed_layout_one_row_per_listing_with_its_photos(tmp_path):
    products = [
        {"id": "p1", "product_name": "Oak chair | in Leeds, Yorkshire | Gumtree",
         "product_description": "Solid\roak", "category": "Home & Garden / Chairs"},
        {"id": "p2", "product_name": "Bike", "product_description": "Red, fast",
         "category": "Sports"},
        {"id": "p1", "product_name": "again", "product_description": "duplicate id"},
        {"id": "p3", "product_name": "No photo", "product_description": "text only"},
    ]  # fmt: skip
    images = [
        {"id": "i1", "product_id": "p1"},
        {"id": "i2", "product_id": "p1"},
        {"id": "i3", "product_id": "p2"},
        {"id": "i4", "product_id": "gone"},
    ]
    root = write_seed_layout(tmp_path / "seed", products, images, {})
    rows = read_input(root)
    assert list(rows["id"]) == ["p1", "p2", "p3"]
    assert list(rows["text"]) == [
        "Oak chair | Solid oak",
        "Bike | Red, fast",
        "No photo | text only",
    ]
    assert list(rows["photo"]) == [
        [str(root / "images" / "i1.jpg"), str(root / "images" / "i2.jpg")],
        str(root / "images" / "i3.jpg"),
        None,
    ]


def test_demo_seed_layout_reads_like_training(demo_seed):
    from fbmr.training.data.seed import SeedSource

    rows = read_input(demo_seed)
    raw = SeedSource.open(str(demo_seed)).read_csv("Products.csv", ("id",))
    assert list(rows["id"]) == list(dict.fromkeys(raw["id"].str.strip()))
    assert not rows["text"].str.contains("\r").any()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_tables_with_photos_relative_to_the_table(tmp_path, suffix):
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "text": ["red bike", None, "oak chair", ""],
            "photo": ["photos/a.jpg", "/elsewhere/b.jpg", None, "memory://bucket/d.jpg"],
        }
    )
    path = tmp_path / f"table{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
    }[suffix]()
    rows = read_input(path)
    assert list(rows["id"]) == ["a", "b", "c", "d"]
    assert rows["photo"].tolist() == [
        str(tmp_path / "photos" / "a.jpg"),
        "/elsewhere/b.jpg",
        None,
        "memory://bucket/d.jpg",
    ]
    assert rows.loc[0, "text"] == "red bike" and rows.loc[2, "text"] == "oak chair"
    # CSV cannot tell a missing text from an empty one; both are "no text" to the scorer
    assert rows.loc[1, "text"] in (None, "") and rows.loc[3, "text"] in (None, "")


def test_a_table_may_hold_the_listing_fields_instead_of_text(tmp_path):
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "name": ["Sun loungers | in Skegness, Lincolnshire | Gumtree", None, None],
            "description": ["Great  condition", "Oak chair", None],
        }
    )
    frame.to_parquet(tmp_path / "fields.parquet")
    rows = read_input(tmp_path / "fields.parquet")
    assert rows["text"].tolist() == ["Sun loungers | Great condition", "Oak chair", None]
    frame.assign(text="x").to_parquet(tmp_path / "both.parquet")
    with pytest.raises(InputError, match="not both"):
        read_input(tmp_path / "both.parquet")


def test_a_table_on_an_fsspec_filesystem(tmp_path):
    fs = fsspec.filesystem("memory")
    with fs.open("memory://catalogue/rows.jsonl", "w") as f:
        f.write('{"id": 1, "photo": "p/1.jpg"}\n{"id": 2, "text": "lamp"}\n')
    rows = read_input("memory://catalogue/rows.jsonl")
    assert list(rows["id"]) == ["1", "2"]
    assert rows.loc[0, "photo"] == "memory://catalogue/p/1.jpg"


def test_a_listings_several_photos_as_a_list_or_joined_in_a_csv(tmp_path):
    (tmp_path / "rows.csv").write_text("id,photo\na,x.jpg | /abs/y.jpg\nb,z.jpg\n")
    rows = read_input(tmp_path / "rows.csv")
    assert rows["photo"].tolist() == [
        [str(tmp_path / "x.jpg"), "/abs/y.jpg"],
        str(tmp_path / "z.jpg"),
    ]
    pd.DataFrame({"id": ["a"], "photo": [["x.jpg", "y.jpg"]]}).to_parquet(tmp_path / "rows.pq")
    assert read_input(tmp_path / "rows.pq")["photo"].tolist() == [
        [str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg")]
    ]
    # the photos are part of what a resumed run checks it is resuming
    (tmp_path / "one.csv").write_text("id,photo\na,x.jpg\nb,z.jpg\n")
    assert fingerprint(rows) != fingerprint(read_input(tmp_path / "one.csv"))


def test_tables_that_cannot_be_scored_are_refused(tmp_path):
    (tmp_path / "dup.csv").write_text("id,text\na,x\na,y\n")
    with pytest.raises(InputError, match="unique"):
        read_input(tmp_path / "dup.csv")
    (tmp_path / "cols.csv").write_text("name,text\na,x\n")
    with pytest.raises(InputError, match="`id` column"):
        read_input(tmp_path / "cols.csv")
    (tmp_path / "rows.xlsx").write_text("")
    with pytest.raises(InputError, match="extension"):
        read_input(tmp_path / "rows.xlsx")


def test_fingerprint_changes_with_the_rows(tmp_path):
    (tmp_path / "a.csv").write_text("id,text\na,x\nb,y\n")
    (tmp_path / "b.csv").write_text("id,text\na,x\nb,z\n")
    first = fingerprint(read_input(tmp_path / "a.csv"))
    assert first == fingerprint(read_input(tmp_path / "a.csv"))
    assert first != fingerprint(read_input(tmp_path / "b.csv"))


def test_a_rows_photos_plan_as_one_listing_and_too_many_are_its_error():
    from fbmr.client.batch.rows import plan_row
    from fbmr.core.contract import MAX_PHOTOS, ErrorCode, Kind

    row = plan_row(["a.jpg", "b.jpg"], "a bike", "auto")
    assert (row.kind, row.photos, row.error) == (Kind.combined, ["a.jpg", "b.jpg"], None)
    assert plan_row("a.jpg", None, "auto").photos == ["a.jpg"]
    assert plan_row([], "a bike", "auto").kind is Kind.text
    many = plan_row([f"{i}.jpg" for i in range(MAX_PHOTOS + 1)], "a bike", "auto")
    assert many.error is not None and many.error.startswith(f"{ErrorCode.too_many_photos}:")
