"""Pydantic models of every request and response: the OpenAPI schema is the contract."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """Every error status (413, 422, 503, 504, ...) answers one line."""

    detail: str = Field(examples=["accuracy must be in (0, 1], got 1.5"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    detail: str = Field(examples=["model loaded", "the model is still loading"])


class TaxonomySize(BaseModel):
    root: str
    n_leaves: int
    n_nodes: int


class CalibrationInfo(BaseModel):
    n: int = Field(description="calibration photos")
    groups: int | None = Field(description="distinct groups (contributors) among them, when the bundle records them")


class ModelInfo(BaseModel):
    bundle: str | None = Field(description="name of the bundle directory the server runs (no server path)")
    format: str | None
    arch: str | None
    taxonomy: TaxonomySize
    input_size: int | None
    tta_angles: list[float]
    temperature: float
    calibration: CalibrationInfo
    guarantees: list[str]
    default_guarantee: str
    delta: float = Field(description="failure probability of the pac guarantee")
    metrics: dict = Field(description="the bundle's recorded test metrics")
    versions: dict = Field(description="library versions that made the bundle, and those serving it")
    load_seconds: float | None


class TaxonomyNode(BaseModel):
    name: str
    display_name: str
    parents: list[str]
    depth: int
    is_leaf: bool


class TaxonomyInfo(BaseModel):
    root: str
    leaves: list[str] = Field(description="the model's output columns, in order")
    nodes: list[TaxonomyNode]


class PathStep(BaseModel):
    """One step of a photo's answer over targets: ``node`` answers every target
    above the previous step's ``max_target`` up to this one (the facade's
    ``Prediction.answer_path``, plus the node's probability and path)."""

    model_config = ConfigDict(extra="allow")

    max_target: float
    node: str
    display_name: str
    probability: float
    path: list[str]


class ImageResult(BaseModel):
    """One image: the library's answer record (``Prediction.to_record()``, exactly the
    object ``predict.py --json`` prints), or ``{"image", "error"}`` when it cannot be
    read; ``answer_path`` only when asked. Its fields are tested against
    ``hedged.results.RECORD_FIELDS``, so the schema cannot drift from the record."""

    # Keys predict.py adds later pass through unchanged: one record format.
    model_config = ConfigDict(extra="allow")

    image: str
    error: str | None = None
    kind: Literal["answer", "not_sure", "outside"] | None = None
    headline: str | None = None
    in_taxonomy: bool | None = None
    taxonomy_score: float | None = None
    node: str | None = None
    display_name: str | None = None
    path: list[str] | None = None
    depth: int | None = None
    probability: float | None = None
    info_gain: float | None = None
    leaves: list[str] | None = None
    labels: list[str] | None = None
    leaf_guess: str | None = None
    leaf_guess_display_name: str | None = None
    leaf_probability: float | None = None
    accuracy_target: float | None = None
    guarantee: str | None = None
    guarantee_holds: bool | None = None
    leaf_at_target: float | None = None
    warnings: list[str] | None = None
    title: dict | None = Field(None, description="with a listing title: its text, the node its keywords name, the "
                                                 "matched words")
    answer_path: list[PathStep] | None = None


class PredictResponse(BaseModel):
    results: list[ImageResult]
    warnings: list[str] = Field(default_factory=list, description="calibration warnings (e.g. a target it cannot certify)")


class Base64Image(BaseModel):
    filename: str = Field("image", max_length=255, description="name echoed as the result's image key")
    data: str = Field(description="the image file's bytes, base64 (standard alphabet)")
    title: str | None = Field(None, max_length=1000, description="the photo's listing title: its keywords restrict "
                              "the answer to the node they name (the answer then says the guarantee does not cover it)")


class PredictJSON(BaseModel):
    """The JSON body of ``POST /v1/predict`` (what mobile clients send)."""

    model_config = ConfigDict(extra="forbid")

    images: list[Base64Image] = Field(min_length=1)
    accuracy: float | None = Field(None, description="target accuracy in (0, 1]; default 0.95")
    guarantee: str | None = Field(None, description="auto (default: pac-seller for a model that stores its calibration contributors, else pac), pac, pac-seller, pac-group or expected")
    path_over_targets: bool | None = None


class ExplainedNode(BaseModel):
    """One heat map: the explained node, or a child / ruled-out leaf competing with it."""

    node: str
    display_name: str
    role: Literal["node", "child", "alternative"] = Field(
        description="`node` (the explained node, first), `child` (its most probable children) or, "
        "for a leaf, `alternative` (the most probable other leaves)"
    )
    probability: float = Field(description="the node's posterior (sum of its leaves', with the answer's TTA)")
    heatmap: str = Field(
        description="`data:image/png;base64,...`: a transparent RGBA PNG of `width` x `height` to lay over "
        "the photo (the overlay of predict.py --explain's panels; clear where the model saw nothing)"
    )


class ExplainResponse(BaseModel):
    image: str = Field(description="the uploaded file name")
    method: Literal["gradcam"]
    answer: ImageResult = Field(description="the object `predict.py --json` prints for the photo")
    explained: list[ExplainedNode]
    width: int = Field(description="heat maps' width: the photo, upright, longer side at most 512")
    height: int
    note: str | None = Field(None, description="set when the maps come from another model than the answering one")


class ExplainJSON(BaseModel):
    """The JSON body of ``POST /v1/explain``."""

    model_config = ConfigDict(extra="forbid")

    image: Base64Image
    accuracy: float | None = Field(None, description="target accuracy in (0, 1]; default 0.95")
    node: str | None = Field(None, description="taxonomy node to explain; default the answer at `accuracy`")
    guarantee: str | None = Field(None, description="auto (default: pac-seller for a model that stores its calibration contributors, else pac), pac, pac-seller, pac-group or expected")
    method: str | None = Field(None, description="gradcam (the only one served)")
    format: str | None = Field(None, description="json (default) or png")
