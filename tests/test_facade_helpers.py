"""Shared helpers for the facade / CLI / report tests (no tests here)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

CAR = 2  # leaf index of "car" in models.bundle.make_tiny_bundle's taxonomy


def make_biased_bundle(path, leaves=(CAR,), tta_angles=(0.0,)) -> Path:
    """The tiny test bundle with a head that puts almost all mass on ``leaves`` for every image.

    ``(CAR,)``: p(car) ~ 0.9993; ``(0, 1)``: cat and dog ~ 0.4998 each, so the
    answer is their parent ``animal``.

    A randomly initialised head gives near-uniform posteriors, for which DARTS
    always answers the root; a fixed, confident head makes the answers known.
    """
    import torch

    from hedged.models.bundle import load_bundle, make_tiny_bundle, save_bundle

    make_tiny_bundle(path, tta_angles=tta_angles)
    b = load_bundle(path)
    head = b.model.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[list(leaves)] = 8.0
    return save_bundle(
        path,
        model=b.model,
        arch=b.arch,
        taxonomy=b.taxonomy,
        preprocess=b.preprocess,
        tta_angles=b.tta_angles,
        temperature=b.temperature,
        calibration_probs=b.calibration_probs,
        calibration_labels=b.calibration_labels,
        test_probs=b.test_probs,
        test_labels=b.test_labels,
        split=b.split,
        metrics=b.metrics,
        provenance=b.provenance,
    )


@functools.lru_cache(maxsize=None)
def cached_bundle(leaves=(CAR,), tta_angles=(0.0,)) -> Path:
    """:func:`make_biased_bundle` built once per test session (a few seconds each); read-only for tests."""
    root = Path(tempfile.mkdtemp(prefix="hedged-test-bundle-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return make_biased_bundle(root / "bundle", leaves=leaves, tta_angles=tta_angles)


def write_images(folder, n: int = 3, corrupt: bool = False, seed: int = 0) -> list[Path]:
    """``n`` small random JPEG/PNG images (plus ``corrupt.jpg`` when asked) in ``folder``."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / (f"img{i}.png" if i % 2 else f"img{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    if corrupt:
        bad = folder / "corrupt.jpg"
        bad.write_bytes(b"\xff\xd8\xff this is not really a JPEG")
        paths.append(bad)
    return paths


def synthetic_split(taxonomy, n: int, seed: int, sharpness: float = 2.0):
    """Posteriors with labels drawn from them (calibrated by construction)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, taxonomy.n_leaves)) * sharpness
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return p, y
