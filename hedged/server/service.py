"""What the HTTP routes ask of the library: classify uploads, describe the model.

Everything here runs the facade (``HedgedClassifier``) exactly as ``predict.py``
does and builds each image's record with the library's
:meth:`~hedged.results.Prediction.to_record`, the one definition every surface
uses, so the API and the command line cannot drift apart.
"""

from __future__ import annotations

import base64
import io
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from hedged.classifier import GUARANTEES
from hedged.results import Prediction


@dataclass(frozen=True)
class Upload:
    """One uploaded image: the name the client gave it and its bytes, or why it was refused
    (over the per-image size limit: that photo gets an error record, the others are answered)."""

    name: str
    data: bytes
    error: str | None = None
    title: str | None = None  # the photo's listing title, if the client sent one


def _named_stream(upload: Upload) -> io.BytesIO:
    stream = io.BytesIO(upload.data)
    stream.name = upload.name  # load errors then name the uploaded file
    return stream


class Cancelled(Exception):
    """The request's client went away: the job stopped between batches."""


def classify(clf, uploads: list[Upload], accuracy: float, guarantee: str, with_path: bool = False,
             cancel=None, chunk: int = 8):
    """Hedged records for ``uploads``, one per upload, in order.

    Returns ``(records, warnings)``: each record is ``predict.py --json``'s
    object for the image (``image`` = the uploaded name); an image that cannot
    be read gets ``{"image", "error"}`` and the others are still classified.
    With ``with_path`` every classified record also carries the facade's
    ``answer_path`` (the answer at every target, ``path_over_targets=True``),
    each step with the node's ``probability`` and ``path`` added so that a
    client can show any target without asking again.
    """
    records: list[dict | None] = [None] * len(uploads)
    streams, rows = [], []
    for i, up in enumerate(uploads):
        if up.error is not None:
            records[i] = Prediction.failed(up.name, up.error, accuracy, guarantee).to_record()
            continue
        streams.append(_named_stream(up))
        rows.append(i)
    titles = [uploads[i].title for i in rows]
    with_titles = any(t is not None for t in titles)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The facade call predict.py makes (taxonomy check included): it decodes the
        # uploads one at a time (JPEG draft decoding, the pixel limit) and keeps only
        # model-sized images, so a request never holds its photos at full resolution.
        # In chunks of one batch, so that a request whose client went away stops early.
        for start in range(0, len(streams), max(1, chunk)):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            part = slice(start, start + max(1, chunk))
            preds = clf.predict(streams[part], accuracy, guarantee, errors="collect", path_over_targets=with_path,
                                titles=titles[part] if with_titles else None)
            for i, pred in zip(rows[part], preds):
                records[i] = record = pred.to_record()
                record["image"] = uploads[i].name
    messages = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    return records, messages


def explain(clf, upload: Upload, accuracy: float, node: str | None, guarantee: str, method: str):
    """The library's :class:`~hedged.explanation.Explanation` of one upload (on the inference thread)."""
    return clf.explain(_named_stream(upload), node=node, accuracy=accuracy, method=method, guarantee=guarantee)


def explanation_png(expl) -> bytes:
    """The 2 x 2 picture ``predict.py --explain`` writes."""
    buf = io.BytesIO()
    expl.save(buf)
    return buf.getvalue()


def _png_data_url(rgba: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def explanation_record(expl, name: str) -> dict:
    """``POST /v1/explain``'s JSON: the answer record and one transparent overlay per node."""
    answer = expl.prediction.to_record()
    answer["image"] = name
    height, width = expl.image.shape[:2]
    out = {
        "image": name,
        "method": expl.method,
        "answer": answer,
        "explained": [
            {
                "node": n.name,
                "display_name": n.display_name,
                "role": role,
                "probability": float(p),
                "heatmap": _png_data_url(expl.heatmap_rgba(k)),
            }
            for k, (n, role, p) in enumerate(zip(expl.nodes, expl.roles, expl.probabilities))
        ],
        "width": int(width),
        "height": int(height),
    }
    if expl.note:
        out["note"] = expl.note
    return out


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def model_info(clf, load_seconds: float | None) -> dict:
    """Bundle metadata for ``GET /v1/model``."""
    bundle = getattr(clf, "bundle_", None)
    tax = clf.taxonomy
    # the manifest read when the model loaded, not the file now (which may have gone)
    manifest = dict(getattr(bundle, "manifest", None) or {})
    path = getattr(bundle, "path", None)
    groups = getattr(clf, "calibration_groups_", None)
    if groups is None:
        groups = getattr(bundle, "calibration_groups", None)
    preprocess = clf.preprocess
    runtime = {name: _version(name) for name in ("hedged", "numpy", "fastapi")}
    for mod, dist in (("torch", "torch"), ("onnxruntime", "onnxruntime")):
        if mod in sys.modules:  # only the backend this bundle runs on
            runtime[dist] = _version(dist)
    return {
        # the bundle's name, not the server's file system layout
        "bundle": None if path is None else path.name,
        "format": manifest.get("format"),
        "arch": getattr(bundle, "arch", None),
        "taxonomy": {"root": tax.root, "n_leaves": tax.n_leaves, "n_nodes": tax.n_nodes},
        "input_size": getattr(preprocess, "input_size", None),
        "tta_angles": list(clf.tta_angles),
        "temperature": float(clf.temperature),
        "calibration": {
            "n": int(len(clf.calibration_labels_)),
            "groups": None if groups is None else int(len(np.unique(np.asarray(groups)))),
        },
        "guarantees": list(GUARANTEES),
        "default_guarantee": clf.resolve_guarantee(),
        "delta": float(clf.delta),
        "metrics": manifest.get("metrics", {}),
        "versions": {"bundle": manifest.get("versions", {}), "server": runtime},
        "load_seconds": load_seconds,
    }


def taxonomy_info(tax) -> dict:
    """Nodes, display names, parents and leaves for ``GET /v1/taxonomy``."""
    leaves = set(tax.leaves)
    return {
        "root": tax.root,
        "leaves": list(tax.leaves),
        "nodes": [
            {
                "name": v,
                "display_name": tax.display_name(v),
                "parents": sorted(tax.parents(v)),
                "depth": int(tax.depth(v)),
                "is_leaf": v in leaves,
            }
            for v in tax.nodes
        ],
    }
