"""The web page at ``/`` and the API docs at ``/docs``, with every asset served locally."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
DOCS_ASSETS = "/docs-assets"

router = APIRouter(include_in_schema=False)


def swagger_ui_dir() -> Path | None:
    """Swagger UI's files from the ``swagger-ui-bundle-v2`` wheel (``serve`` extra), if installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # browsers ask for /favicon.ico whatever the page links: an SVG icon, not a 404
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/docs")
async def docs() -> HTMLResponse:
    # FastAPI's default docs page loads Swagger UI from a CDN: the server
    # promises no outbound traffic, so the page gets the files from this server.
    if swagger_ui_dir() is None:
        return HTMLResponse(
            "<!doctype html><title>hedged API</title><p>Swagger UI is not installed "
            "(<code>pip install 'hedged[serve]'</code>). The OpenAPI schema is at "
            '<a href="/openapi.json">/openapi.json</a>.</p>'
        )
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="hedged API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        # Swagger UI would send the schema to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
