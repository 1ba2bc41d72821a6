"""Input validation and auth, in process (FastAPI's TestClient): every check here answers before
the facade would call Triton, so no tritonserver is started; the Triton URL points at a closed
port, and a request that passed every check would get a 503."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr
from starlette.exceptions import HTTPException

from fbmr.serving.http import middleware
from fbmr.serving.http.main import create_app
from tests.helpers import assert_error, encode


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(Image.new("RGB", (64, 48), (120, 40, 200)))


def test_bad_photos_are_refused_with_a_reason(offline_client):
    corrupt = encode(Image.new("RGB", (64, 64)), "JPEG")[:200]
    assert_error(
        offline_client.post("/v1/predict/image", files={"photo": ("p.jpg", corrupt)}), 422, "photo"
    )
    not_image = b"%PDF-1.4 this is not a photo"
    response = offline_client.post("/v1/predict/image", files={"photo": ("p.jpg", not_image)})
    assert_error(response, 422, "PDF is not a supported photo format")
    assert_error(
        offline_client.post("/v1/predict/image", files={"photo": ("p.jpg", b"")}), 422, "empty"
    )
    # 2500 x 2000 = 5 Mpx over the 4 Mpx limit, yet a small file: a decompression bomb in miniature
    bomb = encode(Image.new("L", (2500, 2000)), "PNG")
    assert len(bomb) < 100_000
    assert_error(
        offline_client.post("/v1/predict/image", files={"photo": ("p.png", bomb)}), 413, "too large"
    )


def test_oversized_bodies_are_refused(offline_client):
    big = b"\xff" * 2_500_000
    assert_error(
        offline_client.post("/v1/predict/image", files={"photo": ("p.jpg", big)}), 413, "limit"
    )


def test_bad_text_is_refused_with_a_reason(offline_client):
    assert_error(offline_client.post("/v1/predict/text", json={"text": "   "}), 422, "empty")
    assert_error(
        offline_client.post("/v1/predict/text", json={"text": "word " * 1000}), 413, "limit"
    )
    not_utf8 = b'{"text": "caf\xe9 table"}'
    response = offline_client.post(
        "/v1/predict/text", content=not_utf8, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid request")
    assert_error(offline_client.post("/v1/predict/text", json={}), 422, "text")


def test_missing_fields_and_k_out_of_range_are_refused(offline_client, photo):
    assert_error(offline_client.post("/v1/predict/combined", data={"text": "a sofa"}), 422, "photo")
    response = offline_client.post("/v1/predict/combined", files={"photo": ("p.jpg", photo)})
    assert_error(response, 422, "text")
    assert_error(offline_client.post("/v1/similar", data={}), 422, "photo, a text")
    for k in ("0", "51", "ten"):
        assert_error(offline_client.post("/v1/similar", data={"text": "a sofa", "k": k}), 422, "k")


def test_a_valid_request_without_triton_is_a_503_to_retry(offline_client, offline_settings, photo):
    response = offline_client.post("/v1/predict/combined", files={"photo": ("p.jpg", photo)},
                           data={"text": "a sofa"})  # fmt: skip
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == str(offline_settings.retry_after_s)
    # nothing configured to search in: a 503 too, only once the input itself is valid
    assert_error(offline_client.post("/v1/similar", data={"text": "a sofa"}), 503, "index")


def test_api_key_protects_all_but_health_and_public_docs(offline_settings):
    keyed = offline_settings.model_copy(update={"api_key": SecretStr("s3cret")})
    with TestClient(create_app(keyed)) as client:
        assert_error(client.post("/v1/predict/text", json={"text": "a sofa"}), 401, "API key")
        wrong = {"Authorization": "Bearer wrong"}
        assert_error(client.get("/metrics", headers=wrong), 401, "API key")
        assert_error(client.post("/v1/admin/reload-index", headers=wrong), 401, "API key")
        assert_error(client.get("/no/such/route"), 401, code="unauthorised")
        # any header value is only a wrong key (a non-ASCII one was once a 500)
        for odd in ("Bearer clé".encode(), b"Bearer \xff\xfe", b"Basic s3cret", b"Bearer"):
            response = client.get("/metrics", headers={"Authorization": odd})
            assert_error(response, 401, code="unauthorised")
        right = {"Authorization": "Bearer s3cret"}
        # past the key check, the request reaches the (absent) model server
        response = client.post("/v1/predict/text", json={"text": "a sofa"}, headers=right)
        assert_error(response, 503, "unavailable")
        assert client.get("/metrics", headers=right).status_code == 200
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["triton"] is False
        # the docs are behind the key like the API they describe, and load without a CDN
        assert_error(client.get("/openapi.json"), 401, code="unauthorised")
        assert_error(client.get("/docs"), 401, code="unauthorised")
        assert client.get("/openapi.json", headers=right).status_code == 200
        page = client.get("/docs", headers=right)
        assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
        assert "cdn" not in page.text.lower() and "http" not in page.text.split("<body>")[1]
        script = client.get("/docs/assets/swagger-ui-bundle.js", headers=right)
        assert script.status_code == 200 and len(script.content) > 100_000
    public = keyed.model_copy(update={"public_docs": True})
    with TestClient(create_app(public)) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs/assets/swagger-ui.css").status_code == 200
        assert_error(client.get("/metrics"), 401, code="unauthorised")


def test_each_key_opens_its_scope_and_those_below(offline_settings):
    keys = {"api_key": "reader", "write_key": "writer", "admin_key": "admin"}
    keyed = offline_settings.model_copy(update={k: SecretStr(v) for k, v in keys.items()})

    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    with TestClient(create_app(keyed)) as client:
        for key in keys.values():  # every key reads
            assert client.get("/metrics", headers=auth(key)).status_code == 200
        delete = "/v1/listings/L1"
        assert_error(client.delete(delete, headers=auth("reader")), 403, code="forbidden")
        for key in ("writer", "admin"):  # past the key: no index to delete from
            assert_error(client.delete(delete, headers=auth(key)), 503, code="index_unavailable")
        reload = "/v1/admin/reload-index"
        for key in ("reader", "writer"):
            assert_error(client.post(reload, headers=auth(key)), 403, "admin")
        assert_error(client.post(reload, headers=auth("admin")), 422, code="no_index")
        pin = client.put("/v1/admin/model-version", json={"version": 1}, headers=auth("writer"))
        assert_error(pin, 403, code="forbidden")
        assert client.get("/v1/admin/model-version", headers=auth("reader")).status_code != 403


def test_without_a_key_a_request_body_is_never_read(offline_settings):
    """The key is checked before the body is read: a caller without one cannot make the facade
    parse a form (and spool its files to disk)."""
    keyed = offline_settings.model_copy(update={"api_key": SecretStr("s3cret")})
    app = create_app(keyed)
    pulled: list[dict] = []
    answered: list[dict] = []

    async def receive() -> dict:
        pulled.append({})
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: dict) -> None:
        answered.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
        "method": "POST", "path": "/v1/predict/image", "raw_path": b"/v1/predict/image",
        "root_path": "", "query_string": b"", "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"),
                    (b"content-length", b"1000000")],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert answered[0]["status"] == 401 and pulled == []


def test_errors_are_counted_by_endpoint_and_status(offline_client):
    offline_client.post("/v1/predict/text", json={"text": ""})
    metrics = offline_client.get("/metrics").text
    assert 'fbmr_requests_total{endpoint="/v1/predict/text",status="422"}' in metrics
    assert 'fbmr_request_seconds_bucket{endpoint="/v1/predict/text"' in metrics


def test_a_body_that_trickles_in_is_cut_off_at_the_total_deadline(monkeypatch):
    """Each piece arrives inside the idle timeout, so only the deadline on the whole body ends
    it: a slow sender cannot hold a request (and its memory) for ever."""
    monkeypatch.setattr(middleware, "BODY_IDLE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(middleware, "BODY_TOTAL_TIMEOUT_S", 0.6)
    pieces = 0

    async def trickle() -> dict:
        nonlocal pieces
        pieces += 1
        await asyncio.sleep(0.1)  # the stimulus: a slow sender, one piece every 0.1 s
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def read_all(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass

    guard = middleware.BodyGuard(read_all, max_body_bytes=10**9)
    with pytest.raises(HTTPException) as cut:
        asyncio.run(guard({"type": "http"}, trickle, None))
    assert cut.value.status_code == 408 and "not complete" in str(cut.value.detail)
    # cut near 0.6 s (six pieces when idle): a bound that a loaded machine's slower sleeps can
    # only lower, and that a guard waiting for the idle timeout or the body's end would pass
    assert 2 <= pieces <= 8


def test_readyz_asks_triton_at_most_once_a_second(offline_settings, monkeypatch):
    """/readyz needs no key: a flood of it is answered from a copy, not with Triton calls."""
    from fbmr.serving.http.routes import ops
    from fbmr.serving.triton.inference import TritonModels

    asked: list[object] = []
    real = TritonModels.ready

    async def counted(self, version=None):
        asked.append(version)
        return await real(self, version)

    monkeypatch.setattr(TritonModels, "ready", counted)
    with TestClient(create_app(offline_settings)) as client:
        answers = [client.get("/readyz") for _ in range(20)]
        assert {a.status_code for a in answers} == {503}
        assert 1 <= len(asked) <= 2  # one look, two if the second fell past the copy's age
        monkeypatch.setattr(ops, "READYZ_CACHE_S", 0.0)
        client.get("/readyz")
        assert len(asked) >= 2


def test_listing_fields_ids_and_filters_are_bounded(offline_client, photo):
    """What one request can make the facade store or scan is bounded, and refused with the
    field's name before anything is embedded."""
    put = {"files": {"photo": ("p.png", photo)}}
    assert_error(
        offline_client.put("/v1/listings/ok-1", data={"name": "x" * 301}, **put), 422, "name"
    )
    too_far = {"name": "Oak chair", "location": "x" * 201}
    assert_error(offline_client.put("/v1/listings/ok-1", data=too_far, **put), 422, "location")
    for bad in ("a%0Ab", "a%20b", "%E2%82%AC", "-a", "x" * 201):
        answer = offline_client.put(f"/v1/listings/{bad}", data={"name": "Oak chair"}, **put)
        assert_error(answer, 422, "listing id", code="listing_id_invalid")
    query = {"text": "a sofa"}
    many = offline_client.post(
        "/v1/similar", data={**query, "exclude_id": [f"L{i}" for i in range(101)]}
    )
    assert_error(many, 422, "exclude_id", "at most 100")
    odd = offline_client.post("/v1/similar", data={**query, "exclude_id": ["L1", "x'] or id"]})
    assert_error(odd, 422, code="listing_id_invalid")
    far = offline_client.post("/v1/similar", data={**query, "location": "x" * 201})
    assert_error(far, 422, "location")
    # within every bound: past the checks, to the (absent) model server
    fine = offline_client.post("/v1/similar", data={**query, "exclude_id": ["L1", "shop:2"]})
    assert_error(fine, 503)


def test_a_pin_takes_a_version_number_only(offline_client):
    """`{"version": true}` once pinned version 1 (a bool is an int to a lax validator)."""
    for bad in (True, "2", 1.5, 0):
        answer = offline_client.put("/v1/admin/model-version", json={"version": bad})
        assert_error(answer, 422, "version")


def test_readyz_names_no_server_path(offline_settings):
    """/readyz needs no key: a refused version's cause names its files within the repository,
    not where the server keeps it."""
    from fbmr.serving.triton.versions import RolloutStatus

    where = offline_settings.model_repository.resolve()
    cause = f"image_encoder: failed to load {where}/image_encoder/2/model.onnx"
    with TestClient(create_app(offline_settings)) as client:
        state = client.app.state.facade
        state._record(RolloutStatus(in_use=1, pinned=None, refused={2: cause}))
        body = client.get("/readyz").json()
    assert body["refused"] == {"2": "image_encoder: failed to load image_encoder/2/model.onnx"}
    assert str(where) not in json.dumps(body)


def test_readyz_names_triton_s_log_by_its_name_alone(offline_settings, tmp_path):
    """A failed restart's cause names Triton's log, which lives outside the repository."""
    from dataclasses import asdict

    from fbmr.serving.triton.supervisor import SupervisorStatus

    log = tmp_path / "srv" / "triton.log"
    cause = f"tritonserver exited with code 1; its log ({log}) ends:"
    status_file = tmp_path / "triton-status.json"
    status_file.write_text(json.dumps(asdict(SupervisorStatus("restarting", 1, 2, cause))))
    settings = offline_settings.model_copy(update={"triton_status_file": status_file})
    with TestClient(create_app(settings)) as client:
        body = client.get("/readyz").json()
    assert "its log (triton.log) ends" in body["triton_process"], body
    assert str(tmp_path) not in json.dumps(body)
