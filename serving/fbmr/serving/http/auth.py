"""Who may call what: three keys, one per scope, checked before a request body is read.

    scope   routes                                              key that passes
    open    /healthz, /readyz (and the docs with public_docs)   none
    read    predictions, /v1/embed, /v1/similar, /metrics,      api_key, write_key or admin_key
            the seed-compatible routes, GET model-version
    write   PUT and DELETE /v1/listings/{id}                    write_key or admin_key
    admin   /v1/admin/reload-index, PUT model-version (pins)    admin_key

A scope whose own key is not set falls back to the scope below it (an unset `admin_key`: the
write rule; an unset `write_key`: the read rule), so one `api_key` guards everything as before,
and no key at all leaves the facade open (`fbmr serve` refuses that on a non-local address).

The check is ASGI middleware rather than a route dependency: FastAPI parses a form body (and
spools its files to disk) before it runs a route's dependencies, so a caller without a key could
otherwise make the facade read up to `max_body_bytes`. A wrong or missing key is a 401, a key of a
scope too low a 403. Keys are compared as bytes in constant time, so any header value (a
non-ASCII one included) is simply a wrong key.
"""

from __future__ import annotations

import hmac
from enum import IntEnum

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from fbmr.core.contract import (
    HEALTHZ_PATH,
    MODEL_VERSION_PATH,
    READYZ_PATH,
    RELOAD_INDEX_PATH,
    ErrorCode,
)
from fbmr.serving.http.errors import error_response

# the API's own description (Swagger UI, its assets and the schema it fetches): behind the read
# key like the API it describes, unless the docs are made public (`public_docs`)
DOCS_PATH, DOCS_ASSETS, OPENAPI_PATH = "/docs", "/docs/assets/", "/openapi.json"
OPEN_PATHS = frozenset((HEALTHZ_PATH, READYZ_PATH))
LISTINGS_PREFIX = "/v1/listings/"


class Access(IntEnum):
    """A route's scope; a key of a higher scope passes a lower one's routes."""

    open = 0
    read = 1
    write = 2
    admin = 3


def is_docs(path: str) -> bool:
    return path in (DOCS_PATH, OPENAPI_PATH) or path.startswith(DOCS_ASSETS)


def access_of(method: str, path: str, public_docs: bool = False) -> Access:
    """The scope a request needs (an unknown path needs the read key: 404s are for callers)."""
    if path in OPEN_PATHS or (public_docs and is_docs(path)):
        return Access.open
    if path == RELOAD_INDEX_PATH or (path == MODEL_VERSION_PATH and method != "GET"):
        return Access.admin
    if path.startswith(LISTINGS_PREFIX) and method in ("PUT", "DELETE"):
        return Access.write
    return Access.read


class Keys:
    """The facade's keys by scope (None where a scope takes the rule of the one below)."""

    def __init__(
        self,
        api_key: SecretStr | None,
        write_key: SecretStr | None = None,
        admin_key: SecretStr | None = None,
    ) -> None:
        def raw(key: SecretStr | None) -> bytes | None:
            return None if key is None else key.get_secret_value().encode()

        self._own = {
            Access.read: raw(api_key),
            Access.write: raw(write_key),
            Access.admin: raw(admin_key),
        }

    def required(self, needed: Access) -> Access:
        """The scope whose key a route of scope `needed` takes: its own, or where its key is
        unset the one below (open when no key below it is set either)."""
        scope = needed
        while scope > Access.open and self._own[scope] is None:
            scope = Access(scope - 1)
        return scope

    def level(self, token: bytes) -> Access:
        """The highest scope whose key `token` is (open when it is none of them)."""
        found = Access.open
        for scope, key in self._own.items():
            # every key compared, whatever matched, so the time does not tell which
            if key is not None and hmac.compare_digest(token, key):
                found = max(found, scope)
        return found


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header value, as sent (bytes)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


class KeyGuard:
    """ASGI middleware: a request without a key its route's scope accepts is answered here,
    before the app reads its body."""

    def __init__(self, app: ASGIApp, keys: Keys, public_docs: bool = False) -> None:
        self.app, self.keys, self.public_docs = app, keys, public_docs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = access_of(scope["method"], scope["path"], self.public_docs)
        required = self.keys.required(needed)
        token = bearer_token(dict(scope["headers"]).get(b"authorization"))
        level = self.keys.level(token) if token is not None else Access.open
        if level >= required:
            await self.app(scope, receive, send)
            return
        if level:  # a valid key, of a scope too low for this route
            message = f"this API key may not call this route (it takes the {required.name} key)"
            response = error_response(403, message, code=ErrorCode.forbidden)
        else:
            response = error_response(
                401,
                "missing or wrong API key (Authorization: Bearer <key>)",
                {"WWW-Authenticate": "Bearer"},
                ErrorCode.unauthorised,
            )
        await response(scope, receive, send)
