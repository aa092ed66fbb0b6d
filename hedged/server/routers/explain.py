"""``POST /v1/explain``: heat maps of why a photo got its answer (Grad-CAM)."""

from __future__ import annotations

import base64
import binascii
import time
from functools import partial

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hedged.classifier import GUARANTEES, ExplainUnavailableError, UncalibratedError
from hedged.models import ImageLoadError
from hedged.server.routers.predict import (
    _ERRORS,
    _one,
    _parse_form_value,
    accuracy_param,
    check_capacity,
    check_filename,
    guarantee_param,
    loaded_engine,
    read_body,
    run_on_engine,
    validation_message,
)
from hedged.server.schemas import ExplainJSON, ExplainResponse, Problem
from hedged.server.service import Upload, explain, explanation_png, explanation_record

router = APIRouter(prefix="/v1", tags=["explain"])

# Integrated gradients cost tens of forward-backward passes per node and view:
# far past a request deadline on a CPU, so the server offers Grad-CAM only.
SERVED_METHOD = "gradcam"
_OTHER_METHODS = (
    "integrated gradients take about a minute per photo and are offered by the library "
    "(clf.explain(image, method='integrated_gradients')) and predict.py --explain-method ig"
)

_PARAMS = {
    "accuracy": {"type": "number", "description": "target accuracy in (0, 1]; default 0.95"},
    "node": {"type": "string", "description": "taxonomy node to explain; default the answer at `accuracy`"},
    "guarantee": {"type": "string", "enum": list(GUARANTEES)},
    "method": {"type": "string", "enum": [SERVED_METHOD]},
    "format": {"type": "string", "enum": ["json", "png"], "description": "json (default) or png"},
}
_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary", "description": "one image file"}, **_PARAMS},
}

_RESPONSES = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
          "description": "JSON, or with `Accept: image/png` / `format=png` the 2 x 2 PNG of predict.py --explain"},
    **{code: spec for code, spec in _ERRORS.items() if code != 422},
    422: {"model": Problem, "description": "bad parameters, unknown node, another method than gradcam, "
                                           "an image that cannot be read"},
    501: {"model": Problem, "description": "this model cannot be explained (an ONNX bundle without its torch source)"},
}


def check_served_method(method: str | None) -> str:
    """``gradcam`` (the default); anything else is a 422 saying where the other methods are."""
    if method is None or method.strip().lower() in (SERVED_METHOD, "grad-cam"):
        return SERVED_METHOD
    raise HTTPException(422, f"method must be {SERVED_METHOD} on the server, got {method!r}: {_OTHER_METHODS}")


async def _read_multipart(request: Request, settings):
    form = await request.form(max_files=2, max_fields=100)
    files = form.getlist("image")
    if not files:
        raise HTTPException(422, "image: no file in the multipart field 'image'")
    if len(files) > 1 or not isinstance(files[0], UploadFile):
        raise HTTPException(422, "image: send exactly one file in the multipart field 'image'")
    f = files[0]
    name = f.filename or "image"
    check_filename(name, "image")
    if f.size is not None and f.size > settings.max_image_bytes:
        raise HTTPException(413, f"image {name!r} is {f.size:,} bytes, over the limit of {settings.max_image_bytes:,}")
    params = {}
    for key, kind in (("accuracy", float), ("node", str), ("guarantee", str), ("method", str), ("format", str)):
        if key in form:
            params[key] = _parse_form_value(key, form[key], kind)
    return Upload(name, await f.read()), params


async def _read_json(request: Request, settings):
    try:
        body = ExplainJSON.model_validate_json(await request.body())
    except ValidationError as err:
        raise HTTPException(422, validation_message(err)) from None
    try:
        data = base64.b64decode(body.image.data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "image.data: not valid base64") from None
    if len(data) > settings.max_image_bytes:
        raise HTTPException(
            413, f"image {body.image.filename!r} is {len(data):,} bytes, over the limit of {settings.max_image_bytes:,}"
        )
    params = body.model_dump(include={"accuracy", "node", "guarantee", "method", "format"}, exclude_none=True)
    return Upload(body.image.filename, data), params


def _wants_png(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        if fmt not in ("json", "png"):
            raise HTTPException(422, f"format must be json or png, got {fmt!r}")
        return fmt == "png"
    accept = request.headers.get("accept", "").lower()
    return "image/png" in accept and "application/json" not in accept


@router.post(
    "/explain",
    response_model=ExplainResponse,
    response_model_exclude_unset=True,
    responses=_RESPONSES,
    summary="Heat maps of why one photo got its answer",
    description=(
        "Send one photo as the multipart field `image`, or as JSON `{\"image\": {\"filename\", \"data\": "
        "base64}}`. `accuracy`, `node`, `guarantee` and `method` go in the query string or in the body. "
        "Grad-CAM of the node (default: the answer at `accuracy`) and of its two most probable children "
        "(for a leaf, the two most probable other leaves), as `hedged.HedgedClassifier.explain` computes "
        "them. `answer` is the object `predict.py --json` prints for the photo; each `heatmap` is a "
        "transparent PNG of the photo's (upright) size to lay over it. With `Accept: image/png` or "
        "`format=png` the answer is the 2 x 2 PNG `predict.py --explain` writes."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                "application/json": {"schema": {"$ref": "#/components/schemas/ExplainJSON"}},
            },
        }
    },
)
async def explain_photo(
    request: Request,
    accuracy: float | None = Query(None, description="target accuracy in (0, 1]; default 0.95"),
    node: str | None = Query(None, description="taxonomy node to explain; default the answer at `accuracy`"),
    guarantee: str | None = Query(None, description=f"one of {', '.join(GUARANTEES)}; default auto (pac-seller when the model stores its calibration contributors, else pac)"),
    method: str | None = Query(None, description="gradcam, the only method served"),
    format: str | None = Query(None, description="json (default) or png; else the Accept header decides"),  # noqa: A002
):
    state = request.app.state
    settings = state.settings
    started = time.monotonic()
    check_capacity(state)
    upload, params = await read_body(request, settings, _read_multipart, _read_json, "image")
    # format=gif in the query, a form field or the JSON body: a 422, never a silent JSON answer
    png = _wants_png(request, _one("format", format, params.get("format")))
    acc = accuracy_param(accuracy, params)
    method_ = check_served_method(_one("method", method, params.get("method")))
    guarantee_ = guarantee_param(guarantee, params)
    engine = loaded_engine(state)
    node_ = _one("node", node, params.get("node"))
    clf = engine.classifier  # None while loading: submit then answers 503
    if node_ is not None and clf is not None and node_ not in clf.taxonomy:
        raise HTTPException(422, f"node: unknown node {node_!r}, not a node of the taxonomy (GET /v1/taxonomy)")

    deadline = started + settings.timeout
    job = partial(_explain_job, upload=upload, accuracy=acc, node=node_, guarantee=guarantee_, method=method_)
    outcome = state.metrics.explanations
    try:
        expl = await run_on_engine(engine, job, deadline, settings.timeout, request)
    except (ExplainUnavailableError, ImportError) as err:  # an ONNX bundle, or no captum
        raise HTTPException(501, " ".join(str(err).split())) from None
    except (ImageLoadError, OSError, UncalibratedError) as err:
        # A photo that cannot be read (the message names the upload); pac-group without groups.
        outcome.labels("error").inc()
        raise HTTPException(422, " ".join(str(err).split())) from None
    outcome.labels("explained").inc()
    # Drawing and encoding need no model: off the inference thread, so the next photo can start.
    if png:
        return Response(await run_in_threadpool(explanation_png, expl), media_type="image/png")
    return await run_in_threadpool(explanation_record, expl, upload.name)


def _explain_job(clf, *, upload, accuracy, node, guarantee, method):
    return explain(clf, upload, accuracy, node, guarantee or clf.guarantee, method)
