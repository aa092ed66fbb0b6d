"""Hierarchical metrics for hedged predictions.

``predictions`` are node names or indices into ``taxonomy.nodes``; ``labels``
are true leaves as indices, leaf names or leaf aliases. A prediction is
correct when the true leaf lies under the predicted node (the root is always
correct).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import stats

from hedged.hedging._base import check_accuracy, check_probs

__all__ = [
    "hierarchical_accuracy",
    "hierarchical_precision",
    "hierarchical_recall",
    "hierarchical_f1",
    "hierarchical_precision_recall_f1",
    "answer_gain",
    "information_gain",
    "depth_shares",
    "leaf_share",
    "clopper_pearson",
    "accuracy_specificity_curve",
]


def _indices(taxonomy, predictions, labels=None):
    pred = np.atleast_1d(np.asarray(taxonomy.node_index(predictions), dtype=np.int64))
    if pred.ndim != 1:
        raise ValueError(f"predictions must be 1-D, got shape {pred.shape}")
    if labels is None:
        return pred, None
    y = np.atleast_1d(np.asarray(taxonomy.resolve_labels(labels), dtype=np.int64))
    if y.shape != pred.shape:
        raise ValueError(f"labels must have shape {pred.shape} to match predictions, got {y.shape}")
    return pred, y


def _correct(taxonomy, pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    if pred.size == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(taxonomy.membership[y, pred]).ravel() > 0


def clopper_pearson(k, n, alpha: float = 0.05):
    """Exact two-sided binomial confidence interval at level ``1 - alpha``.

    Parameters
    ----------
    k : int or array-like
        Successes.
    n : int or array-like
        Trials.
    alpha : float in (0, 1)

    Returns
    -------
    (low, high) : floats or arrays

    Examples
    --------
    >>> lo, hi = clopper_pearson(10, 10, 0.1)
    >>> round(float(lo), 4), float(hi)    # lo = (alpha/2) ** (1/n)
    (0.7411, 1.0)
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("clopper_pearson needs 0 <= k <= n")
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def hierarchical_accuracy(taxonomy, predictions, labels) -> float:
    """Share of predictions whose node contains the true leaf."""
    pred, y = _indices(taxonomy, predictions, labels)
    return float(_correct(taxonomy, pred, y).mean()) if pred.size else float("nan")


def information_gain(taxonomy, predictions, labels, normalize: bool = False, prior=None) -> np.ndarray:
    """Per-sample information gain: the node's reward if correct, else 0.

    Parameters
    ----------
    normalize : bool
        Divide by the reward of a leaf under the uniform prior, ``log2(n_leaves)``,
        so a correct leaf scores 1 and the root 0.
    prior : array-like, optional
        Leaf prior for the rewards (``taxonomy.rewards(prior)``); default uniform.

    Returns
    -------
    numpy.ndarray of float, bits (or normalised)
    """
    pred, y = _indices(taxonomy, predictions, labels)
    gain = np.where(_correct(taxonomy, pred, y), np.asarray(taxonomy.rewards(prior))[pred], 0.0)
    if normalize:
        gain = gain / np.log2(taxonomy.n_leaves) if taxonomy.n_leaves > 1 else np.zeros_like(gain)
    return gain


def depth_shares(taxonomy, predictions) -> np.ndarray:
    """Share of predictions at each depth: array indexed by depth 0..max depth."""
    pred, _ = _indices(taxonomy, predictions)
    counts = np.bincount(taxonomy.depths[pred], minlength=int(taxonomy.depths.max()) + 1)
    return counts / max(pred.size, 1)


def leaf_share(taxonomy, predictions) -> float:
    """Share of predictions that are leaves (no hedging)."""
    pred, _ = _indices(taxonomy, predictions)
    is_leaf = np.zeros(taxonomy.n_nodes, dtype=bool)
    is_leaf[np.asarray(taxonomy.node_index(list(taxonomy.leaves)))] = True
    return float(is_leaf[pred].mean()) if pred.size else float("nan")


def hierarchical_precision_recall_f1(taxonomy, predictions, labels):
    """Micro-averaged hierarchical precision, recall and F1 (HiClass definitions).

    Each prediction and each true leaf is extended to the set of itself and all
    its ancestors, without the root; ``hP = sum|P & T| / sum|P|``,
    ``hR = sum|P & T| / sum|T|``, ``hF = 2 hP hR / (hP + hR)``. An undefined
    ratio (e.g. precision when every prediction is the root) is 0, as
    scikit-learn does with ``zero_division=0``.

    Returns
    -------
    (precision, recall, f1) : floats
    """
    pred, y = _indices(taxonomy, predictions, labels)
    if pred.size == 0:
        return 0.0, 0.0, 0.0
    root = int(taxonomy.node_index(taxonomy.root))
    uniq, inv = np.unique(pred, return_inverse=True)
    # Ancestor-or-self sets of the distinct predicted nodes only, as sparse rows.
    rows, cols = [], []
    for i, v in enumerate(uniq):
        name = taxonomy.nodes[v]
        anc = np.asarray(taxonomy.node_index(list(taxonomy.ancestors(name) | {name})), dtype=np.int64)
        anc = anc[anc != root]
        rows.append(np.full(anc.size, i))
        cols.append(anc)
    anc = sp.csr_matrix(
        (np.ones(sum(c.size for c in cols)), (np.concatenate(rows), np.concatenate(cols))),
        shape=(uniq.size, taxonomy.n_nodes),
    )
    # The true leaf's ancestor-or-self set is its membership row.
    truth = taxonomy.membership.tocsr()[y]
    truth_sizes = np.asarray(truth.sum(axis=1)).ravel() - 1.0  # minus the root
    pred_sets = anc[inv]
    inter = np.asarray(pred_sets.multiply(truth).sum(axis=1)).ravel()
    n_inter, n_pred, n_true = inter.sum(), pred_sets.sum(), truth_sizes.sum()
    precision = n_inter / n_pred if n_pred else 0.0
    recall = n_inter / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def hierarchical_precision(taxonomy, predictions, labels) -> float:
    """Micro-averaged hierarchical precision ``sum|P & T| / sum|P|`` (HiClass's ``precision``).

    See :func:`hierarchical_precision_recall_f1` for the definition.

    Examples
    --------
    >>> hierarchical_precision(tax, ["animal"], ["dog"])  # doctest: +SKIP
    1.0
    """
    return hierarchical_precision_recall_f1(taxonomy, predictions, labels)[0]


def hierarchical_recall(taxonomy, predictions, labels) -> float:
    """Micro-averaged hierarchical recall ``sum|P & T| / sum|T|`` (HiClass's ``recall``).

    See :func:`hierarchical_precision_recall_f1` for the definition.

    Examples
    --------
    >>> hierarchical_recall(tax, ["animal"], ["dog"])  # {animal} of {animal, dog}  # doctest: +SKIP
    0.5
    """
    return hierarchical_precision_recall_f1(taxonomy, predictions, labels)[1]


def hierarchical_f1(taxonomy, predictions, labels) -> float:
    """Hierarchical F1, the harmonic mean of :func:`hierarchical_precision` and
    :func:`hierarchical_recall` (HiClass's ``f1``)."""
    return hierarchical_precision_recall_f1(taxonomy, predictions, labels)[2]


def answer_gain(taxonomy, predictions, prior=None) -> np.ndarray:
    """Per-sample normalised information gain of the answered node, right or wrong.

    What a user is shown per image (``Prediction.info_gain``): the reward of
    the node divided by a leaf's, so a leaf scores 1 and the root 0. One leaf
    in the taxonomy: every answer scores 1.
    """
    pred, _ = _indices(taxonomy, predictions)
    bits = np.asarray(taxonomy.rewards(prior))[pred]
    top = np.log2(taxonomy.n_leaves)
    return bits / top if top > 0 else np.ones_like(bits)


def accuracy_specificity_curve(rule, probs, labels, targets, alpha: float = 0.05, predictions=None) -> dict:
    """Achieved accuracy and specificity of a fitted rule over accuracy targets.

    Parameters
    ----------
    rule : fitted hedging rule (Darts, Climbing, LeafGT, FlatClassifier)
    probs : array-like (n_samples, n_leaves)
        Test posteriors (not the calibration data).
    labels : array-like (n_samples,)
    targets : array-like of float in (0, 1]
    alpha : float
        Level of the Clopper-Pearson interval on the achieved accuracy.
    predictions : array (n_samples, n_targets), optional
        ``rule.predict_index(probs, accuracy=targets)`` when already computed.

    Returns
    -------
    dict of numpy arrays, one entry per target: ``target``, ``accuracy``,
    ``ci_low``, ``ci_high``, ``info_gain`` (mean normalised information gain
    of the answers, as shown per image: 1 = always a leaf, 0 = always the
    root), ``info_gain_correct`` (the same with wrong answers counted as 0,
    Deng et al.'s measure), ``info_gain_bits`` (that one in bits),
    ``leaf_share``, ``root_share``.
    """
    tax = rule.taxonomy
    probs = check_probs(probs, tax.n_leaves)
    targets = np.asarray([check_accuracy(t) for t in np.atleast_1d(np.asarray(targets, dtype=object))], dtype=np.float64)
    y = np.asarray(tax.resolve_labels(labels), dtype=np.int64)
    if y.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape ({probs.shape[0]},) to match probs, got {y.shape}")
    n = y.size
    keys = ("accuracy", "ci_low", "ci_high", "info_gain", "info_gain_correct", "info_gain_bits", "leaf_share",
            "root_share")
    out = {k: np.empty(targets.size) for k in keys}
    root = int(tax.node_index(tax.root))
    if predictions is None:
        predictions = rule.predict_index(probs, accuracy=targets) if n else np.zeros((0, targets.size), dtype=np.int64)
    for i, t in enumerate(targets):
        pred = predictions[:, i]
        correct = _correct(tax, pred, y)
        k = int(correct.sum())
        bits = information_gain(tax, pred, y)
        out["accuracy"][i] = k / n if n else np.nan
        out["ci_low"][i], out["ci_high"][i] = clopper_pearson(k, n, alpha) if n else (np.nan, np.nan)
        out["info_gain_bits"][i] = bits.mean() if n else np.nan
        out["info_gain_correct"][i] = out["info_gain_bits"][i] / np.log2(tax.n_leaves) if tax.n_leaves > 1 else 0.0
        out["info_gain"][i] = answer_gain(tax, pred).mean() if n else np.nan
        out["leaf_share"][i] = leaf_share(tax, pred)
        out["root_share"][i] = float(np.mean(pred == root)) if n else np.nan
    return {"target": targets, **out}
