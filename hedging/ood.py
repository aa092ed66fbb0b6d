"""Is the photo in the taxonomy at all? A calibrated out-of-taxonomy detector (torch-free).

A classifier trained on 17 garments answers a garment for anything, a black
image or a colour wheel included. The detector turns a few scores the model
produces anyway into one decision:

``imagenet``
    log of the ImageNet probability mass on the classes the WordNet hierarchy puts
    under clothing, footwear or headdress, from the ImageNet head that ships with
    the backbone weights applied to the bundle model's penultimate features;
``energy``
    ``logsumexp`` of the model's own logits (Liu et al. 2020: in-distribution
    inputs get higher values);
``max_logit``
    the largest logit (Hendrycks et al. 2022);
``feature_norm``
    the L2 norm of the penultimate features;
``mahalanobis``
    minus the squared Mahalanobis distance of the features to the mean of the
    taxonomy's photos (one mean, Ledoit-Wolf shrunk covariance);
``mahalanobis_class``
    minus the squared Mahalanobis distance to the *nearest class* mean, with one
    shared covariance (Lee et al. 2018's class-conditional Gaussians): a class far
    from the others (bodysuits) is judged against its own mean, not the average
    garment's, so the false-rejection rate holds per class.

Each is computed per TTA view and averaged over the views. A logistic
regression on the standardised signals (fitted on clothing photos against
non-clothing images) gives one score; the reject threshold is a finite-sample
quantile of the scores of the *calibration* clothing photos, so that at most a
fraction ``max_false_rejection`` of clothing photos is called "not clothing"
(in expectation over exchangeable photos, whatever the score's distribution).
Like the DARTS rule, the calibration is stored once and the rate is chosen at
predict time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hedged.hedging._base import NotFittedError

__all__ = ["SIGNALS", "InTaxonomyDetector", "finite_sample_threshold", "taxonomy_signals"]

SIGNALS = ("imagenet", "energy", "max_logit", "feature_norm", "mahalanobis", "mahalanobis_class")
_NEEDS_FEATURES = ("imagenet", "feature_norm", "mahalanobis", "mahalanobis_class")


def _logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    m = z.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def taxonomy_signals(
    logits,
    features=None,
    *,
    imagenet_weight=None,
    imagenet_bias=None,
    imagenet_in=None,
    feature_mean=None,
    feature_precision=None,
    class_means=None,
    signals: Sequence[str] = SIGNALS,
) -> np.ndarray:
    """The detector's raw signals of each image, averaged over its TTA views.

    Parameters
    ----------
    logits : array-like, shape (N, k, L) or (N, L)
        The model's logits per view (``k`` views; 2-D means one view).
    features : array-like, shape (N, k, D) or (N, D), optional
        Penultimate features per view; needed for ``imagenet`` and ``feature_norm``.
    imagenet_weight, imagenet_bias : array-like, shapes (C, D) and (C,)
        The ImageNet head; needed for ``imagenet``.
    imagenet_in : array-like of int
        ImageNet class indices inside the taxonomy (clothing, footwear, headdress).
    feature_mean, feature_precision : array-like, shapes (D,) and (D, D)
        Mean and inverse covariance of in-taxonomy features; needed for ``mahalanobis``.
    class_means : array-like, shape (C, D)
        Per-class feature means; with ``feature_precision`` (the shared within-class
        covariance's inverse) needed for ``mahalanobis_class``.
    signals : sequence of str
        Which of :data:`SIGNALS`, in this column order.

    Returns
    -------
    np.ndarray, shape (N, len(signals)), float64
    """
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown signal(s) {unknown}; expected some of {list(SIGNALS)}")
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[:, None, :]
    if z.ndim != 3:
        raise ValueError(f"logits must be (N, k, L) or (N, L), got shape {z.shape}")
    f = None
    if features is not None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim == 2:
            f = f[:, None, :]
        if f.shape[:2] != z.shape[:2]:
            raise ValueError(f"features {f.shape} and logits {z.shape} must agree on (N, k)")
    cols = []
    for name in signals:
        if name in _NEEDS_FEATURES and f is None:
            raise ValueError(f"signal {name!r} needs the penultimate features")
        if name == "imagenet":
            if imagenet_weight is None or imagenet_in is None:
                raise ValueError("signal 'imagenet' needs imagenet_weight and imagenet_in")
            w = np.asarray(imagenet_weight, dtype=np.float64)
            b = np.zeros(w.shape[0]) if imagenet_bias is None else np.asarray(imagenet_bias, dtype=np.float64)
            zi = f @ w.T + b
            v = _logsumexp(zi[..., np.asarray(imagenet_in, dtype=np.int64)]) - _logsumexp(zi)
        elif name == "energy":
            v = _logsumexp(z)
        elif name == "max_logit":
            v = z.max(axis=-1)
        elif name == "mahalanobis":
            if feature_mean is None or feature_precision is None:
                raise ValueError("signal 'mahalanobis' needs feature_mean and feature_precision")
            d = f - np.asarray(feature_mean, dtype=np.float64)
            v = -np.einsum("nkd,nkd->nk", d @ np.asarray(feature_precision, dtype=np.float64), d)
        elif name == "mahalanobis_class":
            if class_means is None or feature_precision is None:
                raise ValueError("signal 'mahalanobis_class' needs class_means and feature_precision")
            P = np.asarray(feature_precision, dtype=np.float64)
            mu = np.asarray(class_means, dtype=np.float64)
            fp = f @ P
            # |f - mu_c|_P^2 = f P f - 2 f P mu_c + mu_c P mu_c, nearest class
            d2 = (np.einsum("nkd,nkd->nk", fp, f)[..., None] - 2.0 * fp @ mu.T
                  + np.einsum("cd,cd->c", mu @ P, mu)[None, None, :])
            v = -d2.min(axis=-1)
        else:
            v = np.linalg.norm(f, axis=-1)
        cols.append(v.mean(axis=1))
    return np.stack(cols, axis=1) if cols else np.zeros((z.shape[0], 0))


def rejection_rank(n: int, max_false_rejection: float, delta: float | None = None) -> int:
    """How many of ``n`` calibration scores may lie below the reject threshold.

    Rejecting below the ``k``-th smallest of ``n`` exchangeable in-taxonomy scores
    gives a future false-rejection rate ``F(s_(k))`` distributed as
    ``Beta(k, n - k + 1)`` (for a continuous score), so

    * ``delta=None``: ``k = floor(alpha (n + 1))`` keeps the rate at most
      ``alpha`` *on average over calibration draws* (``E = k / (n + 1)``), but a
      given draw exceeds it with probability up to one half;
    * ``delta``: the largest ``k`` with ``P(Beta(k, n - k + 1) > alpha) =
      P(Binomial(n, alpha) < k) <= delta``, so the rate is at most ``alpha``
      with probability ``1 - delta`` over the calibration draw.

    ``0`` (too few scores) means the threshold rejects nothing.

    Examples
    --------
    >>> rejection_rank(619, 0.02), rejection_rank(619, 0.02, delta=0.05)
    (12, 7)
    """
    if not (0.0 <= max_false_rejection < 1.0):
        raise ValueError(f"max_false_rejection must be in [0, 1), got {max_false_rejection!r}")
    if delta is None:
        return math.floor(max_false_rejection * (n + 1) + 1e-9)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    from scipy import stats

    # binom.cdf(k - 1, n, alpha) <= delta, largest k (non-decreasing in k)
    ks = np.arange(1, n + 1)
    ok = stats.binom.cdf(ks - 1, n, max_false_rejection) <= delta
    return int(ks[ok].max()) if ok.any() else 0


def finite_sample_threshold(scores, max_false_rejection: float, delta: float | None = None) -> float:
    """Reject threshold with a finite-sample false-rejection guarantee (:func:`rejection_rank`).

    With ``n`` calibration scores of in-taxonomy inputs and a new in-taxonomy
    input exchangeable with them, rejecting when its score is *below* the
    ``k``-th smallest calibration score keeps the false-rejection rate at most
    ``max_false_rejection``: on average over calibration draws (``delta=None``),
    or with probability ``1 - delta`` (ties only lower it). ``k = 0`` (too few
    scores for this rate) rejects nothing: the threshold is ``-inf``.

    Examples
    --------
    >>> finite_sample_threshold([5, 1, 4, 2, 3, 9, 8, 7, 6], 0.2)  # k = floor(0.2 * 10) = 2
    2.0
    >>> finite_sample_threshold([5, 1, 4, 2, 3, 9, 8, 7, 6], 0.2, delta=0.05)  # P(Bin(9, 0.2) < 1) = 0.13
    -inf
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    k = rejection_rank(s.size, max_false_rejection, delta)
    return float(s[k - 1]) if k >= 1 else -math.inf


class InTaxonomyDetector:
    """Logistic regression on :func:`taxonomy_signals`, with a calibrated reject threshold.

    Parameters
    ----------
    signals : sequence of str
        The signals it reads (columns of ``X``), a subset of :data:`SIGNALS`.
    max_false_rejection : float
        Default share of in-taxonomy photos allowed to be called "outside".
    C : float
        Inverse L2 regularisation of the logistic regression.
    delta : float or None
        The threshold keeps the false-rejection rate at most ``max_false_rejection``
        with probability ``1 - delta`` over the draw of the calibration photos
        (:func:`rejection_rank`); ``None``: only on average over draws. With photos
        that come in clusters (one contributor's photos score alike) the
        calibration scores are worth fewer independent ones and the rate can
        exceed the bound more often (docs/ood.md).

    Attributes
    ----------
    mean_, scale_ : np.ndarray
        Standardisation of the signals.
    coef_, intercept_ : np.ndarray, float
        The score is ``((X - mean_) / scale_) @ coef_ + intercept_`` (log-odds of
        "in the taxonomy" on the fitting data).
    calibration_scores_ : np.ndarray
        Scores of the calibration split's in-taxonomy photos (sorted).

    Examples
    --------
    >>> det = InTaxonomyDetector(["energy"]).fit(X_fit, y_fit).calibrate(X_cal)  # doctest: +SKIP
    >>> det.predict(X)              # True = in the taxonomy                        # doctest: +SKIP
    """

    def __init__(self, signals: Sequence[str] = ("imagenet", "energy"), max_false_rejection: float = 0.02, C: float = 1.0,
                 delta: float | None = 0.05, feature_dims: int | None = None):
        self.signals = tuple(signals)
        self.max_false_rejection = max_false_rejection
        self.C = C
        self.delta = delta
        # read only the first feature_dims features (an ensemble's first member): its
        # matrices stay the size of one network's
        self.feature_dims = feature_dims

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.signals):
            raise ValueError(f"X must be (n, {len(self.signals)}) signals {list(self.signals)}, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X must be finite")
        return X

    def fit(self, X, y) -> InTaxonomyDetector:
        """Fit the score on signals ``X`` with ``y`` = 1 for in-taxonomy, 0 for outside.

        The classes are weighted to balance (there are usually far more photos
        of one kind). Fit on data kept apart from the calibration split.
        """
        from sklearn.linear_model import LogisticRegression

        X = self._check_X(X)
        y = np.asarray(y).astype(int)
        if y.shape != (X.shape[0],) or set(np.unique(y)) != {0, 1}:
            raise ValueError(f"y must be ({X.shape[0]},) labels with both 0 (outside) and 1 (inside)")
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-12
        lr = LogisticRegression(C=self.C, class_weight="balanced").fit((X - self.mean_) / self.scale_, y)
        self.coef_ = lr.coef_[0].astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        return self

    def score(self, X) -> np.ndarray:
        """In-taxonomy score of each row (higher = more like the taxonomy's photos)."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("InTaxonomyDetector is not fitted: call fit(X, y) first")
        return ((self._check_X(X) - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def calibrate(self, X_in) -> InTaxonomyDetector:
        """Store the scores of held-out in-taxonomy photos (the calibration split)."""
        s = self.score(X_in)
        if s.size == 0:
            raise ValueError("calibrate needs at least one in-taxonomy photo")
        self.calibration_scores_ = np.sort(s)
        return self

    def threshold_for(self, max_false_rejection: float | None = None) -> float:
        """Scores below this are called "outside the taxonomy"."""
        if not hasattr(self, "calibration_scores_"):
            raise NotFittedError("InTaxonomyDetector is not calibrated: call calibrate(X_in) first")
        a = self.max_false_rejection if max_false_rejection is None else max_false_rejection
        return finite_sample_threshold(self.calibration_scores_, a, self.delta)

    def predict(self, X, max_false_rejection: float | None = None) -> np.ndarray:
        """Boolean per row: True = in the taxonomy."""
        return self.score(X) >= self.threshold_for(max_false_rejection)

    # ------------------------------------------------------ from model outputs
    def set_head(
        self, imagenet_weight=None, imagenet_bias=None, imagenet_in=None, feature_mean=None, feature_precision=None,
        class_means=None,
    ) -> InTaxonomyDetector:
        """Attach the arrays the ``imagenet`` (head, in-taxonomy class indices) and
        ``mahalanobis`` (feature mean and precision) signals need."""
        def arr(x, dtype):
            return None if x is None else np.asarray(x, dtype=dtype)

        self.imagenet_weight_ = arr(imagenet_weight, np.float32)
        self.imagenet_bias_ = arr(imagenet_bias, np.float32)
        self.imagenet_in_ = arr(imagenet_in, np.int64)
        self.feature_mean_ = arr(feature_mean, np.float32)
        self.feature_precision_ = arr(feature_precision, np.float32)
        self.class_means_ = arr(class_means, np.float32)
        return self

    @property
    def needs_features(self) -> bool:
        return any(s in _NEEDS_FEATURES for s in self.signals)

    def signals_of(self, logits, features=None) -> np.ndarray:
        """:func:`taxonomy_signals` of model outputs, with this detector's signals and head."""
        if features is not None and self.feature_dims:
            features = np.asarray(features)[..., : self.feature_dims]
        return taxonomy_signals(
            logits,
            features,
            imagenet_weight=getattr(self, "imagenet_weight_", None),
            imagenet_bias=getattr(self, "imagenet_bias_", None),
            imagenet_in=getattr(self, "imagenet_in_", None),
            feature_mean=getattr(self, "feature_mean_", None),
            feature_precision=getattr(self, "feature_precision_", None),
            class_means=getattr(self, "class_means_", None),
            signals=self.signals,
        )

    def check(self, logits, features=None, max_false_rejection: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(in_taxonomy, score)`` per image from its per-view logits (and features)."""
        score = self.score(self.signals_of(logits, features))
        return score >= self.threshold_for(max_false_rejection), score

    # ---------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        """Plain-JSON parameters (a bundle stores them in ``ood.json``)."""
        return {
            "signals": list(self.signals),
            "max_false_rejection": float(self.max_false_rejection),
            "C": float(self.C),
            "delta": self.delta,
            "feature_dims": self.feature_dims,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
            "calibration_scores": self.calibration_scores_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> InTaxonomyDetector:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming what is wrong."""
        try:
            # detectors stored before the threshold had its own confidence: average-rate threshold
            det = cls(d["signals"], d["max_false_rejection"], d.get("C", 1.0), d.get("delta"), d.get("feature_dims"))
            det.mean_ = np.asarray(d["mean"], dtype=np.float64)
            det.scale_ = np.asarray(d["scale"], dtype=np.float64)
            det.coef_ = np.asarray(d["coef"], dtype=np.float64)
            det.intercept_ = float(d["intercept"])
            det.calibration_scores_ = np.sort(np.asarray(d["calibration_scores"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"bad out-of-taxonomy detector parameters: {err!r}") from None
        n = len(det.signals)
        if any(s not in SIGNALS for s in det.signals):
            raise ValueError(f"bad out-of-taxonomy detector parameters: unknown signals {det.signals}")
        if not (det.mean_.shape == det.scale_.shape == det.coef_.shape == (n,)) or det.calibration_scores_.ndim != 1:
            raise ValueError("bad out-of-taxonomy detector parameters: mean/scale/coef must have one entry per signal")
        return det
