"""Client and AsyncClient against the real facade (and Triton behind it): every method, typed
errors for each refusal, the API key, retries on 503 and on no answer at all."""

from __future__ import annotations

import asyncio
import io
import re
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from fbmr.client import (
    AsyncClient,
    Client,
    InvalidInput,
    ListingText,
    ModelVersions,
    Prediction,
    ServerUnreachable,
    TooLarge,
    Unauthorised,
    Unavailable,
)
from fbmr.client.retry import RetryPolicy
from fbmr.core.contract import (
    API_KEY_ENV,
    MAX_PHOTOS,
    PREDICT_COMBINED_PATH,
    ErrorCode,
    Kind,
)
from tests.client.conftest import API_KEY, QUICK_RETRY
from tests.helpers import free_ports


def _check_prediction(prediction: Prediction) -> None:
    assert prediction.pred == prediction.classes[0]
    assert len(prediction.classes) == len(set(prediction.classes)) == len(prediction.probabilities)
    assert prediction.probabilities == sorted(prediction.probabilities, reverse=True)
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert prediction.top(2) == list(
        zip(prediction.classes[:2], prediction.probabilities[:2], strict=True)
    )


def _same(a: Prediction, b: Prediction) -> bool:
    """The same prediction, up to float noise (Triton batches concurrent requests together)."""
    return a.classes == b.classes and np.allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_predict_each_kind(facade_url, listing):
    photo, text, _ = listing
    with Client(facade_url) as client:
        image = client.predict_image(photo)
        words = client.predict_text(text)
        both = client.predict_combined(photo, text)
        served = client.ready().model_version
        for prediction in (image, words, both):
            _check_prediction(prediction)
            assert prediction.model_version == served is not None
        # predict() picks the model by what it is given
        assert _same(client.predict(photo=photo), image)
        assert _same(client.predict(text=text), words)
        assert _same(client.predict(photo=photo, text=text), both)
        with pytest.raises(ValueError, match="photo, a text"):
            client.predict()


def test_a_listing_may_be_sent_as_its_fields(facade_url, listing):
    photo, text, _ = listing
    raw = ListingText(name=f"{text} | in Leeds, West Yorkshire | Gumtree", description="")
    with Client(facade_url) as client:
        # the title as the marketplace wrote it reads as the cleaned text training saw
        assert _same(client.predict_text(raw), client.predict_text(text))
        assert _same(client.predict_combined(photo, raw), client.predict_combined(photo, text))
        assert client.embed(text=raw).kind is Kind.text


def test_a_photo_may_be_a_path_bytes_a_file_or_a_pil_image(facade_url, listing, tmp_path):
    photo, _, _ = listing
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo)
    with Client(facade_url) as client:
        reference = client.predict_image(photo)
        assert _same(client.predict_image(path), reference)
        assert _same(client.predict_image(str(path)), reference)
        assert _same(client.predict_image(io.BytesIO(photo)), reference)
        with path.open("rb") as f:
            assert _same(client.predict_image(f), reference)
        # a PIL image travels as lossless PNG: the same pixels, so the same prediction
        from_pil = client.predict_image(Image.open(io.BytesIO(photo)))
        assert from_pil.classes == reference.classes
        assert np.allclose(from_pil.probabilities, reference.probabilities, atol=1e-5)


def test_embed_similar_health_ready_reload(facade_url, listing):
    photo, text, _ = listing
    with Client(facade_url) as client:
        served = client.ready().model_version
        embeddings = {
            Kind.image: client.embed(photo=photo),
            Kind.text: client.embed(text=text),
            Kind.combined: client.embed(photo=photo, text=text),
        }
        sent = {
            Kind.image: {"files": {"photo": ("p.jpg", photo)}},
            Kind.text: {"data": {"text": text}},
            Kind.combined: {"files": {"photo": ("p.jpg", photo)}, "data": {"text": text}},
        }
        for kind, embedding in embeddings.items():
            assert embedding.kind is kind and embedding.model_version == served
            assert embedding.embedding is embedding.vector
            assert embedding.vector.dtype == np.float32 and embedding.vector.ndim == 1
            # the vector the API answers, every float of it (the client parses, never changes)
            raw = httpx.post(f"{facade_url}/v1/embed", timeout=30, **sent[kind]).json()
            assert raw["kind"] == kind.value, raw
            np.testing.assert_allclose(embedding.vector, raw["embedding"], rtol=1e-6, atol=1e-7)
        similar = client.similar(photo=photo, text=text, k=5)
        assert similar.kind is Kind.combined and len(similar.listings) == 5
        assert similar.model_version == served
        assert similar.rank_scores == sorted(similar.rank_scores, reverse=True)
        assert len(set(similar.ids)) == 5
        assert client.health() is True
        ready = client.ready()
        assert ready.ready and ready.triton and ready.models and ready.index
        reload = client.reload_index()
        assert reload.reloaded is True  # forced: the version on disk is loaded again
        assert reload.version == ready.index_version == similar.index_version


def test_model_versions_and_a_pin_of_a_version_never_exported(facade_url):
    # (a pin that takes effect, and the rollback under load, are
    # tests/serving/triton/test_rollout.py; here nothing is written into the session's repository)
    with Client(facade_url) as client:
        versions = client.model_versions()
        assert versions == ModelVersions(1, None, {}, "serving version 1")
        assert client.ready().model_version == 1
        assert client.ready().rollout == "serving version 1"
        with pytest.raises(InvalidInput, match="version 99 is not exported"):
            client.pin_model_version(99)
        assert client.model_versions() == versions

    async def asynchronously() -> ModelVersions:
        async with AsyncClient(facade_url) as client:
            return await client.model_versions()

    assert asyncio.run(asynchronously()) == versions


def test_async_client_mirrors_the_sync_one(facade_url, listing):
    photo, text, _ = listing

    async def main() -> tuple:
        async with AsyncClient(facade_url) as client:
            return await asyncio.gather(
                client.predict(photo=photo),
                client.predict_image(photo),
                client.predict_text(text),
                client.predict_combined(photo, text),
                client.embed(photo=photo, text=text),
                client.similar(text=text, k=3),
                client.health(),
                client.ready(),
                client.reload_index(),
                *(client.predict_text(text) for _ in range(8)),
            )

    answers = asyncio.run(main())
    with Client(facade_url) as client:
        assert _same(answers[0], answers[1]) and _same(answers[1], client.predict_image(photo))
        assert _same(answers[2], client.predict_text(text))
        assert _same(answers[3], client.predict_combined(photo, text))
        embedded = client.embed(photo=photo, text=text).vector
        # up to float noise: concurrent requests are batched together
        assert np.allclose(answers[4].vector, embedded, atol=1e-4)
        assert answers[5].ids == client.similar(text=text, k=3).ids
    assert (
        answers[6] is True and answers[7].ready and answers[8].version == answers[5].index_version
    )
    assert all(_same(a, answers[2]) for a in answers[9:])


def _count(metrics: str, endpoint: str, status: int) -> float:
    pattern = rf'fbmr_requests_total{{endpoint="{re.escape(endpoint)}",status="{status}"}} (\S+)'
    match = re.search(pattern, metrics)
    return float(match.group(1)) if match else 0.0


def test_typed_errors_carry_the_servers_message_and_are_not_retried(facade, facade_url, listing):
    photo, _, _ = listing
    before = _count(facade.get("/metrics").text, "/v1/predict/image", 422)
    with Client(facade_url) as client:
        with pytest.raises(InvalidInput, match="photo") as corrupt:
            client.predict_image(b"not a photo")
        assert corrupt.value.status == 422 and "photo" in corrupt.value.message
        with pytest.raises(InvalidInput, match="empty"):
            client.predict_text("   ")
        with pytest.raises(InvalidInput, match="k: must be between"):
            client.similar(photo=photo, k=0)
        with pytest.raises(TooLarge) as long_text:
            client.predict_text("word " * 1_000)
        assert long_text.value.status == 413 and "limit" in long_text.value.message
        with pytest.raises(TooLarge):
            client.predict_image(photo + b"\0" * 2_000_000)  # over the body limit
    after = _count(facade.get("/metrics").text, "/v1/predict/image", 422)
    assert after - before == 1  # sent once: a 4xx is never retried


def test_api_key_from_argument_or_environment(keyed_facade_url, facade_url, listing, monkeypatch):
    _, text, _ = listing
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with Client(keyed_facade_url) as client:
        assert client.health() is True  # health checks stay open
        with pytest.raises(Unauthorised) as missing:
            client.predict_text(text)
        assert missing.value.status == 401 and "API key" in missing.value.message
    with Client(keyed_facade_url, api_key="wrong") as client, pytest.raises(Unauthorised):
        client.reload_index()
    with Client(keyed_facade_url, api_key=API_KEY) as client:
        _check_prediction(client.predict_text(text))
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    with Client(keyed_facade_url) as client:
        _check_prediction(client.predict_text(text))

    async def keyed() -> Prediction:
        async with AsyncClient(keyed_facade_url) as client:
            return await client.predict_text(text)

    _check_prediction(asyncio.run(keyed()))
    # a key sent to an open facade does no harm
    with Client(facade_url) as client:
        _check_prediction(client.predict_text(text))


def test_503_is_retried_honouring_retry_after_then_raised(tritonless_facade_url, listing):
    _, text, _ = listing
    with (
        Client(tritonless_facade_url, retry=RetryPolicy.none()) as client,
        pytest.raises(Unavailable) as once,
    ):
        client.predict_text(text)
    assert once.value.status == 503 and once.value.retry_after == 1.0
    # three attempts, two waits of Retry-After (1 s) plus jitter, rather than stamina's 0.05 s
    policy = RetryPolicy(attempts=3, timeout_s=30, wait_initial_s=0.05, wait_jitter_s=0.1)
    with Client(tritonless_facade_url, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="model server unavailable"):
            client.predict_text(text)
        # at least the two Retry-After waits; the upper bound is room for a loaded machine (the
        # attempts themselves take milliseconds), not a speed requirement
        assert 2.0 <= time.monotonic() - started < 10

    async def gone() -> None:
        async with AsyncClient(tritonless_facade_url, retry=policy) as client:
            await client.predict_text(text)

    started = time.monotonic()
    with pytest.raises(Unavailable):
        asyncio.run(gone())
    assert 2.0 <= time.monotonic() - started < 10  # (as above)
    # readiness is an answer, not an error
    with Client(tritonless_facade_url) as client:
        ready = client.ready()
    assert ready.ready is False and ready.triton is False and ready.index is True


def test_no_answer_is_retried_then_a_typed_error(listing):
    _, text, _ = listing
    (port,) = free_ports(1)
    with (
        Client(f"http://127.0.0.1:{port}", retry=QUICK_RETRY) as client,
        pytest.raises(ServerUnreachable) as err,
    ):
        client.predict_text(text)
    assert not isinstance(err.value, httpx.HTTPError)
    assert isinstance(err.value.__cause__, httpx.ConnectError)

    async def unreachable() -> None:
        async with AsyncClient(f"http://127.0.0.1:{port}", retry=QUICK_RETRY) as client:
            await client.predict_text(text)

    with pytest.raises(ServerUnreachable):
        asyncio.run(unreachable())


def test_both_clients_send_the_same_request_through_their_transport():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    with Client("http://facade/", "k", transport=httpx.MockTransport(answer)) as client:
        assert client.health() is True

    async def health() -> bool:
        transport = httpx.MockTransport(answer)
        async with AsyncClient("http://facade", "k", transport=transport) as client:
            return await client.health()

    assert asyncio.run(health()) is True
    first, second = seen
    assert str(first.url) == str(second.url) == "http://facade/healthz"
    for request in seen:
        assert request.headers["Authorization"] == "Bearer k"
        assert request.headers["User-Agent"].startswith("fbmr-client/")


def test_several_photos_go_as_repeated_parts_and_too_many_are_refused_unsent():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"pred": "a", "classes": ["a"], "probabilities": [1.0]})

    photos = [f"photo {i}".encode() for i in range(3)]
    with Client("http://facade/", transport=httpx.MockTransport(answer)) as client:
        client.predict(photos, "a bike")
        client.predict_image(tuple(photos[:1]))
        with pytest.raises(InvalidInput) as many:
            client.predict_image([b"x"] * (MAX_PHOTOS + 1))
        with pytest.raises(InvalidInput) as none:
            client.similar([], "a bike")
    assert many.value.code == ErrorCode.too_many_photos
    assert none.value.code == ErrorCode.no_input
    assert len(seen) == 2  # the refused ones never left
    combined, single = (request.read() for request in seen)
    assert str(seen[0].url).endswith(PREDICT_COMBINED_PATH)
    assert combined.count(b'data; name="photo"') == 3 and combined.count(b'data; name="text"') == 1
    assert [combined.index(p) for p in photos] == sorted(combined.index(p) for p in photos)
    assert single.count(b'data; name="photo"') == 1


def test_a_refused_connection_gives_up_in_seconds_where_a_reset_is_retried():
    attempts = {"refused": 0, "reset": 0}

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts["refused"] += 1
        raise httpx.ConnectError("[Errno 111] Connection refused")

    def reset(request: httpx.Request) -> httpx.Response:
        attempts["reset"] += 1
        raise httpx.ReadError("connection reset by peer")

    began = time.monotonic()
    with Client("http://facade", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(ServerUnreachable, match="refused the connection") as err:
            client.health()  # not retried at all (a health check)
        assert err.value.refused and attempts["refused"] == 1
        attempts["refused"] = 0
        with pytest.raises(ServerUnreachable):
            client.predict_text("a bike")
    # the default policy (8 tries in 60 s, about 16 s of waits) stops once its 2 s of refused
    # tries have passed: its last wait is cut to what is left of them, not run past
    assert time.monotonic() - began < 3  # (the waits end at 2 s; the rest is a loaded machine)
    assert 2 <= attempts["refused"] < 8
    quick = RetryPolicy(attempts=4, wait_initial_s=0.01, wait_max_s=0.01, wait_jitter_s=0)
    transport = httpx.MockTransport(reset)
    with (
        Client("http://facade", transport=transport, retry=quick) as client,
        pytest.raises(ServerUnreachable) as err,
    ):
        client.predict_text("a bike")
    assert attempts["reset"] == 4 and not err.value.refused
