"""Typed errors for the facade's answers, and one function that maps an answer to its error.

The facade answers every failure as JSON `{"error": "...", "code": "..."}` with a status code; a
caller catches the error it can act on (`InvalidInput`: fix the listing; `Unavailable`: come back
later), tells finer cases apart by `code` (an `fbmr.core.contract.ErrorCode`: stable, where the
wording is not) and reads the server's own words in `message`. Transport failures (connection
refused, a timeout) become `ServerUnreachable`, so no `httpx` exception leaks out of the client.
"""

from __future__ import annotations

import json

from fbmr.core.contract import ErrorCode


class FbmrError(Exception):
    """Anything the facade refused or could not answer; `status` is None when it never answered,
    `code` when the answer named no code (a server older than codes, or not the facade)."""

    def __init__(
        self, message: str, status: int | None = None, code: ErrorCode | None = None
    ) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.message = message
        self.status = status
        self.code = code


class ClientError(FbmrError):
    """A 4xx: the request itself is wrong; sending it again gives the same answer."""


class InvalidInput(ClientError):
    """422 (or 400): a corrupt or empty photo, empty text, a missing field, `k` out of range."""


class TooLarge(ClientError):
    """413: a photo over the pixel or byte limit, or text over the length limit."""


class Unauthorised(ClientError):
    """401 (or 403): the API key is missing or wrong."""


class NotFound(ClientError):
    """404: no such endpoint (is the URL the facade's?), or no such listing (`code`
    `listing_not_found`, from `delete_listing`)."""


class ServerError(FbmrError):
    """A 5xx other than 503: the facade failed; its log has the details."""


class Unavailable(ServerError):
    """503: the model server is away, not ready or overloaded, or no index is loaded yet.

    Raised once the client's retries are spent; `retry_after` is the server's hint in seconds."""

    def __init__(
        self,
        message: str,
        status: int | None = 503,
        retry_after: float | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        super().__init__(message, status, code)
        self.retry_after = retry_after


class ServerUnreachable(FbmrError):
    """No answer at all: connection refused or reset, or a timeout (once retries are spent).
    `refused`: nothing listened at the address."""

    refused: bool = False


_BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidInput,
    401: Unauthorised,
    403: Unauthorised,
    404: NotFound,
    413: TooLarge,
    422: InvalidInput,
}


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def error_code(body: bytes | str) -> ErrorCode | None:
    """The answer's `code`, when it is one this client knows."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    data = _json(text)
    code = data.get("code") if isinstance(data, dict) else None
    return ErrorCode(code) if isinstance(code, str) and code in ErrorCode.__members__ else None


def error_message(body: bytes | str) -> str:
    """The server's message: the `error` field of a JSON body, else the body as text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    data = _json(text)
    if data is None:
        return text.strip() or "(empty answer)"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    if isinstance(data, dict) and "detail" in data:  # a plain FastAPI/Starlette error
        return str(data["detail"])
    return text.strip()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (dates are not used by the facade)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_for(status: int, body: bytes | str, retry_after: str | None = None) -> FbmrError:
    """The typed error for an answer with status code `status` (>= 400) and body `body`."""
    message, code = error_message(body), error_code(body)
    if status == 503:
        return Unavailable(message, status, parse_retry_after(retry_after), code)
    if status in _BY_STATUS:
        return _BY_STATUS[status](message, status, code)
    if 400 <= status < 500:
        return ClientError(message, status, code)
    return ServerError(message, status, code)
