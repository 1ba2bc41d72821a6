"""FastAPI dependencies of the routes: the facade's state, as `Annotated` aliases so a route
declares what it needs in its signature, the photo parameter the routes share, and the bearer
scheme of the protected routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, Request
from fastapi.security import HTTPBearer

from fbmr.serving.index.store import IndexStore
from fbmr.serving.service.state import FacadeState
from fbmr.serving.settings import FacadeSettings


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

# A listing's photo, as the routes that take one declare it.
PHOTO = File(..., description="The listing's photo.")
OPTIONAL_PHOTO = File(None, description="The listing's photo.")

# The keys themselves are checked by `fbmr.serving.http.auth.KeyGuard`, before a body is read; the
# routes name the bearer scheme so that the API's schema says they take one.
PROTECTED = [Depends(HTTPBearer(auto_error=False))]
