"""Model versions: what the rollout serves, and a pin that holds the service at an exported
version (a rollback, or a roll forward to a chosen one) or releases it to the newest again.

The pin is a file in the model repository (`fbmr.serving.triton.versions.PIN_FILE`), so every facade
worker and replica on that repository follows it; the worker that gets the request applies it at
once and answers with the outcome.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from fbmr.core.artifacts import exported_versions
from fbmr.core.contract import MODEL_VERSION_PATH, ErrorCode
from fbmr.serving.http.deps import PROTECTED, State
from fbmr.serving.http.errors import ERROR_RESPONSES, ApiError, unavailable
from fbmr.serving.http.schemas import PinRequest, RolloutResponse
from fbmr.serving.service.state import FacadeState
from fbmr.serving.triton.versions import read_pin, write_pin

router = APIRouter(prefix=MODEL_VERSION_PATH, dependencies=PROTECTED)


def _response(state: FacadeState) -> RolloutResponse:
    status = state.rollout_status
    if status is None:
        raise unavailable("the rollout has not reached Triton yet", state.settings.retry_after_s)
    return RolloutResponse(
        model_version=status.in_use,
        pinned=status.pinned,
        refused=status.refused,
        rollout=status.summary(),
    )


@router.get("", response_model=RolloutResponse, responses=ERROR_RESPONSES)
async def rollout_status(state: State) -> RolloutResponse:
    """The version in use, the pin, and the refused versions with their causes."""
    return _response(state)


@router.put("", response_model=RolloutResponse, responses={**ERROR_RESPONSES, 409: {}})
async def pin_version(body: PinRequest, state: State) -> RolloutResponse:
    """Serve exported `version` from now on (null: follow the newest export again). The version
    is loaded and checked as any new one; when it is refused, the answer is a 409 with the cause,
    the version in use keeps serving and the pin stays as it was."""
    repository = state.settings.model_repository
    versions = await run_in_threadpool(exported_versions, repository)
    if body.version is not None and body.version not in versions:
        message = f"version {body.version} is not exported; exported: {versions}"
        raise ApiError(422, message, code=ErrorCode.version_not_exported)
    previous = await run_in_threadpool(read_pin, repository)
    try:
        await run_in_threadpool(write_pin, repository, body.version)
    except OSError as err:
        message = f"the pin could not be written: {err}"
        raise unavailable(message, state.settings.retry_after_s) from None
    await state.converge()
    response = _response(state)
    if body.version is not None and response.model_version != body.version:
        await run_in_threadpool(write_pin, repository, previous)  # the service stays as it was
        cause = response.refused.get(body.version, "not loaded")
        message = f"version {body.version} refused: {cause}; {response.rollout}"
        raise ApiError(409, message, code=ErrorCode.version_refused)
    return response
