"""The FastAPI facade: listings in, categories and similar listings out, Triton behind.

Photos are decoded and preprocessed and texts tokenised here, with fbmr.core, exactly as in
training; the models run in Triton (ensembles over gRPC); similar listings come from a FAISS
index that is reloaded without a pause when a new version is built; which model version Triton
serves, the rollout decides (`fbmr.serving.triton.rollout`), checking each new one before it
answers.
The routes live in `fbmr.serving.http.routes`, one router per resource; what they share, in
`fbmr.serving.http.deps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from tritonclient.grpc import InferenceServerClient

from fbmr.serving.http import docs
from fbmr.serving.http.auth import KeyGuard, Keys
from fbmr.serving.http.errors import install_error_handlers
from fbmr.serving.http.inputs import return_large_buffers
from fbmr.serving.http.middleware import install_middleware
from fbmr.serving.http.routes import listings, ops, predict, seed, similar
from fbmr.serving.http.routes import models as model_routes
from fbmr.serving.index.store import IndexStore
from fbmr.serving.metrics import Metrics
from fbmr.serving.service.state import FacadeState, watch_models
from fbmr.serving.settings import FacadeSettings
from fbmr.serving.triton.admin import admin_client
from fbmr.serving.triton.inference import TritonModels
from fbmr.serving.triton.rollout import Rollout

log = logging.getLogger(__name__)

# How long start-up waits for the first rollout step (which is quick when Triton already serves
# a version, and takes the models' loading time when the facade must load them).
FIRST_ROLLOUT_WAIT_S = 10.0


def create_app(settings: FacadeSettings | None = None) -> FastAPI:
    """The facade for `settings` (default: from FBMR_* environment variables)."""
    settings = settings or FacadeSettings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        return_large_buffers()  # decoded photos' memory back to the system once freed
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        index = IndexStore(settings.index_dir, token, settings.milvus_uri)
        try:
            index.reload()
        except Exception:  # serve without an index (503 on /v1/similar) and keep trying
            log.exception("similar-listing index not loaded")
        models = TritonModels(settings.triton_url, settings.triton_timeout_s)
        # requests inside the old ensembles at a switch end within one Triton deadline
        admin_key = settings.triton_admin_key
        triton = InferenceServerClient(settings.triton_url)
        rollout = Rollout(
            settings.model_repository,
            admin_client(triton, admin_key.get_secret_value() if admin_key else None),
            drain_s=settings.triton_timeout_s,
        )
        state = FacadeState(settings, models, index, rollout, metrics)
        app.state.facade = state
        with contextlib.suppress(TimeoutError, OSError, ValueError):
            # serve at once what Triton serves; a rollout that must load models goes on behind
            await asyncio.wait_for(asyncio.shield(state.converge()), FIRST_ROLLOUT_WAIT_S)
        watchers = [
            asyncio.create_task(
                watch_index(index, index.reload, settings.index_poll_s, "index not reloaded")
            ),
            asyncio.create_task(
                watch_index(
                    index, index.catch_up, settings.updates_poll_s, "listing updates not applied"
                )
            ),
            asyncio.create_task(watch_models(state, settings.model_poll_s)),
        ]
        yield
        for watcher in watchers:
            watcher.cancel()
        await models.close()
        rollout.close()

    app = FastAPI(
        title="fbmr",
        summary="Categorise marketplace listings from photo and text; find similar listings.",
        version="1",
        lifespan=lifespan,
        # Swagger UI from the installed assets instead of a CDN (`docs.install`): it loads
        # where no network reaches; ReDoc has no packaged assets, so there is none
        docs_url=None,
        redoc_url=None,
    )
    docs.install(app)
    install_error_handlers(app)
    # innermost: a request without the key its route needs is answered before its body is read
    # (and, from inside the metrics middleware, still counted and logged)
    keys = Keys(settings.api_key, settings.write_key, settings.admin_key)
    app.add_middleware(KeyGuard, keys=keys, public_docs=settings.public_docs)
    install_middleware(app, metrics, settings.max_body_bytes)
    for module in (predict, similar, listings, model_routes, ops, seed):
        app.include_router(module.router)
    return app


async def watch_index(
    store: IndexStore, step: Callable[[], object], every_s: float, failed: str
) -> None:
    """Run `step` on the index every `every_s` seconds, in a thread: `store.reload` picks up a
    new version when its CURRENT pointer changes, `store.catch_up` the listings other workers
    put or deleted. A failed step is logged (`failed`, and why) and tried again next time."""
    if every_s <= 0 or store.index_dir is None:
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(step)
        except Exception:  # the watcher must outlive any one failed step
            log.exception(failed)
