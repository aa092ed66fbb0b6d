"""``POST /v1/predict``: hedged answers for uploaded photos."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import binascii
import threading
import time
from functools import partial

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from hedged.classifier import GUARANTEES, UncalibratedError, check_accuracy, check_guarantee
from hedged.server.engine import DeadlineExceeded, NotReady, QueueFull
from hedged.server.observability import CLIENT_CLOSED
from hedged.server.schemas import PredictJSON, PredictResponse, Problem
from hedged.server.service import Upload, classify

router = APIRouter(prefix="/v1", tags=["predict"])

DEFAULT_ACCURACY = 0.95

_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "one or more image files"},
        "titles": {"type": "array", "items": {"type": "string"},
                   "description": "optional: each image's listing title, in order (one per image)"},
        "accuracy": {"type": "number", "description": "target accuracy in (0, 1]; default 0.95"},
        "guarantee": {"type": "string", "enum": list(GUARANTEES)},
        "path_over_targets": {"type": "boolean"},
    },
}

_ERRORS = {
    400: {"model": Problem, "description": "a malformed multipart body (no boundary, a broken part)"},
    408: {"model": Problem, "description": "the request body took longer than the request deadline to arrive"},
    413: {"model": Problem, "description": "over the size limits (images per request, bytes per request; on "
                                           "/v1/predict a photo over the per-image limit gets an error record "
                                           "and the others are answered)"},
    415: {"model": Problem, "description": "neither multipart/form-data nor application/json"},
    422: {"model": Problem, "description": "bad parameters or body"},
    503: {"model": Problem, "description": "model not loaded, queue full, or shutting down: retry later"},
    504: {"model": Problem, "description": "the request's deadline passed"},
}


def validation_message(err: ValidationError | list) -> str:
    """Pydantic's first error as one line: ``where: what``."""
    errors = err.errors() if isinstance(err, ValidationError) else err
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first['msg']}{more}" if loc else f"{first['msg']}{more}"


def _one(name: str, query, body):
    """A parameter given as a query parameter, in the body, or both (then they must agree)."""
    if query is not None and body is not None and query != body:
        raise HTTPException(422, f"{name} given twice with different values ({query!r} and {body!r})")
    return body if body is not None else query


def _parse_form_value(name: str, text, kind):
    if isinstance(text, UploadFile):
        raise HTTPException(422, f"{name} must be a form field, not a file")
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise HTTPException(422, f"{name} must be a number, got {text!r}") from None
    if kind is bool:
        low = text.strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise HTTPException(422, f"{name} must be true or false, got {text!r}")
        return low in ("true", "1", "yes", "on")
    return text


async def read_body(request: Request, settings, read_multipart, read_json, field: str):
    """The uploads and parameters of a request body, multipart or JSON; 415 for anything else."""
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.formparsers import MultiPartException
    from starlette.requests import ClientDisconnect

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    started = time.monotonic()
    try:
        if ctype == "multipart/form-data":
            try:
                out = await read_multipart(request, settings)
            except MultiPartException as err:  # no boundary, a broken part: the client's mistake
                raise HTTPException(400, f"malformed multipart body: {err.message}") from None
            except StarletteHTTPException as err:
                if err.status_code != 400:
                    raise
                # Starlette's own parser says "Missing boundary in multipart." and the like
                raise HTTPException(400, f"malformed multipart body: {err.detail}") from None
        elif ctype == "application/json":
            out = await read_json(request, settings)
        else:
            raise HTTPException(415, f"send the {field} as multipart/form-data (field '{field}') or application/json")
    except ClientDisconnect:
        # the client reset or closed the connection while sending: one info line, no 500
        request.app.state.metrics.cancelled.labels("reading").inc()
        raise HTTPException(CLIENT_CLOSED, "the client went away while sending the request") from None
    if time.monotonic() - started > settings.timeout:
        # the body took longer to arrive than the whole request may take: the client was slow
        raise HTTPException(408, f"the request body took longer than the deadline of {settings.timeout:g} s to arrive")
    return out


def accuracy_param(query, params) -> float:
    """The target from the query or the body (default 0.95), checked: 422 when bad."""
    acc = _one("accuracy", query, params.get("accuracy"))
    try:
        return check_accuracy(DEFAULT_ACCURACY if acc is None else acc)
    except ValueError as err:
        raise HTTPException(422, str(err)) from None


def guarantee_param(query, params) -> str | None:
    """The guarantee from the query or the body, checked (422 when unknown); None: the model's default."""
    guarantee = _one("guarantee", query, params.get("guarantee"))
    if guarantee is not None:
        try:
            check_guarantee(guarantee)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
    return guarantee


def loaded_engine(state):
    engine = getattr(state, "engine", None)
    if engine is None:
        raise HTTPException(503, "the model is not loaded yet")
    return engine


#: Seconds between checks that the client is still there while its job waits or runs.
DISCONNECT_POLL = 0.2


async def run_on_engine(engine, job, deadline: float, timeout: float, request: Request | None = None,
                        cancel: threading.Event | None = None):
    """``job(classifier)`` on the inference thread: 503 when it cannot be queued, 504 past ``deadline``.

    While it waits or runs, the client is watched: when it goes away, a queued job is
    dropped before it runs and a running one is told to stop (``cancel``, which the
    job checks between batches); the request ends with 499 and is counted as
    cancelled, never as answered. Other exceptions of the job reach the caller.
    """
    try:
        future = engine.submit(job, deadline)
    except (NotReady, QueueFull) as err:
        raise HTTPException(503, f"cannot take the request now: {err}", headers={"Retry-After": "1"}) from None
    waiter = asyncio.wrap_future(future)
    # a job stopped after its client left ends with an exception nobody awaits: consume it
    waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError
            done, _ = await asyncio.wait({waiter}, timeout=min(DISCONNECT_POLL, remaining))
            if done:
                return waiter.result()
            if request is not None and await request.is_disconnected():
                stage = "queued" if future.cancel() else "running"
                if cancel is not None:
                    cancel.set()
                request.app.state.metrics.cancelled.labels(stage).inc()
                raise HTTPException(CLIENT_CLOSED, "the client went away")
    except (asyncio.TimeoutError, DeadlineExceeded):
        future.cancel()  # still queued: the inference thread skips it
        if cancel is not None:
            cancel.set()
        raise HTTPException(504, f"no answer within the request deadline of {timeout:g} s") from None


#: Longest file name an upload may carry, in multipart as in JSON (``Base64Image.filename``).
MAX_FILENAME = 255


def check_filename(name: str, field: str) -> None:
    if len(name) > MAX_FILENAME:
        raise HTTPException(422, f"{field}: file name of {len(name):,} characters, longer than {MAX_FILENAME}")


def _too_big(len_: int, limit: int) -> str:
    return f"{len_:,} bytes, over the per-image limit of {limit:,}"


async def _read_multipart(request: Request, settings):
    form = await request.form(max_files=settings.max_images + 1, max_fields=100)
    files = form.getlist("images")
    if not files:
        raise HTTPException(422, "images: no file in the multipart field 'images'")
    if len(files) > settings.max_images:
        raise HTTPException(413, f"more than {settings.max_images} images in one request")
    uploads = []
    for f in files:
        if not isinstance(f, UploadFile):
            raise HTTPException(422, "images: every 'images' part must be a file")
        name = f.filename or "image"
        check_filename(name, "images")
        if f.size is not None and f.size > settings.max_image_bytes:
            # this photo gets an error record; the others are still answered
            uploads.append(Upload(name, b"", _too_big(len_=f.size, limit=settings.max_image_bytes)))
            continue
        uploads.append(Upload(name, await f.read()))
    params = {}
    for key, kind in (("accuracy", float), ("guarantee", str), ("path_over_targets", bool)):
        if key in form:
            params[key] = _parse_form_value(key, form[key], kind)
    titles = form.getlist("titles")
    if titles:
        if len(titles) != len(uploads):
            raise HTTPException(422, f"titles: send one per image ({len(uploads)} image(s), {len(titles)} title(s))")
        uploads = [dataclasses.replace(u, title=str(_parse_form_value("titles", t, str)) or None)
                   for u, t in zip(uploads, titles)]
    return uploads, params


async def _read_json(request: Request, settings):
    try:
        body = PredictJSON.model_validate_json(await request.body())
    except ValidationError as err:
        raise HTTPException(422, validation_message(err)) from None
    if len(body.images) > settings.max_images:
        raise HTTPException(413, f"more than {settings.max_images} images in one request")
    uploads = []
    for i, img in enumerate(body.images):
        try:
            data = base64.b64decode(img.data, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, f"images.{i}.data: not valid base64") from None
        if len(data) > settings.max_image_bytes:
            uploads.append(Upload(img.filename, b"", _too_big(len_=len(data), limit=settings.max_image_bytes),
                                  title=img.title))
            continue
        uploads.append(Upload(img.filename, data, title=img.title))
    params = body.model_dump(include={"accuracy", "guarantee", "path_over_targets"}, exclude_none=True)
    return uploads, params


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_unset=True,
    responses=_ERRORS,
    summary="Hedged answers for one or more photos",
    description=(
        "Send the photos as the multipart field `images` (repeat it), or as JSON "
        "`{\"images\": [{\"filename\", \"data\": base64}]}`. `accuracy`, `guarantee` and "
        "`path_over_targets` go in the query string or in the body. Each result is exactly "
        "the object `predict.py --json` prints for the photo (`image` = the uploaded name); "
        "a photo that cannot be read gets `{\"image\", \"error\"}` and the others are answered."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictJSON"}},
            },
        }
    },
)
async def predict(
    request: Request,
    accuracy: float | None = Query(None, description="target accuracy in (0, 1]; default 0.95"),
    guarantee: str | None = Query(None, description=f"one of {', '.join(GUARANTEES)}; default auto (pac-seller when the model stores its calibration contributors, else pac)"),
    path_over_targets: bool | None = Query(
        None, description="add each photo's answer at every target in (0, 1] as `answer_path`"
    ),
) -> PredictResponse:
    state = request.app.state
    settings = state.settings
    started = time.monotonic()
    check_capacity(state)  # before the body is read: a full queue costs the client no upload
    uploads, params = await read_body(request, settings, _read_multipart, _read_json, "images")
    acc = accuracy_param(accuracy, params)
    engine = loaded_engine(state)
    guarantee_ = guarantee_param(guarantee, params)
    with_path = bool(_one("path_over_targets", path_over_targets, params.get("path_over_targets")))
    await check_pixel_budget(engine, uploads, settings)

    deadline = started + settings.timeout
    cancel = threading.Event()
    job = partial(_classify_job, uploads=uploads, accuracy=acc, guarantee=guarantee_, with_path=with_path,
                  cancel=cancel, chunk=settings.batch_size)
    try:
        records, messages = await run_on_engine(engine, job, deadline, settings.timeout, request, cancel)
    except UncalibratedError as err:  # e.g. pac-group with a bundle that stores no groups
        raise HTTPException(422, " ".join(str(err).split())) from None
    n_err = sum("error" in r for r in records)
    state.metrics.images.labels("classified").inc(len(records) - n_err)
    state.metrics.images.labels("error").inc(n_err)
    return PredictResponse(results=records, warnings=messages)


def _classify_job(clf, *, uploads, accuracy, guarantee, with_path, cancel=None, chunk=8):
    return classify(clf, uploads, accuracy, guarantee or clf.guarantee, with_path, cancel=cancel, chunk=chunk)


def check_capacity(state) -> None:
    """503 at once when the inference queue is full, before the body is read."""
    engine = getattr(state, "engine", None)
    if engine is not None and engine.ready and engine.full():
        raise HTTPException(503, "cannot take the request now: the inference queue is full",
                            headers={"Retry-After": "1"})


async def check_pixel_budget(engine, uploads, settings) -> None:
    """413 when the request's photos would decode to more pixels than the budget, read from their headers."""
    from starlette.concurrency import run_in_threadpool

    from hedged.models.preprocess import decoded_pixels

    clf = engine.classifier
    size = getattr(getattr(clf, "preprocess", None), "load_size", None)
    budget = settings.max_request_pixels

    def count():
        return sum(decoded_pixels(u.data, size) for u in uploads if u.error is None)

    total = await run_in_threadpool(count)
    if total > budget:
        raise HTTPException(413, f"the photos of this request decode to {total:,} pixels, over the per-request "
                                 f"budget of {budget:,} (HEDGED_MAX_REQUEST_PIXELS); send fewer or smaller photos")
