"""The FastAPI facade: listings in, categories and similar listings out, Triton behind.

Photos are decoded and preprocessed and texts tokenised here, with fbmr.core, exactly as in
training; the models run in Triton (ensembles over gRPC); similar listings come from a FAISS
index that is reloaded without a pause when a new version is built.

Every failure a caller can cause is a 4xx JSON error with a readable message; Triton being away
or overloaded is a 503 with Retry-After; nothing returns a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.image import ImageDecodeError, ImageTooLargeError
from fbmr.serving.index import IndexStore
from fbmr.serving.inference import (
    Kind,
    TritonModels,
    TritonUnavailable,
    image_input,
    kind_of,
    text_input,
)
from fbmr.serving.schemas import (
    EmbedResponse,
    ErrorResponse,
    Health,
    Prediction,
    Readiness,
    ReloadResponse,
    SimilarListing,
    SimilarResponse,
    TextQuery,
)
from fbmr.serving.settings import FacadeSettings

log = logging.getLogger(__name__)

# what a query must hold to be answered in each embedding space
QUERY_INPUTS = {
    Kind.image: "a photo only",
    Kind.text: "a text only",
    Kind.combined: "a photo and a text",
}
ERRORS = {status: {"model": ErrorResponse} for status in (401, 413, 422, 503)}


class ApiError(Exception):
    """An error answered as JSON with its status code."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fbmr_requests", "Requests by endpoint and status code.", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fbmr_request_seconds", "Request latency by endpoint.", ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.errors = Counter(
            "fbmr_errors", "Error answers by endpoint and reason.", ["endpoint", "reason"],
            registry=self.registry,
        )  # fmt: skip


def create_app(settings: FacadeSettings | None = None) -> FastAPI:
    """The facade for `settings` (default: from FBMR_* environment variables)."""
    settings = settings or FacadeSettings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.models = TritonModels(settings.triton_url, settings.triton_timeout_s)
        app.state.artifacts = None
        app.state.index = IndexStore(settings.index_dir)
        app.state.index.reload()
        watcher = asyncio.create_task(_watch_index(app.state.index, settings.index_poll_s))
        yield
        watcher.cancel()
        await app.state.models.close()

    app = FastAPI(
        title="fbmr",
        summary="Categorise marketplace listings from photo and text; find similar listings.",
        version="1",
        lifespan=lifespan,
    )
    bearer = HTTPBearer(auto_error=False)

    async def authorised(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if settings.api_key is None:
            return
        expected = settings.api_key.get_secret_value()
        if credentials is None or not secrets.compare_digest(credentials.credentials, expected):
            raise ApiError(
                401,
                "missing or wrong API key (Authorization: Bearer <key>)",
                {"WWW-Authenticate": "Bearer"},
            )

    protected = [Depends(authorised)]

    # -- errors ---------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse({"error": "invalid request: " + "; ".join(problems)}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        # FastAPI's own: an unparsable body (400), an unknown path (404), a wrong method (405)
        message = str(err.detail)
        if err.status_code == 400:
            message = f"invalid request: {message}"
        return JSONResponse({"error": message}, err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "internal error; the facade's log has the details"}, 500)

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            limit = settings.max_body_bytes
            message = f"request body of {length} bytes is over the limit of {limit}"
            response = JSONResponse({"error": message}, 413)
        else:
            response = await call_next(request)
        # the route's path template, so that label values stay few whatever URLs are asked for
        route = request.scope.get("route")
        endpoint = route.path if route else "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        if response.status_code >= 400:
            metrics.errors.labels(endpoint, str(response.status_code)).inc()
        return response

    # -- helpers --------------------------------------------------------------------------

    def artifacts() -> ModelArtifacts:
        """The latest export's tokeniser, labels and image settings (read once, on first use)."""
        if app.state.artifacts is None:
            try:
                app.state.artifacts = ModelArtifacts.load(settings.model_repository)
            except (FileNotFoundError, ValueError) as err:
                raise ApiError(503, f"no model artifacts: {err}", _retry()) from None
        return app.state.artifacts

    def _retry() -> dict[str, str]:
        return {"Retry-After": str(settings.retry_after_s)}

    async def read_photo(photo: UploadFile) -> bytes:
        data = await photo.read(settings.max_body_bytes + 1)
        if len(data) > settings.max_body_bytes:
            raise ApiError(413, f"photo over the limit of {settings.max_body_bytes} bytes")
        if not data:
            raise ApiError(422, "photo: empty file")
        return data

    async def photo_tensor(photo: UploadFile):
        data = await read_photo(photo)
        try:
            return await run_in_threadpool(image_input, artifacts(), data, settings.max_pixels)
        except ImageTooLargeError as err:
            raise ApiError(413, f"photo: {err}") from None
        except ImageDecodeError as err:
            raise ApiError(422, f"photo: {err}") from None

    def text_tensor(text: str | None):
        text = (text or "").strip()
        if not text:
            raise ApiError(422, "text: empty; give the listing's name and/or description")
        if len(text) > settings.max_text_chars:
            raise ApiError(
                413, f"text: {len(text)} characters, over the limit of {settings.max_text_chars}"
            )
        return text_input(artifacts(), text)

    async def run(kind: Kind, image=None, token_ids=None):
        try:
            return await app.state.models.infer(kind, image=image, token_ids=token_ids)
        except TritonUnavailable as err:
            raise ApiError(
                503, f"model server unavailable, retry later ({err})", _retry()
            ) from None

    def prediction(probabilities) -> Prediction:
        ranked = artifacts().labels.rank(probabilities)
        return Prediction(
            pred=ranked[0][0], classes=[c for c, _ in ranked], probabilities=[p for _, p in ranked]
        )

    def query_kind(photo: UploadFile | None, text: str | None) -> Kind:
        if photo is None and text is None:
            raise ApiError(422, "give a photo, a text, or both")
        return kind_of(photo is not None, text is not None)

    async def query(photo: UploadFile | None, text: str | None) -> tuple[Kind, object]:
        """The embedding kind and Triton's answer for a photo, a text, or both."""
        kind = query_kind(photo, text)
        image = await photo_tensor(photo) if photo is not None else None
        tokens = text_tensor(text) if text is not None else None
        return kind, await run(kind, image, tokens)

    # -- endpoints ------------------------------------------------------------------------

    @app.post(
        "/v1/predict/image", response_model=Prediction, responses=ERRORS, dependencies=protected
    )
    async def predict_image(
        photo: UploadFile = File(..., description="The listing's photo."),
    ) -> Prediction:
        """Category of a listing from its photo."""
        result = await run(Kind.image, image=await photo_tensor(photo))
        return prediction(result.probabilities)

    @app.post(
        "/v1/predict/text", response_model=Prediction, responses=ERRORS, dependencies=protected
    )
    async def predict_text(body: TextQuery) -> Prediction:
        """Category of a listing from its name and/or description."""
        result = await run(Kind.text, token_ids=text_tensor(body.text))
        return prediction(result.probabilities)

    @app.post(
        "/v1/predict/combined", response_model=Prediction, responses=ERRORS, dependencies=protected
    )
    async def predict_combined(
        photo: UploadFile = File(..., description="The listing's photo."),
        text: str = Form(..., description="The listing's name and/or description."),
    ) -> Prediction:
        """Category of a listing from its photo and text together."""
        image, tokens = await photo_tensor(photo), text_tensor(text)
        result = await run(Kind.combined, image, tokens)
        return prediction(result.probabilities)

    @app.post("/v1/embed", response_model=EmbedResponse, responses=ERRORS, dependencies=protected)
    async def embed(
        photo: UploadFile | None = File(None, description="The listing's photo."),
        text: str | None = Form(None, description="The listing's name and/or description."),
    ) -> EmbedResponse:
        """The listing's embedding: image (photo only), text (text only) or combined (both)."""
        kind, result = await query(photo, text)
        return EmbedResponse(kind=kind, embedding=result.embedding.tolist())

    @app.post(
        "/v1/similar", response_model=SimilarResponse, responses=ERRORS, dependencies=protected
    )
    async def similar(
        photo: UploadFile | None = File(None, description="The listing's photo."),
        text: str | None = Form(None, description="The listing's name and/or description."),
        k: int = Form(10, description="How many similar listings."),
    ) -> SimilarResponse:
        """The k catalogue listings nearest to a photo, a text, or both."""
        if not 1 <= k <= settings.max_k:
            raise ApiError(422, f"k: must be between 1 and {settings.max_k}, got {k}")
        index = app.state.index.current  # this request keeps this version even if one is swapped in
        if index is None:
            raise ApiError(503, "no similar-listing index loaded yet (fbmr index build)", _retry())
        if (kind := query_kind(photo, text)) not in index.indexes:
            accepted = " or ".join(QUERY_INPUTS[k] for k in index.indexes)
            raise ApiError(
                422,
                f"this index holds no {kind.value} embeddings, so it cannot answer a query "
                f"with {QUERY_INPUTS[kind]}; send {accepted}",
            )
        kind, result = await query(photo, text)
        hits = index.search(kind, result.embedding, k)
        return SimilarResponse(
            kind=kind,
            index_version=index.version,
            listings=[SimilarListing(**hit.listing, score=hit.score) for hit in hits],
        )

    @app.post(
        "/v1/admin/reload-index",
        response_model=ReloadResponse,
        responses=ERRORS,
        dependencies=protected,
    )
    async def reload_index() -> ReloadResponse:
        """Load the index's CURRENT version now; requests in flight finish on the old one."""
        store = app.state.index
        if store.index_dir is None:
            raise ApiError(422, "the facade was started without an index directory")
        try:
            changed = await run_in_threadpool(store.reload, True)
        except (OSError, ValueError) as err:
            raise ApiError(503, f"index could not be loaded: {err}", _retry()) from None
        return ReloadResponse(
            reloaded=changed, version=store.current.version if store.current else None
        )

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> JSONResponse:
        """Readiness: Triton ready with every ensemble loaded, model artifacts and index loaded."""
        triton = await app.state.models.ready()
        try:
            artifacts()
            have_artifacts = True
        except ApiError:
            have_artifacts = False
        index = app.state.index.current
        body = Readiness(
            triton=triton,
            models=have_artifacts,
            index=index is not None,
            index_version=index.version if index else None,
        )
        ready = triton and have_artifacts and index is not None
        return JSONResponse(body.model_dump(), 200 if ready else 503)

    @app.get("/metrics", dependencies=protected)
    async def prometheus() -> Response:
        """Prometheus metrics: requests, latencies and errors by endpoint."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _watch_index(store: IndexStore, every_s: float) -> None:
    """Pick up a new index version when its CURRENT pointer changes."""
    if every_s <= 0 or store.index_dir is None:
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(store.reload)
        except (OSError, ValueError) as err:
            log.warning("index not reloaded: %s", err)
