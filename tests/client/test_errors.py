"""Status code and body to typed error: the one mapping every client answer goes through."""

from __future__ import annotations

import pytest

from fbmr.client.errors import (
    ClientError,
    FbmrError,
    InvalidInput,
    NotFound,
    ServerError,
    TooLarge,
    Unauthorised,
    Unavailable,
    error_for,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, InvalidInput),
        (401, Unauthorised),
        (403, Unauthorised),
        (404, NotFound),
        (413, TooLarge),
        (422, InvalidInput),
        (418, ClientError),
        (500, ServerError),
        (503, Unavailable),
    ],
)
def test_each_status_has_its_error(status, kind):
    error = error_for(status, b'{"error": "what was wrong"}')
    assert type(error) is kind and isinstance(error, FbmrError)
    assert error.status == status and error.message == "what was wrong"
    assert str(error) == f"{status}: what was wrong"


def test_client_errors_are_not_server_errors():
    assert isinstance(error_for(422, b"{}"), ClientError)
    assert not isinstance(error_for(503, b"{}"), ClientError)
    assert isinstance(error_for(503, b"{}"), ServerError)


def test_message_from_any_body():
    assert error_for(502, b"<html>Bad gateway</html>").message == "<html>Bad gateway</html>"
    assert error_for(404, b'{"detail": "Not Found"}').message == "Not Found"
    assert error_for(500, b"").message == "(empty answer)"
    assert error_for(422, "caf\xe9 not valid".encode("latin-1")).message.startswith("caf")


def test_retry_after_is_read_in_seconds():
    assert error_for(503, b"{}", "2").retry_after == 2.0
    assert error_for(503, b"{}", None).retry_after is None
    # an HTTP date or garbage gives no hint (the client's own back-off applies)
    assert error_for(503, b"{}", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after is None
    assert error_for(503, b"{}", "-1").retry_after is None
