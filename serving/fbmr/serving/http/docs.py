"""`/docs`: Swagger UI from the assets the `swagger-ui-bundle` package installs, not from a CDN,
so the API's docs load on a site with no way out. Behind the read key like the API itself
unless `public_docs` is set (`fbmr.serving.http.auth`)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from fbmr.serving.http.auth import DOCS_ASSETS, DOCS_PATH


def install(app: FastAPI) -> None:
    """Swagger UI at DOCS_PATH, its scripts and styles under DOCS_ASSETS."""
    app.mount(DOCS_ASSETS.rstrip("/"), StaticFiles(directory=str(swagger_ui_path)), name="docs")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{DOCS_ASSETS}swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}favicon-32x32.png",
        )
