"""Operations: liveness, readiness, Prometheus metrics and the index reload."""

from __future__ import annotations

import re
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from fbmr.core.contract import (
    HEALTHZ_PATH,
    METRICS_PATH,
    READYZ_PATH,
    RELOAD_INDEX_PATH,
    ErrorCode,
)
from fbmr.serving.http.deps import PROTECTED, State
from fbmr.serving.http.errors import ERROR_RESPONSES, ApiError, unavailable
from fbmr.serving.http.schemas import Health, Readiness, ReloadResponse
from fbmr.serving.service.errors import Unavailable
from fbmr.serving.service.state import FacadeState
from fbmr.serving.triton.supervisor import read_status

router = APIRouter()

# the folders of an absolute path (the file name stays): /readyz needs no key
# (not inside a URL's path, whose "/" follows a word character, ":" or another "/")
SERVER_FOLDERS = re.compile(r"(?<![\w.~/:])/(?:[^/\s()'\"]+/)+")
# how long one /readyz answer is reused: probes come every few seconds, a flood gets the copy
READYZ_CACHE_S = 1.0


@router.get(HEALTHZ_PATH, response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get(READYZ_PATH, response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: State) -> JSONResponse:
    """Readiness: Triton serves every ensemble of the model version in use, whose artifacts are
    loaded, and the similar-listing index is loaded (when the facade has one). A refused new
    version leaves the facade ready (it keeps serving the old one) and is named in `rollout`.

    Answered from a copy at most READYZ_CACHE_S old: it needs no key and asks Triton several
    things, so a flood of it must not cost Triton calls."""
    cached = state.readiness
    if cached is not None and time.monotonic() - cached[0] < READYZ_CACHE_S:
        return JSONResponse(cached[1], cached[2])
    body, status = await _readiness(state)
    state.readiness = (time.monotonic(), body, status)
    return JSONResponse(body, status)


async def _readiness(state: FacadeState) -> tuple[dict[str, object], int]:
    try:
        model_version: int | None = state.artifacts().version
    except Unavailable:
        model_version = None
    triton = model_version is not None and await _triton_ready(state, model_version)
    model_version = state.artifacts().version if model_version is not None else None
    index = state.index.current
    status = state.rollout_status
    status_file = state.settings.triton_status_file
    supervisor = read_status(status_file) if status_file else None
    # /readyz needs no key: the causes it gives name files relative to the model repository
    # (image_encoder/2/model.onnx), and any other file (Triton's log) by its name alone, never
    # where the server keeps them
    repository = f"{state.settings.model_repository.resolve()}/"

    def public(text: str) -> str:
        return SERVER_FOLDERS.sub("", text.replace(repository, ""))

    body = Readiness(
        triton=triton,
        models=model_version is not None,
        index=index is not None,
        index_version=index.version if index else None,
        model_version=model_version,
        rollout=public(status.summary()) if status else None,
        refused={v: public(why) for v, why in status.refused.items()} if status else {},
        pinned=status.pinned if status else None,
        triton_process=public(supervisor.summary()) if supervisor else None,
    )
    # a facade started without an index only classifies: it is ready without one
    index_ready = index is not None or state.index.index_dir is None
    ready = triton and index_ready
    return body.model_dump(), 200 if ready else 503


async def _triton_ready(state: FacadeState, version: int) -> bool:
    """Triton serves the ensembles of `version`, the one in use when asked, or a switch ran
    while asking: mid-switch the ensembles may already be at the next version (requests wait
    for the switch and answer from it), and a switch that ended while asking has moved the
    facade on to the version it made ready."""
    switching = state.switching
    if await state.models.ready(version):
        return True
    if switching or state.switching:
        return await state.models.ready()
    now = state.artifacts().version
    return now != version and await state.models.ready(now)


@router.get(METRICS_PATH, dependencies=PROTECTED, responses=ERROR_RESPONSES)
async def metrics(state: State) -> Response:
    """Prometheus metrics: requests and latencies by endpoint and status."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.post(
    RELOAD_INDEX_PATH,
    response_model=ReloadResponse,
    dependencies=PROTECTED,
    responses=ERROR_RESPONSES,
)
async def reload_index(state: State) -> ReloadResponse:
    """Load the index's CURRENT version now; requests in flight finish on the old one."""
    store = state.index
    if store.index_dir is None:
        raise ApiError(
            422, "the facade was started without an index directory", code=ErrorCode.no_index
        )
    try:
        changed = await run_in_threadpool(store.reload, True)
        state.readiness = None
    except (OSError, ValueError) as err:
        raise unavailable(
            f"index could not be loaded: {err}",
            state.settings.retry_after_s,
            ErrorCode.index_unavailable,
        ) from None
    return ReloadResponse(
        reloaded=changed, version=store.current.version if store.current else None
    )
