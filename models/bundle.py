"""The model bundle: everything prediction needs, in one self-checking directory.

A bundle is a directory::

    bundle.json       manifest: format, arch, preprocessing, TTA angles, temperature,
                      the model's named outputs ("outputs": logits and features, see
                      models.inference.OUTPUTS), sha256 of every other file, metrics,
                      provenance, library versions
    weights.pt        state dict (fp16 to keep the git footprint small; loaded as fp32)
    taxonomy.yaml     the taxonomy whose leaves are the classifier's output columns
    calibration.npz   probs (n x L) and labels (n,) of the held-out calibration split,
                      computed with the bundle's own TTA and temperature; optionally
                      groups (n,): salted hashes of who contributed each photo
                      (sender_id), for the contributor-level guarantee
    test.npz          (optional) the same for the test split, so reports need no CNN
    split.json        (optional) image ids of each data split
    ood.json          (optional) the out-of-taxonomy detector (hedging.ood): signals,
                      logistic-regression weights, calibration scores, its metrics
    ood.npz           (optional) the ImageNet head (weight fp16, bias) and the
                      in-taxonomy ImageNet class indices, when the detector reads them

An exported bundle (``export.py``, ``"runtime": "onnx"`` in the manifest) holds
``model.onnx`` instead of ``weights.pt``, plus ``decision.json`` (the hedging
rule as plain data, for apps without Python); its calibration and test
posteriors were computed through that ONNX file, and the manifest's
``calibrated_model`` (the sha256 of the model file the calibration belongs to)
must match the model file, or loading refuses. Loading an ONNX bundle imports
onnxruntime, never torch (see :mod:`hedged.models.onnx_model`).

Like a torchvision weights entry, the bundle carries its own preprocessing and
calibration, so at prediction time it is the single source of truth. Loading
re-hashes every file and cross-checks the pieces, and refuses an inconsistent
bundle with :class:`BundleError` rather than predicting garbage.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hedged.taxonomy import Taxonomy, TaxonomyError

from hedged.models.data import sha256_file
from hedged.models.preprocess import Preprocess
from hedged.models.tta import check_angles

# torch (and the registry, which needs it) are imported inside the torch-bundle
# functions: an exported ONNX bundle loads with onnxruntime alone.

FORMAT = "hedged-bundle/1"
MANIFEST = "bundle.json"
WEIGHTS = "weights.pt"
TAXONOMY = "taxonomy.yaml"
CALIBRATION = "calibration.npz"
TEST = "test.npz"
SPLIT = "split.json"
OOD = "ood.json"
OOD_ARRAYS = "ood.npz"
ONNX_MODEL = "model.onnx"
DECISION = "decision.json"
RUNTIMES = ("torch", "onnx")
REQUIRED_FILES = (TAXONOMY, CALIBRATION)
REQUIRED_KEYS = ("format", "arch", "num_classes", "preprocess", "tta_angles", "temperature", "files")

#: The committed torch bundle (clothing, 17 leaves): the source for training, explanations and export.
DEFAULT_TORCH_BUNDLE = Path(__file__).resolve().parent / "bundles" / "clothing"
#: The bundle used when no model is named: the int8 ONNX export of the torch bundle
#: (runs on ONNX Runtime without importing torch; calibrated through its own model file;
#: test top-1 agreement with torch 98.6 %, docs/export.md).
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "bundles" / "clothing-int8"


#: Environment variable naming the bundle used when none is given (a directory or a bundled name).
MODEL_ENV = "HEDGED_MODEL"


class BundleError(ValueError):
    """A model bundle is missing, tampered with, or internally inconsistent."""


def bundled_names() -> list[str]:
    """Names of the bundles that ship with the package (``clothing``, ``clothing-int8``)."""
    root = DEFAULT_BUNDLE.parent
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def resolve_bundle(model=None, env=None) -> Path:
    """The bundle directory a model argument names; the one rule every surface uses.

    ``model`` is a bundle directory, or the name of a bundled one
    (:func:`bundled_names`); ``None`` means ``$HEDGED_MODEL`` (read from ``env``,
    default ``os.environ``) when set, else :data:`DEFAULT_BUNDLE`.

    Raises
    ------
    BundleError
        One line naming what was not found.
    """
    import os

    env = os.environ if env is None else env
    given = model is not None
    if model is None:
        model = env.get(MODEL_ENV) or None
    if model is None:
        if not DEFAULT_BUNDLE.is_dir():
            raise BundleError(f"the default model bundle is missing ({DEFAULT_BUNDLE}); name a bundle directory")
        return DEFAULT_BUNDLE
    path = Path(model).expanduser()
    if path.exists():
        return path
    if not any(sep in str(model) for sep in ("/", "\\")) and (DEFAULT_BUNDLE.parent / str(model)).is_dir():
        return DEFAULT_BUNDLE.parent / str(model)
    origin = "" if given else f" (from ${MODEL_ENV})"
    raise BundleError(f"model bundle not found: {model}{origin}")


@dataclass
class Bundle:
    """A loaded model bundle (see the module docstring for the files).

    Attributes
    ----------
    model : torch.nn.Module or hedged.models.onnx_model.OnnxModel
        Torch bundles: in eval mode, float32. ONNX bundles: an ONNX Runtime session wrapper.
    arch : str
    taxonomy : Taxonomy
        Its ``leaves`` are the model's output columns.
    preprocess : Preprocess
    tta_angles : tuple of float
    temperature : float
    calibration_probs, calibration_labels : np.ndarray
        ``(n, L)`` posteriors and ``(n,)`` leaf indices of the calibration split.
    calibration_groups : np.ndarray of str or None
        ``(n,)`` contributor ids (salted hashes) of the calibration photos.
    calibration_taxonomy_scores : np.ndarray or None
        ``(n,)`` the detector's score of each calibration photo (``save_detector``
        stores them): the calibration counts a photo it turns away as a miss.
    metrics, provenance : dict
    test_probs, test_labels : np.ndarray or None
    split : dict or None
        Split name -> list of image ids.
    path : Path or None
    detector : hedging.ood.InTaxonomyDetector or None
        Says whether a photo is in the taxonomy at all (``ood.json``); ``None``
        when the bundle has none.
    runtime : {"torch", "onnx"}
    manifest : dict
        The parsed ``bundle.json``.
    """

    model: Any
    arch: str
    taxonomy: Taxonomy
    preprocess: Preprocess
    tta_angles: tuple[float, ...]
    temperature: float
    calibration_probs: np.ndarray
    calibration_labels: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    test_probs: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    split: dict[str, list] | None = None
    path: Path | None = None
    detector: Any = None
    calibration_groups: np.ndarray | None = None
    calibration_taxonomy_scores: np.ndarray | None = None
    runtime: str = "torch"
    manifest: dict[str, Any] = field(default_factory=dict)


def _outputs() -> dict:
    from hedged.models.inference import OUTPUTS  # torch-side module: imported when saving only

    return OUTPUTS


def library_versions() -> dict[str, str]:
    import numpy
    import scipy
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _jsonable(obj):
    """Numpy scalars/arrays -> plain Python, recursively (json.dump refuses numpy types)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _head_size(state: dict, model) -> int | None:
    for name, module in model.named_modules():
        if module is model.get_classifier():
            w = state.get(f"{name}.weight")
            return None if w is None else int(w.shape[0])
    return None


def _check_probs(probs, labels, n_leaves: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[1] != n_leaves:
        raise BundleError(f"{what} probs must be (n, {n_leaves}) to match the taxonomy leaves, got shape {p.shape}")
    if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise BundleError(f"{what} labels must be {p.shape[0]} integer leaf indices, got shape {y.shape} {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= n_leaves):
        raise BundleError(f"{what} labels must be leaf indices in [0, {n_leaves}), got [{y.min()}, {y.max()}]")
    if not np.all(np.isfinite(p)) or (p < 0).any() or (len(p) and np.abs(p.sum(1) - 1).max() > 1e-3):
        raise BundleError(f"{what} probs must be finite, non-negative rows summing to 1")
    return p, y.astype(np.int64)


def save_bundle(
    path,
    *,
    model,
    arch: str,
    taxonomy: Taxonomy,
    preprocess: Preprocess,
    tta_angles,
    temperature: float,
    calibration_probs,
    calibration_labels,
    test_probs=None,
    test_labels=None,
    split: dict | None = None,
    metrics: dict | None = None,
    provenance: dict | None = None,
    half: bool = True,
    calibration_groups=None,
) -> Path:
    """Write a bundle directory (created if needed; existing bundle files are replaced).

    Parameters
    ----------
    path : str or Path
        Target directory.
    model : torch.nn.Module
        Classifier whose output columns are ``taxonomy.leaves``.
    arch : str
        Registry name used to rebuild the model (``models.create_model``).
    taxonomy, preprocess, tta_angles, temperature
        The prediction recipe.
    calibration_probs, calibration_labels : array-like
        ``(n, L)`` posteriors (with this TTA and temperature) and ``(n,)`` leaf indices.
    test_probs, test_labels : array-like, optional
        The same for the test split.
    split : dict, optional
        Split name -> list of image ids.
    metrics, provenance : dict, optional
        Stored in the manifest as given (JSON-serialisable values).
    half : bool
        Store floating-point weights as fp16 (halves the size; load casts back to fp32).
    calibration_groups : array-like of str, optional
        ``(n,)`` contributor of each calibration photo, already anonymised
        (:func:`hash_groups`); stored in ``calibration.npz`` as ``groups``.

    Returns
    -------
    Path
        The bundle directory.
    """
    import torch

    from hedged.models.registry import ARCHS

    path = Path(path)
    from hedged.models.ensemble import member_archs

    members = member_archs(arch)
    if arch not in ARCHS and not (members and all(m in ARCHS for m in members)):
        raise BundleError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)} or an ensemble of them")
    angles = check_angles(tta_angles)
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
        raise BundleError(f"temperature must be a positive finite number, got {temperature!r}")
    n_leaves = taxonomy.n_leaves
    head = model.get_classifier().out_features
    if head != n_leaves:
        raise BundleError(f"the model has {head} outputs but the taxonomy has {n_leaves} leaves")
    cal_p, cal_y = _check_probs(calibration_probs, calibration_labels, n_leaves, "calibration")
    path.mkdir(parents=True, exist_ok=True)
    # A detector fitted on another model's outputs would be silently wrong: drop it.
    for stale in (TEST, SPLIT, OOD, OOD_ARRAYS):
        (path / stale).unlink(missing_ok=True)

    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    torch.save(state, path / WEIGHTS)
    taxonomy.to_yaml(path / TAXONOMY)
    _write_calibration(path, cal_p, cal_y, calibration_groups)
    files = [WEIGHTS, TAXONOMY, CALIBRATION]
    if test_probs is not None:
        t_p, t_y = _check_probs(test_probs, test_labels, n_leaves, "test")
        np.savez_compressed(path / TEST, probs=t_p.astype(np.float32), labels=t_y)
        files.append(TEST)
    if split is not None:
        (path / SPLIT).write_text(json.dumps(_jsonable(split)) + "\n")
        files.append(SPLIT)

    manifest = {
        "format": FORMAT,
        "arch": arch,
        "num_classes": n_leaves,
        "leaves": list(taxonomy.leaves),
        "preprocess": preprocess.to_dict(),
        "tta_angles": list(angles),
        "temperature": float(temperature),
        "weights_dtype": "float16" if half else "float32",
        "outputs": dict(_outputs()),
        "files": {name: sha256_file(path / name) for name in files},
        # The calibration posteriors belong to exactly this model file; load refuses another.
        "calibrated_model": sha256_file(path / WEIGHTS),
        "metrics": _jsonable(metrics or {}),
        "provenance": _jsonable(provenance or {}),
        "versions": library_versions(),
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(path) -> dict:
    """Parse and structurally check ``bundle.json`` (no hashing, no model)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"model bundle not found: {str(path)!r} is not a directory")
    mf = path / MANIFEST
    if not mf.is_file():
        raise BundleError(f"not a model bundle: {str(path)!r} has no {MANIFEST}")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"malformed {MANIFEST} in {str(path)!r}: {err}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"malformed {MANIFEST} in {str(path)!r}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{MANIFEST} in {str(path)!r} lacks required key(s): {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise BundleError(f"unsupported bundle format {manifest['format']!r} (expected {FORMAT!r})")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise BundleError(f"{MANIFEST}: 'files' must map file names to sha256 hex digests")
    runtime = manifest.get("runtime", "torch")
    if runtime not in RUNTIMES:
        raise BundleError(f"{MANIFEST}: unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")
    for name in REQUIRED_FILES + (model_file(manifest),):
        if name not in files:
            raise BundleError(f"{MANIFEST}: 'files' does not list required file {name!r}")
    calibrated = manifest.get("calibrated_model")
    if calibrated is not None and calibrated != files[model_file(manifest)]:
        raise BundleError(
            f"{MANIFEST}: the calibration belongs to model sha256 {str(calibrated)[:12]}... but "
            f"{model_file(manifest)} is {files[model_file(manifest)][:12]}...; re-export or recalibrate the bundle"
        )
    return manifest


def model_file(manifest: dict) -> str:
    """The bundle's network file: ``weights.pt`` (torch) or the ONNX file the manifest names."""
    if manifest.get("runtime", "torch") == "onnx":
        onnx = manifest.get("onnx")
        if not isinstance(onnx, dict) or not isinstance(onnx.get("file"), str):
            raise BundleError(f"{MANIFEST}: an onnx bundle needs an 'onnx' object naming its 'file'")
        return onnx["file"]
    return WEIGHTS


def verify_files(path, manifest: dict) -> None:
    """Refuse a bundle whose files are missing or differ from the manifest's sha256."""
    path = Path(path)
    for name, digest in manifest["files"].items():
        if Path(name).name != name:
            raise BundleError(f"{MANIFEST}: file name {name!r} must be a plain name inside the bundle")
        f = path / name
        if not f.is_file():
            raise BundleError(f"bundle {str(path)!r} is missing file {name!r}")
        actual = sha256_file(f)
        if actual != digest:
            raise BundleError(
                f"bundle file {name!r} was modified: sha256 {actual[:12]}... != manifest {digest[:12]}..."
            )


def hash_groups(ids, salt: str | None = None) -> np.ndarray:
    """Anonymous group ids: ``sha256(salt + id)``, 16 hex digits each.

    Only equality matters to the guarantee, so by default the salt is random
    and thrown away: the stored ids cannot be matched with sender ids (not even
    by hashing every possible id), only with each other.
    """
    import hashlib
    import secrets

    salt = secrets.token_hex(16) if salt is None else str(salt)
    uniq, inv = np.unique(np.asarray(ids).astype(str), return_inverse=True)
    hashed = np.array([hashlib.sha256((salt + u).encode()).hexdigest()[:16] for u in uniq])
    return hashed[inv.ravel()] if uniq.size else np.zeros(0, dtype="<U16")


def _write_calibration(path: Path, probs, labels, groups=None, taxonomy_scores=None) -> None:
    arrays = {"probs": np.asarray(probs).astype(np.float32), "labels": labels}
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        if groups.shape != (len(labels),):
            raise BundleError(f"calibration groups must be ({len(labels)},) to match the labels, got {groups.shape}")
        arrays["groups"] = groups
    if taxonomy_scores is not None:
        taxonomy_scores = np.asarray(taxonomy_scores, dtype=np.float64)
        if taxonomy_scores.shape != (len(labels),):
            raise BundleError(f"calibration taxonomy scores must be ({len(labels)},), got {taxonomy_scores.shape}")
        arrays["taxonomy_scores"] = taxonomy_scores
    np.savez_compressed(path / CALIBRATION, **arrays)


def add_calibration_groups(path, groups) -> Path:
    """Store contributor ids of the calibration photos in an existing bundle.

    Rewrites ``calibration.npz`` with the same probs and labels plus
    ``groups`` (anonymise them first with :func:`hash_groups`) and updates
    its sha256 in the manifest; nothing else changes. The other files are
    verified first, so a tampered bundle is refused, not re-signed.
    """
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    with np.load(path / CALIBRATION, allow_pickle=False) as z:
        probs, labels = z["probs"], z["labels"]
        scores = z["taxonomy_scores"] if "taxonomy_scores" in z.files else None
    _write_calibration(path, probs, labels, groups, scores)
    manifest["files"][CALIBRATION] = sha256_file(path / CALIBRATION)
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_calibration_groups(path) -> np.ndarray | None:
    """The ``groups`` array of a bundle's calibration.npz, or None."""
    with np.load(Path(path) / CALIBRATION, allow_pickle=False) as z:
        return np.asarray(z["groups"]).astype(str) if "groups" in z.files else None


def load_calibration_taxonomy_scores(path) -> np.ndarray | None:
    """The detector scores stored with a bundle's calibration photos, or None."""
    with np.load(Path(path) / CALIBRATION, allow_pickle=False) as z:
        return np.asarray(z["taxonomy_scores"], dtype=np.float64) if "taxonomy_scores" in z.files else None


def _load_npz(path: Path, name: str, n_leaves: int):
    try:
        with np.load(path / name, allow_pickle=False) as z:
            probs, labels = z["probs"], z["labels"]
    except (KeyError, ValueError, OSError) as err:
        raise BundleError(f"bundle file {name!r} must hold arrays 'probs' and 'labels': {err}") from None
    return _check_probs(probs, labels, n_leaves, Path(name).stem)


def load_bundle(path=None, *, verify: bool = True, threads: int | None = None) -> Bundle:
    """Load and check a model bundle.

    Parameters
    ----------
    path : str or Path or None
        Bundle directory or bundled name; ``None`` loads ``$HEDGED_MODEL`` when
        set, else :data:`DEFAULT_BUNDLE` (:func:`resolve_bundle`).
    verify : bool
        Check each file's sha256 against the manifest (a few ms for a 7 MB bundle).
    threads : int or None
        ONNX bundles: ONNX Runtime's intra-op threads (``None``: its default, one per
        core). Torch bundles ignore it (``torch.set_num_threads`` is process-wide).

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        Missing directory/file, malformed manifest, hash mismatch, or pieces that
        disagree (taxonomy leaves vs head size vs calibration columns, bad TTA angles,
        bad temperature, weights that do not fit the architecture).
    """
    path = resolve_bundle(path)
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)

    try:
        taxonomy = Taxonomy.from_yaml(path / TAXONOMY)
    except TaxonomyError as err:
        raise BundleError(f"bundle taxonomy is invalid: {err}") from None
    n_leaves = taxonomy.n_leaves
    if manifest["num_classes"] != n_leaves:
        raise BundleError(f"manifest num_classes={manifest['num_classes']} but the taxonomy has {n_leaves} leaves")
    if "leaves" in manifest and list(manifest["leaves"]) != list(taxonomy.leaves):
        raise BundleError("manifest leaves differ from the taxonomy's leaf order")
    try:
        angles = check_angles(manifest["tta_angles"])
    except ValueError as err:
        raise BundleError(f"{MANIFEST}: {err}") from None
    temperature = manifest["temperature"]
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise BundleError(f"{MANIFEST}: temperature must be a positive number, got {temperature!r}")
    try:
        preprocess = Preprocess.from_dict(manifest["preprocess"])
    except (TypeError, ValueError) as err:
        raise BundleError(f"{MANIFEST}: bad preprocess recipe: {err}") from None
    arch = manifest["arch"]
    runtime = manifest.get("runtime", "torch")
    if runtime == "onnx":
        from hedged.models.onnx_model import OnnxModel

        model = OnnxModel.from_bundle(path, manifest, n_leaves=n_leaves, threads=threads)
    else:
        model = _load_torch_model(path, arch, n_leaves)

    cal_p, cal_y = _load_npz(path, CALIBRATION, n_leaves)
    cal_groups = load_calibration_groups(path)
    if cal_groups is not None and cal_groups.shape != cal_y.shape:
        raise BundleError(f"calibration groups have shape {cal_groups.shape} but there are {cal_y.shape[0]} labels")
    cal_scores = load_calibration_taxonomy_scores(path)
    if cal_scores is not None and cal_scores.shape != cal_y.shape:
        raise BundleError(f"calibration taxonomy scores have shape {cal_scores.shape} but there are "
                          f"{cal_y.shape[0]} labels")
    test_p = test_y = split = None
    if TEST in manifest["files"]:
        test_p, test_y = _load_npz(path, TEST, n_leaves)
    if SPLIT in manifest["files"]:
        split = json.loads((path / SPLIT).read_text())
    detector = _load_detector(path, manifest, model) if OOD in manifest["files"] else None
    return Bundle(
        model=model,
        arch=arch,
        taxonomy=taxonomy,
        preprocess=preprocess,
        tta_angles=angles,
        temperature=float(temperature),
        calibration_probs=cal_p,
        calibration_labels=cal_y,
        metrics=manifest.get("metrics", {}),
        provenance=manifest.get("provenance", {}),
        test_probs=test_p,
        test_labels=test_y,
        split=split,
        path=path,
        detector=detector,
        calibration_groups=cal_groups,
        calibration_taxonomy_scores=cal_scores if detector is not None else None,
        runtime=runtime,
        manifest=manifest,
    )


def _load_detector(path: Path, manifest: dict, model):
    from hedged.hedging.ood import InTaxonomyDetector

    try:
        det = InTaxonomyDetector.from_dict(json.loads((path / OOD).read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise BundleError(f"bundle file {OOD!r}: {err}") from None
    if OOD_ARRAYS in manifest["files"]:
        try:
            with np.load(path / OOD_ARRAYS, allow_pickle=False) as z:
                det.set_head(**{k: z[k] for k in _OOD_ARRAY_KEYS if k in z.files})
        except (ValueError, OSError) as err:
            raise BundleError(f"bundle file {OOD_ARRAYS!r} is unreadable: {err}") from None
    # an exported model says its feature width itself (OnnxModel.n_features)
    dim = getattr(model, "n_features", None) or model.get_classifier().in_features
    needs = {"imagenet": ("imagenet_weight", "imagenet_bias", "imagenet_in"),
             "mahalanobis": ("feature_mean", "feature_precision"),
             "mahalanobis_class": ("class_means", "feature_precision")}
    for signal, keys in needs.items():
        if signal in det.signals:
            missing = [k for k in keys if getattr(det, k + "_", None) is None]
            if missing:
                raise BundleError(f"the detector reads {signal!r} but {OOD_ARRAYS!r} lacks {', '.join(missing)}")
    dim = det.feature_dims or dim
    for key in ("imagenet_weight", "feature_precision", "class_means"):
        a = getattr(det, key + "_", None)
        if a is not None and a.shape[-1] != dim:
            raise BundleError(f"{OOD_ARRAYS}: {key} takes {a.shape[-1]} features, the model gives {dim}")
    return det


_OOD_ARRAY_KEYS = ("imagenet_weight", "imagenet_bias", "imagenet_in", "feature_mean", "feature_precision",
                   "class_means")


def save_detector(path, detector, *, info=None, calibration_scores=None) -> Path:
    """Add (or replace) the out-of-taxonomy detector of an existing bundle.

    Writes ``ood.json`` (plain JSON: ``detector.to_dict()`` plus ``info``) and, when
    the detector reads ``imagenet`` or ``mahalanobis``, ``ood.npz`` with the arrays
    attached by ``detector.set_head`` (fp16 for the two matrices, to keep the git
    footprint small; fit the detector with the rounded values, so that its stored
    calibration scores are what loading reproduces), then records their sha256 in
    the manifest so that loading keeps checking every file.
    """
    path = Path(path)
    manifest = read_manifest(path)
    params = {**detector.to_dict(), **_jsonable(info or {})}
    (path / OOD).write_text(json.dumps(params, indent=1) + "\n")
    files = dict(manifest["files"])
    files[OOD] = sha256_file(path / OOD)
    arrays = {k: getattr(detector, k + "_") for k in _OOD_ARRAY_KEYS if getattr(detector, k + "_", None) is not None}
    if arrays and detector.needs_features:
        for k in ("imagenet_weight", "feature_precision"):
            if k in arrays:
                arrays[k] = arrays[k].astype(np.float16)
        np.savez_compressed(path / OOD_ARRAYS, **arrays)
        files[OOD_ARRAYS] = sha256_file(path / OOD_ARRAYS)
    else:
        (path / OOD_ARRAYS).unlink(missing_ok=True)
        files.pop(OOD_ARRAYS, None)
    if calibration_scores is not None:
        # each calibration photo's score: what the calibration needs to count its rejections
        with np.load(path / CALIBRATION, allow_pickle=False) as z:
            probs, labels = z["probs"], z["labels"]
            groups = z["groups"] if "groups" in z.files else None
        _write_calibration(path, probs, labels, groups, calibration_scores)
        files[CALIBRATION] = sha256_file(path / CALIBRATION)
    manifest["files"] = files
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _load_torch_model(path: Path, arch: str, n_leaves: int):
    from hedged.models.extras import require_torch

    require_torch(f"torch bundles such as {path} (the default bundle runs on ONNX Runtime)")
    import torch

    from hedged.models.registry import ARCHS, create_model, describe_load_error

    from hedged.models.ensemble import member_archs

    try:
        members = member_archs(arch)
    except ValueError as err:
        raise BundleError(f"{MANIFEST}: {err}") from None
    if arch not in ARCHS and not (members and all(m in ARCHS for m in members)):
        raise BundleError(f"{MANIFEST}: unknown architecture {arch!r}; expected one of {list(ARCHS)} "
                          "or an ensemble of them")
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise BundleError(f"cannot read {WEIGHTS}: {describe_load_error(err)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{WEIGHTS} does not hold a state dict of tensors")
    model = create_model(arch, num_classes=n_leaves, weights=None)
    head = _head_size(state, model)
    if head != n_leaves:
        raise BundleError(f"the weights' classifier has {head} outputs but the taxonomy has {n_leaves} leaves")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise BundleError(f"{WEIGHTS} does not fit {arch}: {detail}") from None
    model.eval()
    return model


TINY_TAXONOMY = {
    "format": "hedged-taxonomy/1",
    "name": "things",
    "naming": "dotted",
    "children": {
        "animal": {
            "display_name": "Animal",
            "children": {
                "cat": {"display_name": "Cat", "aliases": ["Cat"]},
                "dog": {"display_name": "Dog", "aliases": ["Dog"]},
            },
        },
        "car": {"display_name": "Car", "aliases": ["Car"]},
    },
}


def make_tiny_bundle(path, *, n_cal: int = 300, input_size: int = 64, tta_angles=(0.0,), seed: int = 0) -> Path:
    """Write a small, valid bundle in well under a second, for tests.

    Three leaves (``animal.cat``, ``animal.dog``, ``car``; aliases ``Cat``, ``Dog``,
    ``Car``), a randomly initialised EfficientNet-Lite0 with a 3-class head,
    ``input_size`` px inputs, and ``n_cal`` synthetic calibration (and test) rows
    whose labels are drawn from their posteriors, so they are calibrated by construction.
    """
    import torch

    from hedged.models.registry import create_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    taxonomy = Taxonomy.from_dict(TINY_TAXONOMY)
    model = create_model("efficientnet_lite0", num_classes=taxonomy.n_leaves, weights=None)

    def synthetic(n):
        logits = rng.normal(size=(n, taxonomy.n_leaves)) * 3.0
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
        return p, y

    cal_p, cal_y = synthetic(n_cal)
    test_p, test_y = synthetic(n_cal)
    return save_bundle(
        path,
        model=model,
        arch="efficientnet_lite0",
        taxonomy=taxonomy,
        preprocess=Preprocess(input_size, "squash", mean=(0.5,) * 3, std=(0.5,) * 3),
        tta_angles=tta_angles,
        temperature=1.0,
        calibration_probs=cal_p,
        calibration_labels=cal_y,
        test_probs=test_p,
        test_labels=test_y,
        split={"calibration": [f"cal{i}" for i in range(n_cal)], "test": [f"test{i}" for i in range(n_cal)]},
        metrics={"note": "synthetic tiny bundle for tests"},
        provenance={"data": "synthetic"},
    )
