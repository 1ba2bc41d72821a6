"""Every error the facade answers is JSON `{"error": "...", "code": "..."}` with a status a caller
can act on: `code` is an `fbmr.core.contract.ErrorCode`, stable for programs (the client's batch
scoring records it), `error` the words for people.

Mistakes a caller can fix are 4xx with a readable message; Triton being away or overloaded is a
503 with Retry-After; anything unexpected is a 500 whose details go to the log, never a stack
trace in the answer. The HTTP layer raises `ApiError` with its status; the service layer raises
its own errors (`fbmr.serving.service.errors`), mapped to statuses here.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from fbmr.core.contract import ErrorCode
from fbmr.serving.http.schemas import ErrorResponse
from fbmr.serving.service.errors import Invalid, NotFound, ServiceError, Unavailable

log = logging.getLogger(__name__)

# the error answers each protected route documents in the OpenAPI schema
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (401, 413, 422, 503)
}


# what a status means when the answer names nothing narrower
CODE_OF_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.invalid_input,
    401: ErrorCode.unauthorised,
    404: ErrorCode.not_found,
    405: ErrorCode.method_not_allowed,
    408: ErrorCode.body_timeout,
    413: ErrorCode.too_large,
    415: ErrorCode.unsupported_media_type,
    422: ErrorCode.invalid_input,
    503: ErrorCode.model_unavailable,
}


class ApiError(Exception):
    """An error answered as JSON with its status code and error code (by default the status's
    own, `CODE_OF_STATUS`)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.code = code or CODE_OF_STATUS.get(status, ErrorCode.internal)


def unavailable(
    message: str, retry_after_s: int, code: ErrorCode = ErrorCode.model_unavailable
) -> ApiError:
    """A 503 that tells the caller when to try again."""
    return ApiError(503, message, {"Retry-After": str(retry_after_s)}, code)


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    code: ErrorCode | None = None,
) -> JSONResponse:
    code = code or CODE_OF_STATUS.get(status, ErrorCode.internal)
    return JSONResponse({"error": message, "code": code.value}, status, headers=headers)


async def _api_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiError)
    return error_response(err.status, err.message, err.headers, err.code)


# the status of each refusal of the service layer
STATUS_OF_SERVICE_ERROR: dict[type[ServiceError], int] = {
    Invalid: 422,
    NotFound: 404,
    Unavailable: 503,
}


async def _service_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ServiceError)
    status = next(s for kind, s in STATUS_OF_SERVICE_ERROR.items() if isinstance(err, kind))
    headers = None
    if isinstance(err, Unavailable):  # when to try again
        headers = {"Retry-After": str(err.retry_after_s)}
    return error_response(status, err.message, headers, err.code)


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def media_type(request: Request) -> str:
    """The request body's media type, without parameters (charset, boundary); "" when unsent."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def takes_form(request: Request) -> bool:
    """Whether the request's route reads its body as form fields and files."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    return any(isinstance(f.field_info, Form) for f in getattr(dependant, "body_params", ()))


async def _invalid_request(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    broken = [e for e in err.errors() if e.get("type") == "json_invalid"]
    if broken:  # a JSON body that does not parse: a 400, as the text route answers it
        cause = broken[0].get("ctx", {}).get("error", "")
        return error_response(400, f"invalid request: the body is not JSON ({cause})")
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
        problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    message = "invalid request: " + "; ".join(problems)
    content_type = media_type(request)
    if takes_form(request) and content_type not in FORM_TYPES:
        # e.g. JSON sent to a photo endpoint: its fields come out missing; say why
        sent = content_type or "a body without Content-Type"
        message += (
            f"; this endpoint takes multipart/form-data (a photo file, text fields), not {sent}"
        )
    return error_response(422, message)


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    # FastAPI's own: an unparsable body (400), an unknown path (404), a wrong method (405);
    # and the body guard's 408 and 413 (fbmr.serving.http.middleware)
    assert isinstance(err, HTTPException)
    status, message = err.status_code, str(err.detail)
    if status == 400 and "exceeded maximum size" in message:
        # Starlette's multipart parser refusing a form field or part over its size limit
        status, message = 413, f"form field over the size limit ({message})"
    elif status == 400:
        message = f"invalid request: {message}"
    return error_response(status, message, dict(err.headers or {}))


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return error_response(
        500, "internal error; the facade's log has the details", code=ErrorCode.internal
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
