"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from hedged.server.engine import Engine
from hedged.server.observability import Metrics, ServingMiddleware
from hedged.server.routers import explain, health, metrics, model, page, predict
from hedged.server.routers.page import DOCS_ASSETS, STATIC, swagger_ui_dir
from hedged.server.schemas import ExplainJSON, PredictJSON
from hedged.server.settings import Settings

DESCRIPTION = """\
Hedged image classification: the most specific taxonomy node that meets an
accuracy target, with a calibrated guarantee. Answers are those of
`predict.py --json`. The page at `/` lets you drop photos and move the target.
"""


def default_loader(settings: Settings):
    """The classifier ``predict.py`` would run: the library's one loader, same bundle resolution."""
    from hedged.classifier import HedgedClassifier

    return lambda: HedgedClassifier.from_bundle(settings.model, batch_size=settings.batch_size)


def create_app(settings: Settings | None = None, *, loader=None) -> FastAPI:
    """Build the app; the model loads on the inference thread when the app starts.

    Parameters
    ----------
    settings : Settings, optional
        Default ``Settings.from_env()``.
    loader : callable() -> HedgedClassifier, optional
        Replaces loading ``settings.model`` (tests, embedding a classifier).
    """
    settings = Settings.from_env() if settings is None else settings
    load = default_loader(settings) if loader is None else loader
    stats = Metrics()

    def load_and_record():
        start = time.perf_counter()
        clf = load()
        stats.model_load.set(time.perf_counter() - start)
        return clf

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = Engine(load_and_record, settings.queue_size)
        app.state.engine = engine
        stats.queue_depth.set_function(engine.depth)
        engine.start()
        try:
            yield
        finally:
            # Reached after the server stopped taking requests and the
            # in-flight ones finished: queued jobs finish, the thread ends.
            app.state.draining = True
            await run_in_threadpool(engine.close, settings.timeout)

    from hedged import __version__

    app = FastAPI(
        title="hedged",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routers.page without a CDN
        redoc_url=None,
        # Starlette counts the bytes as they arrive (and trusts no Content-Length): 413 beyond.
        max_body_size=settings.max_request_bytes,
    )
    app.state.settings = settings
    app.state.metrics = stats
    app.state.draining = False
    app.state.cache = {}
    app.state.engine = None

    for router in (health.router, model.router, predict.router, explain.router, metrics.router, page.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    assets = swagger_ui_dir()
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    app.add_middleware(ServingMiddleware, state=app.state)
    # Outermost: a Host header other than the allowed names gets 400 before anything runs,
    # so a DNS-rebinding page cannot reach a server bound to loopback.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.host_names())

    def openapi():
        # /v1/predict and /v1/explain parse their bodies themselves (multipart or
        # JSON), so FastAPI does not see their JSON models: add them to the schema
        # the routes refer to.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model_ in (PredictJSON, ExplainJSON):
                body = model_.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model_.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(RequestValidationError)
    async def one_line_422(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": predict.validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 413 and exc.detail == "Content Too Large":  # Starlette's body limit: say which
            exc = HTTPException(413, f"request body larger than the limit of {settings.max_request_bytes:,} bytes")
        return await http_exception_handler(request, exc)

    return app
