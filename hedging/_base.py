"""Shared machinery of the decision rules: input checks, node posteriors, calibration.

Every rule maps a leaf-posterior matrix to one node per sample and has a single
scalar parameter ``t`` (DARTS: lambda; LEAF-GT / climbing: a confidence
threshold) such that ``t = inf`` predicts the root for every sample. Calibration
turns the calibration samples into the exact step function ``t -> number of
correct calibration predictions`` and every accuracy target is a lookup in it.

One tolerance, :data:`TIE_RTOL`, decides what counts as "the same parameter":
DARTS uses it for tied scores inside one sample's envelope, and the
calibration merges events of different samples whose parameters are within it
(their rounding differs by a few ulp when they are mathematically equal). A
merged segment starts at the *largest* parameter of its events, so a decision
at that start sees every one of them: ``decide`` at ``lambda_for(a)`` meets
``a`` on the calibration data, always.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from scipy import special

#: Tolerance on row sums of the posterior matrix.
ROW_SUM_TOL = 1e-3
#: Node-posterior elements per chunk (float64: 32 MB per chunk-sized array).
CHUNK_ELEMENTS = 4_000_000

GUARANTEES = ("pac", "expected")
#: Photos one contributor weighs at most in the group bound (hedging.groups), unless
#: given: chosen by the calibration-design simulation (docs/hedging.md, bench/guarantee_design.py).
DEFAULT_GROUP_CAP = 10
#: Relative gap under which two parameters (or two scores) are the same.
TIE_RTOL = 1e-10


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
        raise ValueError(
            f"{name} contains negative values (first in row {row}): these look like logits or scores, "
            "not probabilities; apply a softmax first"
        )
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(
            f"{name} rows must sum to 1 within {ROW_SUM_TOL:g}; row {row} sums to {sums[row]:.6g} "
            "(if these are logits or scores, apply a softmax first)"
        )
    return arr


def check_accuracy(accuracy) -> float:
    """The accuracy target as a float in (0, 1]; ValueError otherwise."""
    if isinstance(accuracy, bool) or not isinstance(accuracy, numbers.Real):
        raise ValueError(f"accuracy must be a number in (0, 1], got {accuracy!r}")
    a = float(accuracy)
    if not 0.0 < a <= 1.0:  # also rejects NaN
        raise ValueError(f"accuracy must be in (0, 1], got {accuracy!r}")
    return a


def check_accuracies(accuracy):
    """One target -> (float, True); a sequence of targets -> (float array, False)."""
    if isinstance(accuracy, (str, bytes)) or np.ndim(accuracy) == 0:
        return check_accuracy(accuracy.item() if isinstance(accuracy, np.generic) else accuracy), True
    items = list(np.asarray(accuracy, dtype=object).ravel())
    if not items:
        raise ValueError("accuracy must be a number in (0, 1] or a non-empty sequence of them, got []")
    return np.asarray([check_accuracy(a.item() if isinstance(a, np.generic) else a) for a in items]), False


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
        # the Beta(k, n-k+1) quantile: scipy.special's inverse incomplete beta is what
        # stats.beta.ppf computes (identical numbers) without importing scipy.stats,
        # which costs a large share of a command's start-up
        low = special.betaincinv(k, n - k + 1, delta)
    return np.where(k > 0, low, 0.0)


def samples_needed(accuracy: float, delta: float) -> int:
    """Fewest calibration samples whose bound can reach ``accuracy`` (all correct).

    With ``n`` correct out of ``n`` the Clopper-Pearson lower bound is
    ``delta ** (1/n)``, which reaches ``accuracy`` iff ``n >= ln delta / ln accuracy``.
    """
    return math.ceil(math.log(delta) / math.log(accuracy) - 1e-12)


def merge_events(lam: np.ndarray, delta: np.ndarray):
    """Segment starts and count changes from sorted-or-not events ``(lam, delta)``.

    Events whose parameters chain within :data:`TIE_RTOL` (relative) form one
    segment; it starts at the cluster's largest parameter, so that a decision
    there sees all of the cluster's events. Returns ``(starts, counts, cluster)``
    with ``starts`` ascending, ``counts`` the summed deltas per segment and
    ``cluster`` the segment of each event in sorted order (with the order).
    """
    order = np.argsort(lam, kind="stable")
    lam = lam[order]
    if lam.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), order
    new = np.r_[True, lam[1:] > lam[:-1] * (1.0 + TIE_RTOL)]
    # Exact zeros never merge with positive parameters (a relative gap of 0).
    cluster = np.cumsum(new) - 1
    last = np.r_[np.flatnonzero(new)[1:] - 1, lam.size - 1]
    counts = np.bincount(cluster, weights=delta[order], minlength=last.size).astype(np.int64)
    return lam[last], counts, cluster, order


def interior_points(starts: np.ndarray, upper: float = math.inf) -> np.ndarray:
    """The parameter used for each segment ``[starts[j], starts[j+1])`` (last: ``[starts[-1], inf)``).

    A point strictly inside each segment that begins at a calibration breakpoint:
    the midpoint, and for the last one the midpoint up to ``upper`` (the largest
    parameter that still matters, e.g. 1 for a probability threshold), or twice
    its start when ``upper`` is infinite. The first
    segment begins at 0, the end of the parameter's domain and no breakpoint, so
    it keeps 0 (DARTS's ``f_0``: the most informative rule).

    >>> interior_points(np.array([0.0, 1.0, 3.0])).tolist()
    [0.0, 2.0, 6.0]
    >>> interior_points(np.array([0.0])).tolist()
    [0.0]
    """
    starts = np.asarray(starts, dtype=np.float64)
    if starts.size == 0:
        return starts.copy()
    nxt = np.r_[starts[1:], np.nan]
    mid = starts + (nxt - starts) / 2
    mid[-1] = 2.0 * starts[-1] if math.isinf(upper) or upper <= starts[-1] else (starts[-1] + upper) / 2
    if starts[0] <= 0.0:
        mid[0] = starts[0]
    return mid


class StepCalibration:
    """Calibration accuracy of a one-parameter rule as an exact step function.

    ``starts`` (ascending, ``starts[0] == 0``) and ``n_correct``: on
    ``[starts[j], starts[j+1])`` the rule gets ``n_correct[j]`` of the ``n``
    calibration samples right; at ``t = inf`` it predicts the root (all right).

    Parameter selection for a target accuracy ``a``:

    * ``"expected"``: the smallest ``t`` whose calibration accuracy is >= ``a``.
    * ``"pac"``: fixed-sequence testing from the conservative end (``t = inf``
      downwards, as in Learn-then-Test): walk the segments from the largest
      ``t`` down while the one-sided lower confidence bound of each
      segment's accuracy is >= ``a``; return the start of the last segment
      that passed. The order is fixed before seeing data, so the family-wise
      error is at most ``delta`` even though the segments are data dependent
      (any failure implies rejecting the first truly-bad parameter, a fixed
      point, which has probability <= delta). The bound is Clopper-Pearson
      over photos, or :func:`hedged.hedging.groups.group_lower_bounds` over
      groups when ``group_counts`` are given.

    ``key`` is what a target is compared with: a target ``a`` selects segment
    ``j`` = the first with ``key[j] >= a`` (non-decreasing in ``j``).

    The parameter returned for segment ``j`` is ``points[j]``, a point strictly
    inside it (the midpoint, or twice the start of the last, unbounded one), not
    its left end: a decision at a segment's start sits exactly on a calibration
    breakpoint, where a photo whose posteriors round differently (a float32 copy,
    coarse posteriors) falls on the other side. Every calibration decision is the
    same anywhere inside the segment.
    """

    def __init__(self, starts, n_correct, n: int, guarantee: str, delta: float, lower=None, unit: str = "photo",
                 upper: float = math.inf):
        self.starts = np.asarray(starts, dtype=np.float64)
        self.n_correct = np.asarray(n_correct, dtype=np.int64)
        self.n = int(n)
        self.guarantee = guarantee
        self.delta = delta
        self.unit = unit
        #: Sampling units behind the bound: photos, or groups (set by the rule's fit).
        self.n_units = self.n
        self.accuracy = self.n_correct / max(self.n, 1)
        self.points = interior_points(self.starts, upper)
        if guarantee == "pac":
            self.lower = clopper_pearson_lower(self.n_correct, self.n, delta) if lower is None else np.asarray(lower)
            # Segment j is selectable iff it and every segment above it pass:
            # the suffix minimum, non-decreasing in j, so a target is a search.
            self.key = np.minimum.accumulate(self.lower[::-1])[::-1]
        else:
            self.lower = None
            # Smallest t meeting the target = first index where the running
            # maximum of the accuracy reaches it.
            self.key = np.maximum.accumulate(self.accuracy)
        self._warned: set = set()

    def select_many(self, accuracies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parameters for many targets at once, and which targets fell back to the root."""
        a = np.asarray(accuracies, dtype=np.float64)
        if self.n == 0:
            return np.full(a.shape, math.inf), np.ones(a.shape, dtype=bool)
        j = np.searchsorted(self.key, a, side="left")
        out = np.where(j < len(self.starts), self.points[np.minimum(j, len(self.starts) - 1)], math.inf)
        # Only the root is certainly right on unseen data; that is no failure.
        out[a >= 1.0] = math.inf
        return out, (j >= len(self.starts)) & (a < 1.0)

    def select(self, accuracy: float, what: str = "parameter") -> float:
        """The calibrated parameter for ``accuracy`` (inf = root for all)."""
        t, failed = self.select_many(np.array([accuracy]))
        if failed[0] or self.n == 0:
            self.warn_root([accuracy], what)
        return float(t[0])

    def warn_root(self, accuracies, what: str = "parameter") -> None:
        """One warning for all the targets that fell back to the root."""
        accuracies = sorted({float(a) for a in accuracies})
        if not accuracies:
            return
        if self.n == 0:
            warnings.warn("no calibration samples: predicting the root for every sample", stacklevel=4)
            return
        shown = ", ".join(f"{a:g}" for a in accuracies[:3]) + (f" and {len(accuracies) - 3} more" if len(accuracies) > 3 else "")
        lowest = accuracies[0]
        if self.guarantee == "pac":
            need = samples_needed(lowest, self.delta)
            unit = "calibration samples" if self.unit == "photo" else "calibration groups"
            if self.unit == "photo" and self.n < need:
                msg = (
                    f"{self.n} {unit} cannot certify accuracy {shown} with delta={self.delta:g}: "
                    f"at least {need} are needed even if all are correct; predicting the root for every sample"
                )
            else:
                msg = (
                    f"no {what} certifies accuracy {shown} with delta={self.delta:g} on {self.n_units} "
                    f"{unit}; predicting the root for every sample"
                )
        else:
            msg = f"no {what} reaches calibration accuracy {shown}; predicting the root for every sample"
        warnings.warn(msg, stacklevel=4)


class HedgingRule:
    """Base of the decision rules: parameters, fit, predict (scikit-learn shape).

    Subclasses implement ``_events(probs, y) -> (correct0, lam, sample, delta)``
    (whether each calibration sample is right at ``t = 0`` and the parameters
    where that changes, +1 / -1) and ``_decide(probs, t) -> node indices`` on
    validated input and a finite ``t``.

    Every rule returns the node users see: a node with a single child is
    named by that child (the same set of classes, named more precisely; DARTS
    breaks their exact tie towards the parent otherwise).
    """

    _parameter_name = "parameter"
    #: Above this the rule's decisions no longer change (inf: unbounded).
    _parameter_max = math.inf

    def __init__(self, taxonomy, guarantee: str = "pac", delta: float = 0.05, group_cap: int = DEFAULT_GROUP_CAP):
        self.taxonomy = taxonomy
        self.guarantee = guarantee
        self.delta = delta
        self.group_cap = group_cap

    # -------------------------------------------------------------- helpers
    def _check_params(self) -> None:
        if self.guarantee not in GUARANTEES:
            raise ValueError(f"guarantee must be one of {GUARANTEES}, got {self.guarantee!r}")
        d = self.delta
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0.0 < float(d) < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {d!r}")
        from hedged.hedging.groups import check_cap

        check_cap(self.group_cap)

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
        if getattr(self, "_prepared_for", None) is self.taxonomy:
            return
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
        self._specific = most_specific(tax)
        self._prepared_for = tax

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
    def fit(self, probs, labels, groups=None, rejected=None):
        """Calibrate on held-out data.

        Parameters
        ----------
        probs : array-like, shape (n_samples, n_leaves)
            Leaf posteriors of the calibration samples, columns in
            ``taxonomy.leaves`` order.
        labels : array-like, shape (n_samples,)
            True leaves: indices, leaf names or leaf aliases.
        groups : array-like, shape (n_samples,), optional
            Who contributed each sample (any hashable ids, e.g. hashed sender
            ids). With ``guarantee="pac"`` the bound then treats *groups* as
            the exchangeable sampling unit and the samples within a group as
            arbitrarily dependent, each group weighing at most ``group_cap``
            samples (see :mod:`hedged.hedging.groups`). Ignored by
            ``"expected"``. Without groups: one sample, one unit.
        rejected : array-like of bool, shape (n_samples,), optional
            Samples that an out-of-taxonomy detector turns away ("not
            clothing"): the user sees no taxonomy answer for them, so they
            count as wrong at every parameter, the root included, and the
            calibrated accuracy is that of what users see.

        Returns
        -------
        self
        """
        self._check_params()
        self._prepare()
        probs = check_probs(probs, self.taxonomy.n_leaves)
        if probs.shape[0] == 0:
            # Said here rather than as a warning at every predict.
            raise ValueError("no calibration samples: fit needs at least one row of probs and labels")
        y = self._check_labels(labels, probs.shape[0])
        codes = None
        if groups is not None:
            g = np.asarray(groups)
            if g.shape != (probs.shape[0],):
                raise ValueError(f"groups must have shape ({probs.shape[0]},) to match probs, got {g.shape}")
            codes = np.unique(g.astype(str) if g.dtype.kind == "O" else g, return_inverse=True)[1].ravel()
        correct0, lam, sample, delta = self._events(probs, y)
        correct0, lam, sample, delta = (np.asarray(correct0, dtype=bool), np.asarray(lam, dtype=np.float64),
                                        np.asarray(sample), np.asarray(delta))
        self.n_rejected_ = 0
        if rejected is not None:
            rej = np.asarray(rejected, dtype=bool)
            if rej.shape != (probs.shape[0],):
                raise ValueError(f"rejected must have shape ({probs.shape[0]},) to match probs, got {rej.shape}")
            keep = ~rej[sample]
            correct0, lam, sample, delta = correct0 & ~rej, lam[keep], sample[keep], delta[keep]
            self.n_rejected_ = int(rej.sum())
        starts, counts, cluster, order = merge_events(lam, delta)
        n0 = int(np.count_nonzero(correct0))
        if starts.size == 0 or starts[0] > 0.0:
            starts = np.r_[0.0, starts]
            counts = np.r_[0, counts]
            cluster = cluster + 1
        n_correct = n0 + np.cumsum(counts)
        self.n_calibration_ = int(probs.shape[0])
        self._group_state = None
        if codes is not None and self.guarantee == "pac":
            sizes = np.bincount(codes)
            base = np.bincount(codes, weights=correct0, minlength=sizes.size)
            self._group_state = (base, sizes, cluster, codes[sample[order]], delta[order], starts.size)
        self._step_state = (starts, n_correct, probs.shape[0])
        self.n_groups_ = None if codes is None else int(codes.max() + 1 if codes.size else 0)
        self._calibrations = {}
        self.calibration_ = self._calibration_at(float(self.delta))
        return self

    def _calibration_at(self, delta: float) -> StepCalibration:
        """The step calibration with its PAC bounds at level ``delta`` (cached per level)."""
        if delta in self._calibrations:
            return self._calibrations[delta]
        starts, n_correct, n = self._step_state
        lower, unit, n_units = None, "photo", n
        if self._group_state is not None:
            from hedged.hedging.groups import group_lower_bounds

            base, sizes, seg, grp, dlt, n_seg = self._group_state
            lower = group_lower_bounds(base, sizes, seg, grp, dlt, n_seg, delta, cap=self.group_cap)
            unit, n_units = "group", int(sizes.size)
        cal = StepCalibration(starts, n_correct, n, self.guarantee, delta, lower, unit, self._parameter_max)
        cal.n_units = n_units
        self._calibrations[delta] = cal
        return cal

    def simultaneous(self, n_targets: int) -> StepCalibration:
        """The calibration that holds for ``n_targets`` fixed targets at once.

        Each target's guarantee holds with probability ``1 - delta`` on its own;
        for a set of ``k`` targets chosen before the data (say 0.8, 0.9, 0.95),
        testing each at ``delta / k`` (Bonferroni) makes all ``k`` hold together
        with probability ``1 - delta``.
        """
        self._check_fitted()
        k = int(n_targets)
        if k < 1:
            raise ValueError(f"n_targets must be a positive integer, got {n_targets!r}")
        return self._calibration_at(float(self.delta) / k) if k > 1 else self.calibration_

    def _parameters_for(self, accuracy, simultaneous: bool = False):
        """(parameters, scalar?) for one target or many; one warning for those that fall back to the root.

        ``simultaneous``: several targets hold together (:meth:`simultaneous`), not each on its own.
        """
        self._check_fitted()
        a, scalar = check_accuracies(accuracy)
        a = np.atleast_1d(a)
        cal = self.simultaneous(np.unique(a).size) if simultaneous and self.guarantee == "pac" else self.calibration_
        t, failed = cal.select_many(a)
        if failed.any() or cal.n == 0:
            cal.warn_root(a[failed] if cal.n else [0], self._parameter_name)
        return t, scalar

    def _parameter_for(self, accuracy) -> float:
        t, _ = self._parameters_for(check_accuracy(accuracy))
        return float(t[0])

    def predict_index(self, probs, accuracy=0.95, simultaneous: bool = False) -> np.ndarray:
        """Node indices (into ``taxonomy.nodes``) for one target, or one column per target.

        ``accuracy`` a number: shape (n_samples,); a sequence of k targets:
        shape (n_samples, k), column j for ``accuracy[j]``. ``simultaneous``:
        the k targets' guarantees hold together (each tested at ``delta / k``)
        rather than each on its own.
        """
        t, scalar = self._parameters_for(accuracy, simultaneous)
        probs = check_probs(probs, self.taxonomy.n_leaves)
        out = self._decide_many(probs, t)
        return out[:, 0] if scalar else out

    def _decide_many(self, probs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        # Threshold rules are cheap per parameter; DARTS overrides this with
        # one envelope per sample and a look-up per target.
        out = np.empty((probs.shape[0], len(ts)), dtype=np.int64)
        for j, t in enumerate(ts):
            out[:, j] = self._decide_index(probs, float(t))
        return out

    def _decide_with(self, probs, t, name: str) -> np.ndarray:
        """``decide_index`` of the subclasses: a given parameter, no calibration needed."""
        t = check_parameter(t, name)
        self._prepare()
        return self._decide_index(check_probs(probs, self.taxonomy.n_leaves), t)

    def _decide_index(self, probs: np.ndarray, t: float) -> np.ndarray:
        # An infinite parameter means the root for everyone, whatever the rule.
        if math.isinf(t):
            return np.full(probs.shape[0], self._specific[self._root], dtype=np.int64)
        return self._specific[self._decide(probs, t)]

    def predict(self, probs, accuracy=0.95, simultaneous: bool = False) -> np.ndarray:
        """Node names meeting ``accuracy`` under ``guarantee``.

        Parameters
        ----------
        probs : array-like, shape (n_samples, n_leaves)
        accuracy : float in (0, 1], or a sequence of them
            Target hierarchical accuracy; any value works without refitting.
        simultaneous : bool
            With several targets: their guarantees hold together with
            probability ``1 - delta`` (``delta`` split evenly across the
            distinct targets) instead of each with ``1 - delta`` on its own.

        Returns
        -------
        numpy.ndarray of str, shape (n_samples,) for one target, (n_samples, k) for k targets
        """
        return self._names(self.predict_index(probs, accuracy, simultaneous))

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


def most_specific(taxonomy) -> np.ndarray:
    """Node index -> the deepest node with the same leaves (down single-child chains).

    A node with one child has exactly the child's leaves, probability and
    reward, so DARTS ties them: "Footwear" when the only footwear class is
    "Shoes". The answer is the same set of classes; the child names it better.
    """
    out = np.arange(taxonomy.n_nodes)
    g = taxonomy.graph
    for i, v in enumerate(taxonomy.nodes):
        if g.out_degree(v) != 1:
            continue
        while g.out_degree(v) == 1:
            (v,) = g.successors(v)
        out[i] = taxonomy.node_index(v)
    return out
