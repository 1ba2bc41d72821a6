"""What `Client` and `AsyncClient` (`fbmr.client.client`) share: `_Base` holds their settings,
the httpx connection pool and the retry policy; `_reaching` turns transport failures into
`ServerUnreachable`, which is retried as any transient error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from fbmr.client._calls import _Call
from fbmr.client.errors import ServerUnreachable
from fbmr.client.retry import DEFAULT_POLICY, TRANSIENT, RetryPolicy
from fbmr.core.contract import API_KEY_ENV, DEFAULT_FACADE_URL

if TYPE_CHECKING:
    from stamina._core import _RetryContextIterator

USER_AGENT = "fbmr-client/0.1"
H = TypeVar("H", httpx.Client, httpx.AsyncClient)  # the httpx client a facade client holds
T = TypeVar("T", httpx.BaseTransport, httpx.AsyncBaseTransport)  # and its transport


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    headers = {"User-Agent": USER_AGENT}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


@contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Transport failures as `ServerUnreachable` (retried, as any TRANSIENT error)."""
    try:
        yield
    except httpx.TransportError as err:
        what = "timed out" if isinstance(err, httpx.TimeoutException) else "unreachable"
        if isinstance(err, httpx.ConnectError) and "refused" in str(err).lower():
            what = "refused the connection (nothing listens there?)"
        message = f"{url} {what}: {type(err).__name__}: {err}".rstrip(": ")
        unreachable = ServerUnreachable(message)
        unreachable.refused = isinstance(err, httpx.ConnectError)
        raise unreachable from err


class _Base(Generic[H, T]):
    """What both clients share: their settings, the connection pool's and the retries."""

    def __init__(
        self,
        url: str = DEFAULT_FACADE_URL,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy = DEFAULT_POLICY,
        transport: T | None = None,
        max_connections: int = 100,
    ) -> None:
        """`url`: the facade; `api_key`: its bearer token (default: $FBMR_API_KEY); `timeout_s`:
        of one request; `retry`: how 503s and transport failures are retried; `transport`:
        httpx's (tests); `max_connections`: of the pool, all kept alive."""
        self.url = url.rstrip("/")
        self.retry = retry
        self._http: H = self._open(
            transport,
            base_url=self.url,
            headers=_headers(api_key),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    def _open(self, transport: T | None, **options: Any) -> H:
        """The httpx client of this kind."""
        raise NotImplementedError

    def _attempts(self, call: _Call[Any]) -> _RetryContextIterator:
        """The retry context for `call` (iterated sync or async by the client's `_send`)."""
        return (self.retry if call.retry else RetryPolicy.none()).context(TRANSIENT)

    def _reaching(self) -> AbstractContextManager[None]:
        return _reaching(self.url)
