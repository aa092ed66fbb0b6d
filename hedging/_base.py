"""Shared machinery of the decision rules: input checks, node posteriors, calibration.

Every rule maps a leaf-posterior matrix to one node per sample and has a single
scalar parameter ``t`` (DARTS: lambda; LEAF-GT / climbing: a confidence
threshold) such that ``t = inf`` predicts the root for every sample. Calibration
turns the calibration samples into the exact step function ``t -> number of
correct calibration predictions`` and every accuracy target is a lookup in it.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from scipy import stats

#: Tolerance on row sums of the posterior matrix.
ROW_SUM_TOL = 1e-3
#: Node-posterior elements per chunk (float64: 32 MB per chunk-sized array).
CHUNK_ELEMENTS = 4_000_000

GUARANTEES = ("pac", "expected")


class NotFittedError(ValueError, AttributeError):
    """A rule was used before :meth:`fit` (same bases as scikit-learn's)."""


def check_probs(probs, n_leaves: int, name: str = "probs") -> np.ndarray:
    """Validate a leaf-posterior matrix without copying it.

    Checks: 2-D, ``n_leaves`` columns, finite, non-negative, rows summing to 1
    within :data:`ROW_SUM_TOL`. float32 input stays float32 (node posteriors
    are computed in float64 chunk by chunk).

    Raises
    ------
    ValueError
        Naming the expected and the given shape, or the first offending row.
    """
    arr = np.asarray(probs)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.float16:
        arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != n_leaves:
        raise ValueError(f"{name} must have shape (n_samples, {n_leaves}) (one column per leaf), got {arr.shape}")
    if arr.shape[0] == 0:
        return arr
    # Row sums are NaN/inf exactly when a row holds a NaN or an inf, so one
    # reduction checks finiteness without an N x L boolean temporary.
    sums = arr.sum(axis=1, dtype=np.float64)
    bad = ~np.isfinite(sums)
    if bad.any():
        raise ValueError(f"{name} contains NaN or infinite values (first in row {int(np.argmax(bad))})")
    if arr.min() < 0:
        row = int(np.argmax((arr < 0).any(axis=1)))
        raise ValueError(f"{name} contains negative values (first in row {row})")
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(f"{name} rows must sum to 1 within {ROW_SUM_TOL:g}; row {row} sums to {sums[row]:.6g}")
    return arr


def check_accuracy(accuracy) -> float:
    """The accuracy target as a float in (0, 1]; ValueError otherwise."""
    if isinstance(accuracy, bool) or not isinstance(accuracy, numbers.Real):
        raise ValueError(f"accuracy must be a number in (0, 1], got {accuracy!r}")
    a = float(accuracy)
    if not 0.0 < a <= 1.0:  # also rejects NaN
        raise ValueError(f"accuracy must be in (0, 1], got {accuracy!r}")
    return a


def check_parameter(value, name: str) -> float:
    """A rule parameter (lambda or threshold): a number >= 0, inf allowed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    v = float(value)
    if not v >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0 (inf allowed), got {value!r}")
    return v


def clopper_pearson_lower(k, n: int, delta: float) -> np.ndarray:
    """One-sided exact binomial lower confidence bound at level ``1 - delta``.

    ``P(true accuracy < bound) <= delta`` for ``k`` successes in ``n`` trials.
    ``k = n`` gives ``delta ** (1 / n)``; ``k = 0`` gives 0.
    """
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        low = stats.beta.ppf(delta, k, n - k + 1)
    return np.where(k > 0, low, 0.0)


def samples_needed(accuracy: float, delta: float) -> int:
    """Fewest calibration samples whose bound can reach ``accuracy`` (all correct).

    With ``n`` correct out of ``n`` the Clopper-Pearson lower bound is
    ``delta ** (1/n)``, which reaches ``accuracy`` iff ``n >= ln delta / ln accuracy``.
    """
    return math.ceil(math.log(delta) / math.log(accuracy) - 1e-12)


class StepCalibration:
    """Calibration accuracy of a one-parameter rule as an exact step function.

    ``starts`` (ascending, ``starts[0] == 0``) and ``n_correct``: on
    ``[starts[j], starts[j+1])`` the rule gets ``n_correct[j]`` of the ``n``
    calibration samples right; at ``t = inf`` it predicts the root (all right).

    Parameter selection for a target accuracy ``a``:

    * ``"expected"``: the smallest ``t`` whose calibration accuracy is >= ``a``.
    * ``"pac"``: fixed-sequence testing from the conservative end (``t = inf``
      downwards, as in Learn-then-Test): walk the segments from the largest
      ``t`` down while the one-sided Clopper-Pearson lower bound of each
      segment's accuracy is >= ``a``; return the start of the last segment
      that passed. The order is fixed before seeing data, so the family-wise
      error is at most ``delta`` even though the segments are data dependent
      (any failure implies rejecting the first truly-bad parameter, a fixed
      point, which has probability <= delta).
    """

    def __init__(self, starts: np.ndarray, n_correct: np.ndarray, n: int, guarantee: str, delta: float):
        self.starts = np.asarray(starts, dtype=np.float64)
        self.n_correct = np.asarray(n_correct, dtype=np.int64)
        self.n = int(n)
        self.guarantee = guarantee
        self.delta = delta
        self.accuracy = self.n_correct / max(self.n, 1)
        if guarantee == "pac":
            self.lower = clopper_pearson_lower(self.n_correct, self.n, delta)
            # Segment j is selectable iff it and every segment above it pass:
            # the suffix minimum, non-decreasing in j, so a target is a search.
            self._key = np.minimum.accumulate(self.lower[::-1])[::-1]
        else:
            self.lower = None
            # Smallest t meeting the target = first index where the running
            # maximum of the accuracy reaches it.
            self._key = np.maximum.accumulate(self.accuracy)

    def select(self, accuracy: float, what: str = "parameter") -> float:
        """The calibrated parameter for ``accuracy`` (inf = root for all)."""
        if accuracy >= 1.0 or self.n == 0:
            # Only the root is certainly right on unseen data.
            if self.n == 0:
                warnings.warn("no calibration samples: predicting the root for every sample", stacklevel=3)
            return math.inf
        j = int(np.searchsorted(self._key, accuracy, side="left"))
        if j < len(self.starts):
            return float(self.starts[j])
        if self.guarantee == "pac":
            need = samples_needed(accuracy, self.delta)
            if self.n < need:
                msg = (
                    f"{self.n} calibration samples cannot certify accuracy {accuracy:g} with delta={self.delta:g}: "
                    f"at least {need} are needed even if all are correct; predicting the root for every sample"
                )
            else:
                msg = (
                    f"no {what} certifies accuracy {accuracy:g} with delta={self.delta:g} on {self.n} "
                    "calibration samples; predicting the root for every sample"
                )
        else:
            msg = f"no {what} reaches calibration accuracy {accuracy:g}; predicting the root for every sample"
        warnings.warn(msg, stacklevel=3)
        return math.inf


class HedgingRule:
    """Base of the decision rules: parameters, fit, predict (scikit-learn shape).

    Subclasses implement ``_calibration_steps(probs, y) -> (starts, n_correct)``
    and ``_decide(probs, t) -> node indices`` on validated input and a finite ``t``.
    """

    _parameter_name = "parameter"

    def __init__(self, taxonomy, guarantee: str = "pac", delta: float = 0.05):
        self.taxonomy = taxonomy
        self.guarantee = guarantee
        self.delta = delta

    # -------------------------------------------------------------- helpers
    def _check_params(self) -> None:
        if self.guarantee not in GUARANTEES:
            raise ValueError(f"guarantee must be one of {GUARANTEES}, got {self.guarantee!r}")
        d = self.delta
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0.0 < float(d) < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {d!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibration_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(probs, labels) on calibration data first"
            )

    def _chunk_rows(self) -> int:
        return max(1, CHUNK_ELEMENTS // max(self.taxonomy.n_nodes, 1))

    def _node_probs(self, chunk: np.ndarray) -> np.ndarray:
        """Node posteriors of a chunk of rows, float64, shape (rows, n_nodes)."""
        # The product comes out nodes x rows; the row-major copy makes the
        # per-sample reductions (max/argmax over nodes) contiguous, ~3x faster.
        return np.ascontiguousarray((self._membership_t @ np.asarray(chunk, dtype=np.float64).T).T)

    def _prepare(self) -> None:
        tax = self.taxonomy
        # CSR of membership^T: sparse on the left makes one pass over the
        # non-zeros for a whole chunk of samples.
        self._membership_t = tax.membership.T.tocsr()
        self._leaf_nodes = np.asarray(tax.node_index(list(tax.leaves)), dtype=np.int64)
        self._root = int(tax.node_index(tax.root))
        m = tax.membership.tocsr()
        m.sort_indices()
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
        # Sorted keys leaf * n_nodes + node: "is node v an ancestor-or-self of
        # leaf l" becomes a binary search, with no dense L x V matrix.
        self._member_keys = rows * tax.n_nodes + m.indices.astype(np.int64)

    def _is_under(self, leaves: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        keys = leaves.astype(np.int64) * self.taxonomy.n_nodes + nodes
        pos = np.searchsorted(self._member_keys, keys)
        pos = np.minimum(pos, len(self._member_keys) - 1)
        return self._member_keys[pos] == keys

    def _check_labels(self, labels, n: int) -> np.ndarray:
        y = np.asarray(self.taxonomy.resolve_labels(labels))
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"labels must have shape ({n},) to match probs, got {y.shape}")
        return y.astype(np.int64)

    # -------------------------------------------------------------- API
    def fit(self, probs, labels):
        """Calibrate on held-out data.

        Parameters
        ----------
        probs : array-like, shape (n_samples, n_leaves)
            Leaf posteriors of the calibration samples, columns in
            ``taxonomy.leaves`` order.
        labels : array-like, shape (n_samples,)
            True leaves: indices, leaf names or leaf aliases.

        Returns
        -------
        self
        """
        self._check_params()
        self._prepare()
        probs = check_probs(probs, self.taxonomy.n_leaves)
        y = self._check_labels(labels, probs.shape[0])
        starts, n_correct = self._calibration_steps(probs, y)
        self.n_calibration_ = int(probs.shape[0])
        self.calibration_ = StepCalibration(starts, n_correct, probs.shape[0], self.guarantee, float(self.delta))
        return self

    def _parameter_for(self, accuracy) -> float:
        self._check_fitted()
        return self.calibration_.select(check_accuracy(accuracy), self._parameter_name)

    def predict_index(self, probs, accuracy=0.95) -> np.ndarray:
        """Node indices (into ``taxonomy.nodes``), one per sample, for a target accuracy."""
        t = self._parameter_for(accuracy)
        probs = check_probs(probs, self.taxonomy.n_leaves)
        return self._decide_index(probs, t)

    def _decide_with(self, probs, t, name: str) -> np.ndarray:
        """``decide_index`` of the subclasses: a given parameter, no calibration needed."""
        t = check_parameter(t, name)
        if not hasattr(self, "_root"):
            self._prepare()
        return self._decide_index(check_probs(probs, self.taxonomy.n_leaves), t)

    def _decide_index(self, probs: np.ndarray, t: float) -> np.ndarray:
        # An infinite parameter means the root for everyone, whatever the rule.
        if math.isinf(t):
            return np.full(probs.shape[0], self._root, dtype=np.int64)
        return self._decide(probs, t)

    def predict(self, probs, accuracy=0.95) -> np.ndarray:
        """Node names, one per sample, meeting ``accuracy`` under ``guarantee``.

        Parameters
        ----------
        probs : array-like, shape (n_samples, n_leaves)
        accuracy : float in (0, 1]
            Target hierarchical accuracy; any value works without refitting.

        Returns
        -------
        numpy.ndarray of str, shape (n_samples,)
        """
        return self._names(self.predict_index(probs, accuracy))

    def _names(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.taxonomy.nodes, dtype=str)[idx]

    def calibration_curve(self) -> dict:
        """The exact calibration step function: segment starts, accuracy, PAC bound."""
        self._check_fitted()
        c = self.calibration_
        out = {self._parameter_name: c.starts.copy(), "accuracy": c.accuracy.copy()}
        if c.lower is not None:
            out["lower_bound"] = c.lower.copy()
        return out
