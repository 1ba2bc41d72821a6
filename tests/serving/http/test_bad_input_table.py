"""Bad inputs, one row each: what is sent, the status and the stable `code` it must get.

Every row is refused before the facade would call a model, so the whole table runs in the fast
tier: FastAPI's TestClient over the facade built on a stand-in model repository (its artifacts,
no models; `stand_in.py`), a small FAISS index, and a Triton URL where nothing listens. A row
that slipped past every check would reach that port and get a 503 `model_unavailable`, which
no row expects. The table is the README's status table, row by row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fbmr.core.contract import MAX_EXCLUDE_IDS, MAX_PHOTOS, Kind
from fbmr.serving.http.main import create_app
from fbmr.serving.index.store import save_version
from fbmr.serving.settings import FacadeSettings
from tests.helpers import TEST_LIMITS, assert_error, encode, free_ports
from tests.serving.http.stand_in import CLASSES, stand_in_repository

LIMITS = TEST_LIMITS  # max_body_bytes 2 MB, max_pixels 4 Mpx, max_text_chars 2,000, max_k 50
PHOTO = encode(Image.new("RGB", (64, 48), (120, 40, 200)))
PNG_OVER_PIXELS = encode(Image.new("L", (2500, 2000)), "PNG")  # 5 Mpx in a few kB
PHOTO_OVER_BYTES = b"\xff\xd8" + bytes(LIMITS["max_body_bytes"] // 2)  # read past the limit below
CORRUPT_JPEG = PHOTO[:200]
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
AVIF = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + b"\x00" * 64
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
PDF = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n"
TIFF = encode(Image.new("RGB", (8, 8)), "TIFF")
PSD = b"8BPS\x00\x01" + b"\x00" * 64
JSON = {"content-type": "application/json"}
LISTING = "/v1/listings/shop-1"


@dataclass(frozen=True)
class Row:
    """One bad request: `send(client)` makes it; `status` and `code` are what it must get, and
    `words` what the message must say (the README's promise of a reason)."""

    send: Callable[[TestClient], Any]
    status: int
    code: str
    words: tuple[str, ...] = field(default=())


def post(path: str, **kwargs: Any) -> Callable[[TestClient], Any]:
    return lambda client: client.post(path, **kwargs)


def put(path: str, **kwargs: Any) -> Callable[[TestClient], Any]:
    return lambda client: client.put(path, **kwargs)


def photos(*data: bytes, field: str = "photo") -> list[tuple[str, tuple[str, bytes]]]:
    return [(field, (f"p{i}.jpg", d)) for i, d in enumerate(data)]


def listing_form(**fields: str) -> dict[str, str]:
    return {"name": "Oak dining chair", "description": "Seats six", **fields}


def put_listing(**fields: str) -> Callable[[TestClient], Any]:
    return put(LISTING, files=photos(PHOTO), data=listing_form(**fields))


PHOTO_ROUTES = ("/v1/predict/image", "/v1/predict/combined", "/v1/embed", "/v1/similar")
BAD_PHOTOS = {
    "empty": (b"", 422, "photo_empty", ("empty",)),
    "corrupt-jpeg": (CORRUPT_JPEG, 422, "photo_unreadable", ("photo",)),
    "text-file": (b"a sofa, barely used", 422, "photo_unreadable", ("not an image",)),
    "heic": (HEIC, 422, "photo_unreadable", ("HEIC",)),
    "avif": (AVIF, 422, "photo_unreadable", ("AVIF",)),
    "svg": (SVG, 422, "photo_unreadable", ("SVG",)),
    "pdf": (PDF, 422, "photo_unreadable", ("PDF",)),
    "tiff": (TIFF, 422, "photo_unreadable", ("TIFF",)),
    "psd": (PSD, 422, "photo_unreadable", ("PSD",)),
    "over-the-pixel-limit": (PNG_OVER_PIXELS, 413, "photo_too_large", ("too large",)),
}

ROWS: dict[str, Row] = {}
# -- photos: every photo route, each bad photo ------------------------------------------------
for route in PHOTO_ROUTES:
    for name, (data, status, code, words) in BAD_PHOTOS.items():
        ROWS[f"{route} photo {name}"] = Row(
            post(route, files=photos(data), data={"text": "a sofa"}), status, code, words
        )
    ROWS[f"{route} too many photos"] = Row(
        post(route, files=photos(*[PHOTO] * (MAX_PHOTOS + 1)), data={"text": "a sofa"}),
        422, "too_many_photos", (f"at most {MAX_PHOTOS}",),
    )  # fmt: skip
    ROWS[f"{route} a bad photo among good ones"] = Row(
        post(route, files=photos(PHOTO, CORRUPT_JPEG), data={"text": "a sofa"}),
        422, "photo_unreadable",
    )  # fmt: skip
for name, (data, status, code, words) in BAD_PHOTOS.items():
    ROWS[f"PUT listing photo {name}"] = Row(
        put(LISTING, files=photos(data), data=listing_form()), status, code, words
    )
    ROWS[f"seed /image {name}"] = Row(post("/image", files=photos(data, field="image")), status,
                                      code, words)  # fmt: skip
ROWS["PUT listing too many photos"] = Row(
    put(LISTING, files=photos(*[PHOTO] * (MAX_PHOTOS + 1)), data=listing_form()),
    422, "too_many_photos",
)  # fmt: skip
ROWS["seed /combined too many photos"] = Row(
    post("/combined", files=photos(*[PHOTO] * (MAX_PHOTOS + 1), field="image"),
         data={"text": "a sofa"}),
    422, "too_many_photos",
)  # fmt: skip

ROWS.update({
    # -- missing photo parts ------------------------------------------------------------------
    "image without a photo": Row(post("/v1/predict/image", data={"text": "a sofa"}), 422,
                                 "invalid_input", ("photo",)),
    "combined without a photo": Row(post("/v1/predict/combined", data={"text": "a sofa"}), 422,
                                    "invalid_input", ("photo",)),
    "combined without a text": Row(post("/v1/predict/combined", files=photos(PHOTO)), 422,
                                   "text_empty", ("text",)),
    "photo sent as a text field": Row(post("/v1/predict/image", data={"photo": "p.jpg"}), 422,
                                      "invalid_input", ("photo",)),
    "photo under another part name": Row(
        post("/v1/predict/image", files=photos(PHOTO, field="img")), 422, "invalid_input",
        ("photo",)),
    "seed /image with the v1 part name": Row(post("/image", files=photos(PHOTO)), 422,
                                             "invalid_input", ("image",)),
    "seed /combined without text": Row(post("/combined", files=photos(PHOTO, field="image")), 422,
                                       "invalid_input", ("text",)),
    "embed with nothing": Row(post("/v1/embed", data={}), 422, "no_input"),
    "similar with nothing": Row(post("/v1/similar", data={"k": "3"}), 422, "no_input"),
    "PUT listing without a photo (the index searches by photo)": Row(
        put(LISTING, data=listing_form()), 422, "invalid_input", ("photo: required",)),
    # -- sizes over the limits --------------------------------------------------------------
    "photo over the byte limit": Row(
        post("/v1/predict/image", files=photos(PHOTO_OVER_BYTES * 3)), 413, "too_large"),
    "body over the byte limit (Content-Length)": Row(
        post("/v1/predict/text", content=b"{" + b" " * (LIMITS["max_body_bytes"] + 1) + b"}",
             headers=JSON), 413, "too_large", ("limit",)),
    "text over the length limit (JSON)": Row(
        post("/v1/predict/text", json={"text": "sofa " * 500}), 413, "text_too_long"),
    "text over the length limit (form)": Row(
        post("/v1/predict/text", data={"text": "sofa " * 500}), 413, "text_too_long"),
    "name and description over the length limit together": Row(
        post("/v1/predict/text", json={"name": "a" * 1500, "description": "b" * 1500}), 413,
        "text_too_long"),
    "combined text over the limit": Row(
        post("/v1/predict/combined", files=photos(PHOTO), data={"text": "sofa " * 500}), 413,
        "text_too_long"),
    "seed /text over the limit": Row(post("/text", data={"text": "sofa " * 500}), 413,
                                     "text_too_long"),
    "form field over the parser's limit": Row(
        post("/v1/predict/text", data={"text": "sofa " * 300_000}), 413, "too_large"),
    # -- text ---------------------------------------------------------------------------------
    "empty text": Row(post("/v1/predict/text", json={"text": ""}), 422, "text_empty"),
    "blank text": Row(post("/v1/predict/text", json={"text": "  \n\t "}), 422, "text_empty"),
    "empty name and description": Row(
        post("/v1/predict/text", json={"name": "", "description": ""}), 422, "text_empty"),
    "seed /text blank": Row(post("/text", data={"text": "   "}), 422, "text_empty"),
    "text and name together": Row(
        post("/v1/predict/text", json={"text": "a sofa", "name": "Sofa"}), 422, "invalid_input",
        ("not both",)),
    "no text at all (JSON)": Row(post("/v1/predict/text", json={}), 422, "invalid_input",
                                 ("no text",)),
    "no text at all (form)": Row(post("/v1/predict/text", data={"title": "a sofa"}), 422,
                                 "invalid_input", ('"text"',)),
    "text a number": Row(post("/v1/predict/text", json={"text": 5}), 422, "invalid_input",
                         ("valid string",)),
    "text a list": Row(post("/v1/predict/text", json={"text": ["a sofa"]}), 422, "invalid_input"),
    "text null": Row(post("/v1/predict/text", json={"text": None}), 422, "invalid_input"),
    "unknown JSON field": Row(post("/v1/predict/text", json={"title": "a sofa"}), 422,
                              "invalid_input", ("title",)),
    "JSON array": Row(post("/v1/predict/text", json=["a sofa"]), 422, "invalid_input",
                      ("an array",)),
    "JSON string": Row(post("/v1/predict/text", json="a sofa"), 422, "invalid_input",
                       ("a string",)),
    "JSON number": Row(post("/v1/predict/text", json=12), 422, "invalid_input", ("a number",)),
    "text as a file part": Row(
        post("/v1/predict/text", files={"text": ("t.txt", b"a sofa")}), 422, "invalid_input",
        ("text fields",)),
    # -- bodies that cannot be parsed ---------------------------------------------------------
    "broken JSON": Row(post("/v1/predict/text", content=b'{"text": "a so', headers=JSON), 400,
                       "invalid_input", ("not JSON",)),
    "JSON not UTF-8": Row(post("/v1/predict/text", content=b'{"text": "caf\xe9"}', headers=JSON),
                          400, "invalid_input", ("not JSON",)),
    "JSON nested too deep": Row(post("/v1/predict/text", content=b"[" * 100_000, headers=JSON),
                                400, "invalid_input", ("not JSON",)),
    "empty JSON body": Row(post("/v1/predict/text", content=b"", headers=JSON), 400,
                           "invalid_input"),
    "multipart without a boundary": Row(
        post("/v1/predict/combined", content=b"--x\r\n",
             headers={"content-type": "multipart/form-data"}), 400, "invalid_input",
        ("boundary",)),
    "multipart part without a name": Row(
        post("/v1/predict/text",
             content=b"--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n",
             headers={"content-type": "multipart/form-data; boundary=x"}), 400, "invalid_input",
        ("name",)),
    "pin body not JSON": Row(
        put("/v1/admin/model-version", content=b"{version", headers=JSON), 400, "invalid_input",
        ("not JSON",)),
    "pin body cut short": Row(
        put("/v1/admin/model-version", content=b'{"version": 1', headers=JSON), 400,
        "invalid_input", ("not JSON",)),
    # -- content types: 415 only where a route reads the body itself ------------------------
    "text as text/plain": Row(
        post("/v1/predict/text", content=b"a sofa", headers={"content-type": "text/plain"}),
        415, "unsupported_media_type", ("text/plain", "application/json")),
    "text without a Content-Type": Row(post("/v1/predict/text", content=b"a sofa"), 415,
                                       "unsupported_media_type", ("Content-Type",)),
    "text as XML": Row(
        post("/v1/predict/text", content=b"<text>a sofa</text>",
             headers={"content-type": "application/xml"}), 415, "unsupported_media_type"),
    "image as JSON": Row(post("/v1/predict/image", json={"photo": "p.jpg"}), 422, "invalid_input",
                         ("multipart/form-data", "not application/json")),
    "combined as JSON": Row(
        post("/v1/predict/combined", json={"photo": "p.jpg", "text": "a sofa"}), 422,
        "invalid_input", ("multipart/form-data",)),
    "embed as JSON": Row(post("/v1/embed", json={"text": "a sofa"}), 422, "no_input",
                         ("multipart/form-data",)),
    "similar as JSON": Row(post("/v1/similar", json={"text": "a sofa"}), 422, "no_input",
                           ("multipart/form-data",)),
    "similar as text/plain": Row(
        post("/v1/similar", content=b"a sofa", headers={"content-type": "text/plain"}), 422,
        "no_input"),
    "PUT listing as JSON": Row(put(LISTING, json=listing_form()), 422, "invalid_input",
                               ("multipart/form-data",)),
    "image as a raw JPEG body": Row(
        post("/v1/predict/image", content=PHOTO, headers={"content-type": "image/jpeg"}), 422,
        "invalid_input", ("multipart/form-data", "not image/jpeg")),
    "pin as a form": Row(put("/v1/admin/model-version", data={"version": "1"}), 422,
                         "invalid_input"),
    # -- k and the similar-listing filters ----------------------------------------------------
    "k 0": Row(post("/v1/similar", data={"text": "a sofa", "k": "0"}), 422, "invalid_input",
               ("k",)),
    "k negative": Row(post("/v1/similar", data={"text": "a sofa", "k": "-1"}), 422,
                      "invalid_input", ("k",)),
    "k over max_k": Row(post("/v1/similar", data={"text": "a sofa", "k": "51"}), 422,
                        "invalid_input", ("between 1 and 50",)),
    "k huge": Row(post("/v1/similar", data={"text": "a sofa", "k": str(10**12)}), 422,
                  "invalid_input", ("k",)),
    "k a word": Row(post("/v1/similar", data={"text": "a sofa", "k": "ten"}), 422,
                    "invalid_input", ("k",)),
    "k a fraction": Row(post("/v1/similar", data={"text": "a sofa", "k": "1.5"}), 422,
                        "invalid_input", ("k",)),
    "unknown category filter": Row(
        post("/v1/similar", data={"text": "a sofa", "category": "Spaceships"}), 422,
        "invalid_input", ("Spaceships", json.dumps(CLASSES))),
    "price_min above price_max": Row(
        post("/v1/similar", data={"text": "a sofa", "price_min": "50", "price_max": "10"}), 422,
        "invalid_input", ("price_min",)),
    "price_min negative": Row(
        post("/v1/similar", data={"text": "a sofa", "price_min": "-1"}), 422, "invalid_input",
        ("must be 0 or more",)),
    "price_max NaN": Row(post("/v1/similar", data={"text": "a sofa", "price_max": "nan"}), 422,
                         "invalid_input", ("finite",)),
    "price_max infinite": Row(
        post("/v1/similar", data={"text": "a sofa", "price_max": "inf"}), 422, "invalid_input",
        ("finite",)),
    "price_min a word": Row(post("/v1/similar", data={"text": "a sofa", "price_min": "cheap"}),
                            422, "invalid_input", ("price_min",)),
    "location filter over its length": Row(
        post("/v1/similar", data={"text": "a sofa", "location": "x" * 201}), 422,
        "invalid_input", ("location",)),
    "too many exclude_id": Row(
        post("/v1/similar",
             data={"text": "a sofa", "exclude_id": [f"id{i}" for i in range(MAX_EXCLUDE_IDS + 1)]}),
        422, "invalid_input", (f"at most {MAX_EXCLUDE_IDS}",)),
    "exclude_id with a slash": Row(
        post("/v1/similar", data={"text": "a sofa", "exclude_id": ["shop/1"]}), 422,
        "listing_id_invalid"),
    # -- listing ids --------------------------------------------------------------------------
    "id with a slash (PUT)": Row(
        put("/v1/listings/shop%2F123", files=photos(PHOTO), data=listing_form()), 422,
        "listing_id_invalid", ("listing id",)),
    "id with a slash (GET)": Row(lambda c: c.get("/v1/listings/shop%2F123"), 422,
                                 "listing_id_invalid"),
    "id with a slash (DELETE)": Row(lambda c: c.delete("/v1/listings/shop%2F123"), 422,
                                    "listing_id_invalid"),
    "id with a newline": Row(lambda c: c.delete("/v1/listings/a%0Ab"), 422, "listing_id_invalid"),
    "id with a NUL": Row(lambda c: c.get("/v1/listings/a%00b"), 422, "listing_id_invalid"),
    "id with a space": Row(lambda c: c.get("/v1/listings/a%20b"), 422, "listing_id_invalid"),
    "id with a quote": Row(lambda c: c.get("/v1/listings/a%22b"), 422, "listing_id_invalid"),
    "id starting with a dot": Row(lambda c: c.get("/v1/listings/.hidden"), 422,
                                  "listing_id_invalid"),
    "id starting with a dash": Row(lambda c: c.get("/v1/listings/-1"), 422, "listing_id_invalid"),
    "id not ASCII": Row(lambda c: c.get("/v1/listings/caf%C3%A9"), 422, "listing_id_invalid"),
    "id of 201 characters": Row(lambda c: c.get("/v1/listings/" + "a" * 201), 422,
                                "listing_id_invalid", ("1 to 200",)),
    "id as a path of two segments": Row(lambda c: c.get("/v1/listings/shop/123"), 422,
                                        "listing_id_invalid"),
    # -- listing fields -----------------------------------------------------------------------
    "name empty": Row(put_listing(name=""), 422, "invalid_input", ("name: empty",)),
    "name missing": Row(put(LISTING, files=photos(PHOTO), data={"description": "Seats six"}),
                        422, "invalid_input", ("name: required",)),
    "name blank": Row(put_listing(name="   "), 422, "invalid_input", ("name: empty",)),
    "name over its length": Row(put_listing(name="a" * 301), 422, "invalid_input", ("name",)),
    "location over its length": Row(put_listing(location="x" * 201), 422, "invalid_input",
                                    ("location",)),
    "price negative": Row(put_listing(price="-3"), 422, "invalid_input", ("must be 0 or more",)),
    "price NaN": Row(put_listing(price="NaN"), 422, "invalid_input", ("finite",)),
    "price infinite": Row(put_listing(price="Infinity"), 422, "invalid_input", ("finite",)),
    "price a word": Row(put_listing(price="cheap"), 422, "invalid_input", ("price",)),
    "unknown category": Row(put_listing(category="Spaceships"), 422, "invalid_input",
                            ("Spaceships", json.dumps(CLASSES))),
    "listing text over the limit": Row(put_listing(description="d" * 2_000), 413,
                                       "text_too_long"),
    "DELETE of a listing the index does not hold": Row(
        lambda c: c.delete("/v1/listings/never-put"), 404, "listing_not_found"),
    "GET of a listing the index does not hold": Row(
        lambda c: c.get("/v1/listings/never-put"), 404, "listing_not_found"),
    # -- the version pin ----------------------------------------------------------------------
    "pin true": Row(put("/v1/admin/model-version", json={"version": True}), 422, "invalid_input",
                    ("version",)),
    "pin false": Row(put("/v1/admin/model-version", json={"version": False}), 422,
                     "invalid_input"),
    "pin a string": Row(put("/v1/admin/model-version", json={"version": "1"}), 422,
                        "invalid_input"),
    "pin a fraction": Row(put("/v1/admin/model-version", json={"version": 1.5}), 422,
                          "invalid_input"),
    "pin missing": Row(put("/v1/admin/model-version", json={}), 422, "invalid_input"),
    "pin of a version not exported": Row(put("/v1/admin/model-version", json={"version": 7}),
                                         422, "version_not_exported", ("7",)),
    # -- routes and methods -------------------------------------------------------------------
    "no such route": Row(post("/v1/predict/audio", data={"text": "a sofa"}), 404, "not_found"),
    "GET of a POST route": Row(lambda c: c.get("/v1/predict/text"), 405, "method_not_allowed"),
    "DELETE of the pin": Row(lambda c: c.delete("/v1/admin/model-version"), 405,
                             "method_not_allowed"),
    "POST to a listing": Row(post(LISTING, data=listing_form()), 405, "method_not_allowed"),
})  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    index_dir = root / "index"
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    listings = [
        {"id": f"listing-{i}", "name": f"item {i}", "category": CLASSES[i], "price": 10.0 * i,
         "location": "Leeds"}
        for i in range(3)
    ]  # fmt: skip
    save_version(index_dir, {Kind.combined: vectors, Kind.text: vectors}, listings,
                 {"model_version": 1})  # fmt: skip
    (closed,) = free_ports(1)
    settings = FacadeSettings(
        triton_url=f"127.0.0.1:{closed}",
        triton_timeout_s=5,
        model_repository=stand_in_repository(root / "repository"),
        index_dir=index_dir,
        index_poll_s=0,
        updates_poll_s=0,
        model_poll_s=0,
        **LIMITS,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("name", ROWS)
def test_a_bad_input_gets_its_status_and_code(client, name):
    row = ROWS[name]
    assert_error(row.send(client), row.status, *row.words, code=row.code)


def test_the_table_covers_about_a_hundred_inputs_and_every_refusal_status():
    assert len(ROWS) >= 100
    assert {row.status for row in ROWS.values()} == {400, 404, 405, 413, 415, 422}


def test_a_put_whose_photo_cannot_be_read_calls_no_model(client, monkeypatch):
    """The index holds text and combined embeddings: the text's model must not be asked while
    the photo is still being read (sent together, its answer or failure came first, and a bad
    photo got a 503 whenever Triton was away)."""
    from fbmr.serving.triton.inference import TritonUnavailable

    asked = []

    async def infer(kind, inputs, version=None):
        asked.append(kind)
        raise TritonUnavailable("stand-in: no model server")

    monkeypatch.setattr(client.app.state.facade.models, "infer", infer)
    for data in (CORRUPT_JPEG, b"", PDF, PNG_OVER_PIXELS):
        response = put(LISTING, files=photos(data), data=listing_form())(client)
        assert response.status_code in (413, 422), response.text
    assert asked == []
    # a listing that passes every check reaches the models, each kind
    response = put(LISTING, files=photos(PHOTO), data=listing_form())(client)
    assert_error(response, 503, code="model_unavailable")
    assert set(asked) <= {Kind.text, Kind.combined} and asked
