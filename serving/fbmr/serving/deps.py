"""FastAPI dependencies of the routes: the facade's state and the API-key check, as `Annotated`
aliases so a route declares what it needs in its signature."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fbmr.serving.errors import ApiError
from fbmr.serving.index import IndexStore
from fbmr.serving.settings import FacadeSettings
from fbmr.serving.state import FacadeState


def get_state(request: Request) -> FacadeState:
    state: FacadeState = request.app.state.facade
    return state


State = Annotated[FacadeState, Depends(get_state)]


def get_settings(state: State) -> FacadeSettings:
    return state.settings


def get_index(state: State) -> IndexStore:
    return state.index


Settings = Annotated[FacadeSettings, Depends(get_settings)]
Index = Annotated[IndexStore, Depends(get_index)]

_bearer = HTTPBearer(auto_error=False)


def authorised(
    settings: Settings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Every route but the health checks needs the API key, when one is set."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value()
    if credentials is None or not secrets.compare_digest(credentials.credentials, expected):
        raise ApiError(
            401,
            "missing or wrong API key (Authorization: Bearer <key>)",
            {"WWW-Authenticate": "Bearer"},
        )


PROTECTED = [Depends(authorised)]
