"""The service layer's errors reach a caller as the HTTP layer's own did: each class mapped to its
status, its ErrorCode (by default the status's), and Retry-After on an Unavailable."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fbmr.core.contract import ErrorCode
from fbmr.serving.http.errors import STATUS_OF_SERVICE_ERROR, install_error_handlers
from fbmr.serving.service.errors import Invalid, NotFound, ServiceError, Unavailable
from tests.helpers import assert_error

RAISED: dict[str, ServiceError] = {
    "invalid": Invalid("category: 'Boats' is not a category"),
    "not-found": NotFound("no listing 'x' in the index", ErrorCode.listing_not_found),
    "unavailable": Unavailable("no similar-listing index", 7, ErrorCode.index_unavailable),
}


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/{name}")
    async def refuse(name: str) -> None:
        raise RAISED[name]

    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("invalid", 422, ErrorCode.invalid_input),
        ("not-found", 404, ErrorCode.listing_not_found),
        ("unavailable", 503, ErrorCode.index_unavailable),
    ],
)
def test_each_service_error_has_its_status_and_code(client, name, status, code):
    response = client.get(f"/{name}")
    assert_error(response, status, RAISED[name].message, code=code.value)
    retry_after = response.headers.get("Retry-After")
    assert retry_after == ("7" if name == "unavailable" else None)


def test_every_service_error_has_a_status():
    assert set(STATUS_OF_SERVICE_ERROR) == set(ServiceError.__subclasses__())
