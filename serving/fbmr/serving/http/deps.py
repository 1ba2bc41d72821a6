"""FastAPI dependencies of the routes: the facade's state, as `Annotated` aliases so a route
declares what it needs in its signature, the photo parameter the routes share, and the bearer
scheme of the protected routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, Request
from fastapi.security import HTTPBearer

from fbmr.core.contract import MAX_PHOTOS
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

# A listing's photos, as the routes that take them declare them: the `photo` part once, or
# repeated for a listing's several (at most MAX_PHOTOS), pooled into one answer.
PHOTOS_HELP = (
    f"The listing's photo; repeat the part for its several photos (at most {MAX_PHOTOS}), "
    "which are pooled into one answer."
)
PHOTO = File(..., description=PHOTOS_HELP)
OPTIONAL_PHOTO = File(None, description=PHOTOS_HELP)

# The keys themselves are checked by `fbmr.serving.http.auth.KeyGuard`, before a body is read; the
# routes name the bearer scheme so that the API's schema says they take one.
PROTECTED = [Depends(HTTPBearer(auto_error=False))]
