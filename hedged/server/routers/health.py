"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hedged.server.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="The model and its calibration are loaded",
    responses={503: {"model": Readiness, "description": "loading, failed to load, or shutting down"}},
)
async def readyz(request: Request):
    state = request.app.state
    engine = getattr(state, "engine", None)
    if engine is not None and engine.ready and not state.draining:
        return Readiness(ready=True, detail="model loaded")
    if state.draining:
        detail = "the server is shutting down"
    elif engine is None or engine.loading:
        detail = "the model is still loading"
    else:
        detail = engine.load_error or "not ready"
    return JSONResponse(Readiness(ready=False, detail=detail).model_dump(), status_code=503)
