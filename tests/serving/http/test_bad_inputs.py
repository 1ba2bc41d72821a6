"""A corpus of hostile and odd inputs, each generated here, each with the status it must get.

Inputs that must be refused are sent in process (FastAPI's TestClient, the Triton URL on a closed
port: every refusal answers before the models would run). Inputs that must be accepted are sent
to the real stack (tritonserver and the demo index, uvicorn over HTTP), as are the ones that need
a real HTTP server: bodies without Content-Length (chunked) and Content-Lengths that lie. Never a
5xx, never a hang (every socket and client has a timeout); every error JSON `{"error": ...}`.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from fbmr.core.contract import Kind
from fbmr.serving.http import middleware
from tests.helpers import assert_error, encode
from tests.serving.onnx_reference import OnnxReference

ACCEPTED = "JPEG, PNG, WebP, GIF or BMP"


def _photo(size=(64, 48), colour=(200, 40, 90)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _animated_gif() -> bytes:
    frames = [_photo(colour=c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (64, 48), 1)
    image.putpalette([0, 0, 0, 30, 160, 60] * 128)
    image.paste(0, (0, 0, 32, 48))  # the left half transparent
    return encode(image, "PNG", transparency=0)


def _corrupt_jpeg() -> bytes:
    # a JPEG's markers, then noise where the image data should be
    data = bytearray(encode(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG"))
    data[20:] = bytes((i * 7919) % 251 for i in range(len(data) - 20))
    return bytes(data)


# photos that are photos, however odd: the category must come back (real stack)
GOOD_PHOTOS = {
    "png-named-jpg": ("photo.jpg", lambda: encode(_photo(), "PNG")),
    # A 1x1 photo is still a photo: users who send a thumbnail expect an answer, a low-confidence
    # one, rather than a refusal at an arbitrary minimum size.
    "1x1": ("p.jpg", lambda: encode(_photo((1, 1)), "JPEG")),
    # 400,000 pixels, under the limit; padded to a square it would be 400 Mpx, so it is shrunk
    # before padding (fbmr.core.image.image_pixels)
    "20000x20": ("p.png", lambda: encode(_photo((20000, 20)), "PNG")),
    "cmyk-jpeg": ("p.jpg", lambda: encode(Image.new("CMYK", (64, 48), (0, 200, 200, 0)), "JPEG")),
    "16-bit-png": ("p.png", lambda: encode(Image.new("I;16", (64, 48), 30000), "PNG")),
    "greyscale": ("p.jpg", lambda: encode(Image.new("L", (64, 48), 90), "JPEG")),
    "palette-transparent": ("p.png", _palette_with_transparency),
    "animated-gif": ("p.gif", _animated_gif),
    "webp": ("p.webp", lambda: encode(_photo(), "WEBP")),
    "bmp": ("p.bmp", lambda: encode(_photo(), "BMP")),
}

# photos that are not (in process): status and words of the answer
BAD_PHOTOS = {
    "zero-bytes": (lambda: b"", 422, ["empty"]),
    "truncated-jpeg": (
        lambda: encode(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG")[:300],
        422,
        ["photo", "image"],  # "cannot read image: Truncated File Read", or "corrupt or truncated"
    ),
    "corrupt-jpeg": (_corrupt_jpeg, 422, ["photo"]),
    # 2500 x 2000 = 5 Mpx, over the 4 Mpx limit, in a file of a few kB
    "decompression-bomb": (lambda: encode(Image.new("L", (2500, 2000)), "PNG"), 413, ["too large"]),
    "heic": (
        lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        422,
        ["HEIC", "not a supported", ACCEPTED],
    ),
    "svg": (
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
        422,
        ["SVG", "not a supported", ACCEPTED],
    ),
    "pdf": (lambda: b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", 422, ["PDF", "not a supported"]),
    "text": (lambda: b"a sofa, barely used", 422, ["not an image", ACCEPTED]),
}

# the listing texts that are text, however odd (real stack)
GOOD_TEXTS = {
    "nul-bytes": "a so\x00fa with\x00 NUL bytes",
    "emoji": "🛋️ sofa 👍🏽 barely used 🔥🔥",
    "right-to-left": "أريكة جلدية بحالة ممتازة",  # Arabic: a leather sofa in excellent condition
    "mixed-direction": "ספה sofa כמעט חדשה",  # Hebrew and English
}


@pytest.fixture(scope="module")
def reference(cpu_repository) -> OnnxReference:
    return OnnxReference(cpu_repository)


def _assert_whole_answer(response, expected: dict[str, float], text: str | None) -> None:
    """A prediction from version 1 of every category, ranked, with the probabilities the
    exported ONNX files give (`expected`), saying how much of `text` (None: no text) the model
    could read."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(body["classes"]) == sorted(expected) and body["pred"] == body["classes"][0]
    assert body["probabilities"] == sorted(body["probabilities"], reverse=True)
    got = dict(zip(body["classes"], body["probabilities"], strict=True))
    # Triton may batch concurrent requests together: equal up to float noise
    assert got == pytest.approx(expected, abs=1e-5)
    assert body["model_version"] == 1
    assert (body["known_words"] is None) == (text is None)


@pytest.mark.parametrize("name", GOOD_PHOTOS)
def test_odd_photos_are_categorised(facade, reference, name):
    filename, make = GOOD_PHOTOS[name]
    data = make()
    image = facade.post("/v1/predict/image", files={"photo": (filename, data, "image/jpeg")})
    _assert_whole_answer(image, reference.probabilities(Kind.image, data, ""), None)
    combined = facade.post(
        "/v1/predict/combined", files={"photo": (filename, data)}, data={"text": "a sofa"}
    )
    expected = reference.probabilities(Kind.combined, data, "a sofa")
    _assert_whole_answer(combined, expected, "a sofa")


@pytest.mark.parametrize("name", BAD_PHOTOS)
def test_bad_photos_are_refused_with_the_reason(offline_client, name):
    make, status, words = BAD_PHOTOS[name]
    code = {"zero-bytes": "photo_empty", "decompression-bomb": "photo_too_large"}.get(
        name, "photo_unreadable"
    )
    for path in ("/v1/predict/image", "/v1/predict/combined", "/v1/embed"):
        response = offline_client.post(
            path, files={"photo": ("p.jpg", make())}, data={"text": "a sofa"}
        )
        assert_error(response, status, *words, code=code)


@pytest.mark.parametrize("name", GOOD_TEXTS)
def test_odd_texts_are_categorised(facade, reference, name):
    text = GOOD_TEXTS[name]
    expected = reference.probabilities(Kind.text, b"", text)
    for request in ({"json": {"text": text}}, {"data": {"text": text}}):
        response = facade.post("/v1/predict/text", **request)
        _assert_whole_answer(response, expected, text)
    response = facade.post("/v1/similar", data={"text": text, "k": "3"})
    assert response.status_code == 200 and len(response.json()["listings"]) == 3, response.text


def test_a_megabyte_of_text_is_refused_as_too_long(offline_client):
    megabyte = "sofa " * 200_000  # 1,000,000 characters, over the 2,000 of max_text_chars
    for request in ({"json": {"text": megabyte}}, {"data": {"text": megabyte}}):
        response = offline_client.post("/v1/predict/text", **request)
        assert_error(response, 413, "limit", code="text_too_long")
    # a form field over the multipart parser's own limit (1 MiB) is a 413 too, not a 400
    over = "sofa " * 300_000
    response = offline_client.post("/v1/predict/text", data={"text": over})
    assert_error(response, 413, "limit", code="too_large")
    photo = encode(_photo(), "JPEG")
    response = offline_client.post(
        "/v1/predict/combined", files={"photo": ("p.jpg", photo)}, data={"text": over}
    )
    assert_error(response, 413, "limit", code="too_large")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"text": 5}', ["text", "valid string"]),
        (b'{"text": null}', ["no text", '{"name": "...", "description": "..."}']),
        (b'{"text": ["a sofa"]}', ["text", "valid string"]),
        (b'{"title": "a sofa"}', ["title", "Extra inputs"]),
        (b"[]", ["an array", '{"text": "..."}']),
        (b'"a sofa"', ["a string", '{"text": "..."}']),
        (b"12", ["a number", '{"text": "..."}']),
    ],
    ids=["number", "null", "list", "other-field", "array", "string", "bare-number"],
)
def test_json_of_the_wrong_shape_is_refused(offline_client, body, words):
    response = offline_client.post(
        "/v1/predict/text", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, *words, code="invalid_input")


def test_a_form_is_taken_like_json_and_other_bodies_are_told_what_to_send(offline_client):
    # past the body, the request reaches the (absent) model server: the text was read
    assert_error(
        offline_client.post("/v1/predict/text", data={"text": "a sofa"}), 503, "unavailable"
    )
    multipart = offline_client.post(
        "/v1/predict/text", data={"text": "a sofa"}, files={"x": ("x", b"")}
    )
    assert_error(multipart, 503, "unavailable", code="model_unavailable")
    assert_error(offline_client.post("/v1/predict/text", data={"title": "a sofa"}), 422, '"text"')
    plain = {"content-type": "text/plain"}
    response = offline_client.post("/v1/predict/text", content=b"a sofa", headers=plain)
    assert_error(response, 415, "text/plain", '{"text": "..."}', "application/json", "form")
    assert_error(offline_client.post("/v1/predict/text", content=b"a sofa"), 415, "Content-Type")
    response = offline_client.post(
        "/v1/predict/text", content=b'{"text": "a so', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "not JSON", '{"text": "..."}')
    deep = offline_client.post(
        "/v1/predict/text", content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    assert_error(deep, 400, "not JSON")  # nested too deep for the parser: not a 500
    # JSON to the photo endpoints: they say they take multipart/form-data
    sent = {"text": "a sofa", "photo": "p.jpg"}
    for path in ("/v1/predict/image", "/v1/predict/combined"):
        response = offline_client.post(path, json=sent)
        assert_error(response, 422, "photo", "multipart/form-data", "not application/json")
    for path in ("/v1/embed", "/v1/similar"):  # where both are optional
        assert_error(
            offline_client.post(path, json=sent), 422, "photo, a text", "multipart/form-data"
        )


@pytest.mark.parametrize("k", ["0", "-1", str(10**9), "ten", "1.5"])
def test_k_out_of_range_or_not_a_number_is_refused(offline_client, k):
    response = offline_client.post("/v1/similar", data={"text": "a sofa", "k": k})
    assert_error(response, 422, "k", code="invalid_input")


def test_the_openapi_schema_documents_both_text_encodings(offline_client):
    schema = offline_client.get("/openapi.json").json()
    body = schema["paths"]["/v1/predict/text"]["post"]["requestBody"]
    for media in ("application/json", "application/x-www-form-urlencoded"):
        assert set(body["content"][media]["schema"]["properties"]) == {
            "text",
            "name",
            "description",
        }


def test_the_openapi_schema_documents_every_error_code(offline_client):
    from fbmr.core.contract import ErrorCode

    schema = offline_client.get("/openapi.json").json()
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert set(error["required"]) == {"error", "code"}
    code = schema["components"]["schemas"][error["properties"]["code"]["$ref"].split("/")[-1]]
    assert set(code["enum"]) == {c.value for c in ErrorCode}
    answers = schema["paths"]["/v1/predict/combined"]["post"]["responses"]
    assert answers["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")


# bodies that need a real HTTP server (real stack)


def _chunks(total: int, head: bytes = b"", size: int = 64 * 1024) -> Iterator[bytes]:
    """A body of `total` bytes after `head`, in pieces: httpx sends a generator chunked."""
    yield head
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


def test_a_chunked_body_over_the_limit_is_refused(facade, facade_settings):
    limit = facade_settings.max_body_bytes
    json_head = {"content-type": "application/json"}
    response = facade.post(
        "/v1/predict/text", content=_chunks(limit + 100_000, b'{"text": "'), headers=json_head
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, f"over the limit of {limit} bytes")
    # a photo, multipart, chunked
    upload = httpx.Request(
        "POST", "http://x/", files={"photo": ("p.jpg", b"\xff\xd8" + b"x" * (limit + 10))}
    )
    body = upload.read()
    headers = {"content-type": upload.headers["content-type"]}
    response = facade.post("/v1/predict/image", content=iter([body[:1000], body[1000:]]),
                           headers=headers)  # fmt: skip
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "over the limit")
    # under the limit, chunked bodies are read as any other
    ok = facade.post(
        "/v1/predict/text", content=iter([b'{"text": "a ', b'sofa"}']), headers=json_head
    )
    assert ok.json() == facade.post("/v1/predict/text", json={"text": "a sofa"}).json(), ok.text


def _exchange(url: httpx.URL, request: bytes, timeout_s: float = 30) -> bytes:
    """Sends raw bytes and reads until the server closes or answers one whole response; a
    server that neither answers nor closes fails the test at `timeout_s` instead of hanging."""
    received = b""
    with socket.create_connection((url.host, url.port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before reading all
            sock.sendall(request)
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer in {timeout_s} s: {received[:200]!r}") from None
            except OSError:
                break
            if not data:
                break
            received += data
            head, _, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    return received


def _statuses(raw: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_a_content_length_that_lies_neither_hangs_nor_fails(facade, monkeypatch):
    monkeypatch.setattr(middleware, "BODY_IDLE_TIMEOUT_S", 1.0)
    url = facade.base_url
    head = "POST /v1/predict/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    # says 1000 bytes, sends 17 and waits: the body guard answers 408 after its idle timeout
    raw = _exchange(url, (head + "Content-Length: 1000\r\n\r\n").encode() + b'{"text":"a sofa"}')
    assert _statuses(raw)[:1] == [408], raw[:300]
    assert b'{"error":"request body: nothing received' in raw
    # says 10 bytes, sends a megabyte: the first 10 are the request (not JSON: a 400), the rest
    # is not HTTP (uvicorn's own 400, or the connection closed); nothing is a 5xx
    raw = _exchange(
        url, (head + "Content-Length: 10\r\n\r\n").encode() + b'{"text": "' + b"x" * 1_000_000
    )
    statuses = _statuses(raw)
    assert statuses and statuses[0] == 400 and max(statuses) < 500, raw[:300]
    assert b'{"error":"invalid request: the body is not JSON' in raw
    # says more than the limit: refused before a byte of the body is read
    raw = _exchange(url, (head + "Content-Length: 999999999\r\n\r\n").encode() + b"{")
    assert _statuses(raw)[:1] == [413], raw[:300]
