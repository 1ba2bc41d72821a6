"""The live catalogue from the client: put and delete listings (one, or a batch where a bad one
is recorded and the rest go on), and filtered similar-listing queries, sync and async alike; and
`fbmr listings put|delete`, in bulk from a table."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import shutil
from urllib.parse import parse_qs

import httpx
import pytest
from typer.testing import CliRunner

from fbmr.client import (
    AsyncClient,
    Client,
    InvalidInput,
    Listing,
    ListingStored,
    SimilarFilter,
)
from fbmr.client.batch.inputs import InputError
from fbmr.client.batch.listings import read_listings
from fbmr.client.errors import NotFound
from fbmr.client.listings_cli import app
from fbmr.core.contract import ErrorCode
from tests.helpers import free_ports, running_facade, split_listings


def test_both_clients_send_listing_updates_and_filters_alike():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(200, json={"id": "x", "index_version": "v0001"})
        if request.method == "PUT":
            stored = {"id": "shop:1", "category": "c", "replaced": False, "index_version": "v0001"}
            return httpx.Response(200, json={**stored, "model_version": 1})
        return httpx.Response(200, json={"kind": "text", "index_version": "v1", "listings": []})

    listing = Listing("shop:1", "Oak chair | in Leeds | Gumtree", "Seats 6", b"\x89PNG", price=12.5)
    where = SimilarFilter(category="Home", price_max=50, exclude_ids=("a", "b"))
    with Client("http://facade", transport=httpx.MockTransport(answer)) as client:
        assert client.put_listing(listing).id == "shop:1"
        assert client.delete_listing("x") == "v0001"
        client.similar(text="a chair", k=4, where=where)

    async def run() -> None:
        async with AsyncClient("http://facade", transport=httpx.MockTransport(answer)) as client:
            await client.put_listing(listing)
            await client.delete_listing("x")
            await client.similar(text="a chair", k=4, where=where)

    asyncio.run(run())
    assert len(seen) == 6
    for sync, async_ in zip(seen[:3], seen[3:], strict=True):
        assert (sync.method, str(sync.url)) == (async_.method, str(async_.url))
    put, delete, similar = seen[:3]
    assert (put.method, put.url.raw_path) == ("PUT", b"/v1/listings/shop%3A1")
    assert b'name="price"\r\n\r\n12.5' in put.read() and b'name="photo"' in put.read()
    assert (delete.method, delete.url.path) == ("DELETE", "/v1/listings/x")
    form = parse_qs(similar.read().decode())
    assert form["exclude_id"] == ["a", "b"] and form["price_max"] == ["50"]
    assert form["category"] == ["Home"] and "price_min" not in form


def test_ids_the_facade_would_refuse_are_refused_before_sending():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        stored = {"id": "ok", "category": "c", "replaced": False, "index_version": "v0001"}
        return httpx.Response(200, json={**stored, "model_version": 1})

    with Client("http://facade", transport=httpx.MockTransport(answer)) as client:
        for bad in ("shop/123", "a\nb", "x'] or id not in ['", "..", "é", ""):
            with pytest.raises(InvalidInput, match="listing id") as refused:
                client.delete_listing(bad)
            assert refused.value.code == ErrorCode.listing_id_invalid
        results = client.put_listings([Listing("shop/1", "A chair"), Listing("ok", "A lamp")])
    assert isinstance(results[0], InvalidInput) and not isinstance(results[1], InvalidInput)
    assert [request.url.path for request in seen] == ["/v1/listings/ok"]


def test_put_filter_and_delete_through_the_facade(
    facade_settings, demo_index, demo_prepared, tmp_path
):
    index_dir = shutil.copytree(demo_index, tmp_path / "index")
    settings = facade_settings.model_copy(update={"index_dir": index_dir})
    new = split_listings(demo_prepared, "test")[:3]
    listings = [
        Listing(f"new-{i}", text.partition("\n")[0], text.partition("\n")[2], photo, label, 9.5)
        for i, (photo, text, label) in enumerate(new)
    ]
    bad = Listing("bad", "A chair", photo=b"not a photo")
    with running_facade(settings) as facade:
        url = str(facade.base_url).rstrip("/")
        with Client(url) as client:
            results = client.put_listings([listings[0], bad, listings[1]])
            assert isinstance(results[0], ListingStored) and isinstance(results[2], ListingStored)
            assert isinstance(results[1], InvalidInput)
            assert results[1].code == ErrorCode.photo_unreadable
            photo, text, _ = new[0]
            found = client.similar(photo=photo, text=text, k=3, where=SimilarFilter(price_max=10))
            assert found.ids[0] == "new-0" and all(x.price <= 10 for x in found.listings)
            stored = client.get_listing("new-0")
            assert (stored.id, stored.price, stored.category) == ("new-0", 9.5, new[0][2])
            assert stored.index_version == found.index_version
            assert client.delete_listing("new-0") == found.index_version
            assert "new-0" not in client.similar(photo=photo, text=text, k=20).ids
            with pytest.raises(NotFound):
                client.get_listing("new-0")
            try:
                client.delete_listing("new-0")
                raise AssertionError("a second delete must fail")
            except NotFound as err:
                assert err.code == ErrorCode.listing_not_found

        async def put_last() -> list:
            async with AsyncClient(url) as client:
                return await client.put_listings(listings[2:])

        (stored,) = asyncio.run(put_last())
        assert isinstance(stored, ListingStored) and stored.category == new[2][2]


def test_a_table_of_listings_reads_as_the_marketplace_writes_it(tmp_path):
    (tmp_path / "photos").mkdir()
    table = tmp_path / "new.csv"
    table.write_text(
        "id,name,description,photo,price,category\n"
        'a,Oak chair | in Leeds | Gumtree,Seats 6,photos/a.jpg,"£1,200",\n'
        "b,Lamp,,,not a price,Home & Garden\n"
        "c,Desk,,photos/c1.jpg | s3://shop/c2.jpg,,\n"
    )
    first, second, third = read_listings(table)
    assert first == Listing(
        "a", "Oak chair | in Leeds | Gumtree", "Seats 6", str(tmp_path / "photos" / "a.jpg"),
        None, 1200.0, None,
    )  # fmt: skip
    # a price that is not one is sent as written, for the facade to refuse that row
    assert (second.photo, second.category) == (None, "Home & Garden")
    assert second.price is not None and math.isnan(second.price)
    # a listing's several photos: joined by "|" in a CSV, a list in JSON lines
    assert third.photo == [str(tmp_path / "photos" / "c1.jpg"), "s3://shop/c2.jpg"]
    row = '{"id": "d", "name": "Desk", "photo": ["x.jpg", "y.jpg"]}'
    (tmp_path / "new.jsonl").write_text(row + "\n")
    assert read_listings(tmp_path / "new.jsonl")[0].photo == [
        str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg")
    ]  # fmt: skip
    (tmp_path / "nameless.csv").write_text("id,description\na,Seats 6\n")
    with pytest.raises(InputError, match="name"):
        read_listings(tmp_path / "nameless.csv")


def test_listings_put_and_delete_in_bulk_record_each_refusal(
    facade_settings, demo_index, demo_prepared, tmp_path
):
    index_dir = shutil.copytree(demo_index, tmp_path / "index")
    settings = facade_settings.model_copy(update={"index_dir": index_dir})
    rows = [("id", "name", "description", "photo", "price")]
    for i, (photo, text, _) in enumerate(split_listings(demo_prepared, "test")[:2]):
        (tmp_path / f"{i}.jpg").write_bytes(photo)
        name, _, description = text.partition("\n")
        rows.append((f"bulk-{i}", name, description, f"{i}.jpg", ""))
    rows.append(("bulk-gone", "A chair", "", "missing.jpg", ""))
    rows.append(("bulk-negative", "A chair", "", "0.jpg", "-3"))  # refused, not stored priceless
    with open(tmp_path / "new.csv", "w", newline="") as table:
        csv.writer(table).writerows(rows)
    query = " ".join(rows[1][1:3])
    report = tmp_path / "report.jsonl"
    runner = CliRunner()
    with running_facade(settings) as facade:
        url = str(facade.base_url).rstrip("/")
        put = runner.invoke(
            app, ["put", str(tmp_path / "new.csv"), "--report", str(report), "--url", url]
        )
        # not every row went through: said, and exit 1 for a script to see
        assert put.exit_code == 1, put.output
        assert "2 listings stored, 2 refused" in put.output
        lines = [json.loads(line) for line in report.read_text().splitlines()]
        assert [line["id"] for line in lines] == ["bulk-0", "bulk-1", "bulk-gone", "bulk-negative"]
        assert lines[0]["stored"] and lines[1]["stored"]
        assert lines[2]["code"] == ErrorCode.photo_missing
        assert lines[3]["code"] == ErrorCode.invalid_input and "price" in lines[3]["error"]
        with Client(url) as client:
            photo = (tmp_path / "0.jpg").read_bytes()
            assert "bulk-0" in client.similar(photo=photo, text=query, k=5).ids
            deleted = runner.invoke(app, ["delete", "bulk-0", "nope", "shop/1", "--url", url])
            assert "1 listing deleted, 2 not deleted" in deleted.output, deleted.output
            assert deleted.exit_code == 1 and "shop/1" in deleted.output
            assert "bulk-0" not in client.similar(photo=photo, text=query, k=20).ids


def test_rows_put_where_nothing_listens_are_reported_unreachable(tmp_path):
    """No answer is a code of its own in the report (it was null), and an id is shown escaped."""
    (closed,) = free_ports(1)
    (tmp_path / "p.jpg").write_bytes(b"never read: nothing answers")
    (tmp_path / "new.csv").write_text(
        "id,name,description,photo\na,A chair,Oak,p.jpg\nb,A desk,,p.jpg\n"
    )
    report = tmp_path / "report.jsonl"
    url = f"http://127.0.0.1:{closed}"
    put = CliRunner().invoke(app, ["put", str(tmp_path / "new.csv"), "--report", str(report),
                                   "--url", url])  # fmt: skip
    assert put.exit_code == 1, put.output
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(line["id"], line["code"]) for line in lines] == [
        ("a", "unreachable"),
        ("b", "unreachable"),
    ]
    deleted = CliRunner().invoke(app, ["delete", "a\nb", "--url", url])
    assert deleted.exit_code == 1 and '"a\\nb": ' in deleted.output, deleted.output
