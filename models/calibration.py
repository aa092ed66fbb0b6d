"""Temperature scaling (Guo et al., 2017) on the TTA posterior, plus calibration metrics.

The temperature is fitted on exactly the quantity used at prediction time: the
average over rotated views of ``softmax(logits / T)``. Fitting it on single-view
logits and then averaging would leave the averaged posterior under-confident,
because averaging already flattens the distribution.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from hedged.models.tta import average_view_probs

T_BOUNDS = (0.05, 20.0)


def _check_labels(labels, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    return y


def nll(probs, labels, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood (nats) of integer ``labels`` under ``probs`` (N x L)."""
    p = np.asarray(probs, dtype=np.float64)
    y = _check_labels(labels, p.shape[0], p.shape[1])
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, None))))


def accuracy(probs, labels) -> float:
    """Flat top-1 accuracy."""
    p = np.asarray(probs)
    y = _check_labels(labels, p.shape[0], p.shape[1])
    return float(np.mean(p.argmax(axis=1) == y))


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width confidence bins (Guo et al., 2017)."""
    p = np.asarray(probs, dtype=np.float64)
    y = _check_labels(labels, p.shape[0], p.shape[1])
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, conf - correct, minlength=n_bins))
    return float(gap.sum() / max(len(y), 1)) if count.sum() else 0.0


def fit_temperature(logits_or_view_logits, labels, bounds=T_BOUNDS) -> float:
    """Temperature minimising the NLL of the view-averaged posterior.

    Parameters
    ----------
    logits_or_view_logits : array-like
        ``(N, L)`` logits or ``(N, k, L)`` per-view logits (``k`` TTA views).
    labels : array-like of int
        ``(N,)`` true class indices.
    bounds : (float, float)
        Search interval for ``T``; the search runs on ``log T`` (scipy's bounded
        Brent method), which is better conditioned than ``T`` itself.

    Returns
    -------
    float
        The fitted temperature ``T > 0``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 5)) * 3
    >>> y = np.array([rng.choice(5, p=np.exp(r / 2) / np.exp(r / 2).sum()) for r in z])
    >>> round(fit_temperature(z, y), 1)  # doctest: +SKIP
    2.0
    """
    z = np.asarray(logits_or_view_logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[:, None, :]
    if z.ndim != 3 or z.shape[0] == 0:
        raise ValueError(f"logits must be (N, L) or (N, k, L) with N > 0, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values")
    y = _check_labels(labels, z.shape[0], z.shape[2])
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")

    def objective(log_t: float) -> float:
        return nll(average_view_probs(z, float(np.exp(log_t))), y)

    res = minimize_scalar(objective, bounds=(np.log(lo), np.log(hi)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))
