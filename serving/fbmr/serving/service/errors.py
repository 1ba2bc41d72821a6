"""The service layer's refusals. They name what went wrong, not how HTTP says it: the HTTP layer
maps each class to a status (`fbmr.serving.http.errors`), so the service can be called, and
tested, without a web framework. `code`, when given, is the `ErrorCode` a caller's program reads;
by default the one of the status it maps to."""

from __future__ import annotations

from fbmr.core.contract import ErrorCode


class ServiceError(Exception):
    """A request the service will not answer as asked; `message` is for people."""

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Invalid(ServiceError):
    """The caller asked for something it can fix (an unknown category, a missing photo)."""


class NotFound(ServiceError):
    """What the caller named is not there (a listing id)."""


class Unavailable(ServiceError):
    """The facade cannot answer now (Triton away, no index yet, too many requests under way):
    the caller tries again after `retry_after_s`."""

    def __init__(
        self,
        message: str,
        retry_after_s: int,
        code: ErrorCode = ErrorCode.model_unavailable,
    ) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s
