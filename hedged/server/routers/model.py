"""What the server runs: bundle metadata and the taxonomy."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from hedged.server.schemas import ModelInfo, Problem, TaxonomyInfo
from hedged.server.service import model_info, taxonomy_info

router = APIRouter(prefix="/v1", tags=["model"])

_NOT_READY = {503: {"model": Problem, "description": "the model is not loaded"}}


def loaded_classifier(request: Request):
    """The loaded classifier, or 503 (one line) while it loads or after it failed."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None or not engine.ready:
        detail = (engine.load_error if engine is not None else None) or "the model is not loaded yet"
        raise HTTPException(503, detail)
    return engine


@router.get("/model", response_model=ModelInfo, responses=_NOT_READY, summary="Bundle metadata")
async def get_model(request: Request) -> ModelInfo:
    engine = loaded_classifier(request)
    cache = request.app.state.cache
    if "model" not in cache:
        cache["model"] = ModelInfo(**model_info(engine.classifier, engine.load_seconds))
    return cache["model"]


@router.get("/taxonomy", response_model=TaxonomyInfo, responses=_NOT_READY, summary="Nodes, display names, parents, leaves")
async def get_taxonomy(request: Request) -> TaxonomyInfo:
    engine = loaded_classifier(request)
    cache = request.app.state.cache
    if "taxonomy" not in cache:
        cache["taxonomy"] = TaxonomyInfo(**taxonomy_info(engine.classifier.taxonomy))
    return cache["taxonomy"]
