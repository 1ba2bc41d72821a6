"""What the facade records about the request it is answering: its id (from `X-Request-ID`, or
made here), and which model and index versions answered. Kept in a context variable so that the
Triton call deep in a route can pass the same id on (one request followed across both logs), and
the access log can say which versions answered, without threading them through every signature.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = "X-Request-ID"
# what a caller's id may look like: short, and safe to write into a log line or a header
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass
class RequestInfo:
    request_id: str
    model_version: int | None = None
    index_version: str | None = None


_current: ContextVar[RequestInfo | None] = ContextVar("fbmr_request", default=None)


def request_id_from(header: str | None) -> str:
    """The caller's id when it is a usable one, else a new one."""
    if header and _ACCEPTED_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def begin(request_id: str) -> RequestInfo:
    info = RequestInfo(request_id)
    _current.set(info)
    return info


def current() -> RequestInfo | None:
    """The request being answered in this context (None outside a request)."""
    return _current.get()
