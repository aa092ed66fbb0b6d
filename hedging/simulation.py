"""Seeded simulations of the accuracy guarantee on photos that come in clusters.

The guarantee is a statement about repeated calibration draws: with probability at
least ``1 - delta`` over the calibration set, the accuracy on new photos is at least
the target. This module draws many calibration sets from a known population of
contributors and counts how often the promise is broken (the *violation rate*,
which must stay below ``delta``), and how informative the answers are. It backs the
tests of :mod:`hedged.hedging.groups`, ``bench/guarantee_sim.py`` and the tables of
docs/hedging.md, and answers a user's question "what can a calibration split of
this design certify?".

The population (:func:`clustered_sample`): four leaves under two parents. Each
photo's posterior is a Dirichlet draw and its label is drawn from that posterior
(so the model is calibrated photo by photo), except that each contributor has a
*hardness* ``h_g ~ Beta``: with probability ``h_g`` a photo's label is replaced by
the contributor's own confusing class (a seller who always shoots skirts that look
like shorts). Hardness makes correctness correlated within a contributor; its
spread sets the intra-contributor correlation (ICC, :func:`icc`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hedged.taxonomy import Taxonomy

#: Two parents with two leaves each: enough for DARTS to hedge between a leaf, a parent and the root.
TREE4 = Taxonomy.from_edges([("root", "X"), ("root", "Y"), ("X", "a"), ("X", "b"), ("Y", "c"), ("Y", "d")])

#: Photos per contributor of the calibration split of the clothing bundle shipped before issue 24
#: (65 contributors, 619 photos).
SHIPPED_CALIBRATION_SIZES = (
    115, 88, 43, 38, 30, 28, 20, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 9, 8, 8, 8, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4,
    4, 3, 3, 3, 2, 2, 2, 2, 2, *([1] * 25),
)


#: Photos per contributor of the calibration split that ``train.py`` now makes (117 contributors, 790
#: photos: the held-out splits are a random sample of contributors with at most 50 photos; docs/hedging.md).
DESIGNED_CALIBRATION_SIZES = (
    45, 43, 40, 38, 35, 30, 24, 21, 20, 20, 20, 18, 16, 15, 14, 14, 13, 13, 12, 11, 11, 11, 11, 11, 11, 10, 9, 9,
    9, 8, 8, 8, 8, 8, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    2, 2, 2, 2, 2, 2, 2, *([1] * 45),
)


@dataclass
class Population:
    """Hardness spread of a contributor population: ``h_g ~ Beta(mean * k, (1 - mean) * k)``."""

    hard_mean: float = 0.04
    concentration: float = 2.0
    dirichlet: float = 0.25

    def hardness(self, rng, n: int) -> np.ndarray:
        if self.hard_mean <= 0:
            return np.zeros(n)
        a = self.hard_mean * self.concentration
        return rng.beta(a, self.concentration - a, size=n)


def clustered_sample(rng, sizes, population: Population = Population()):
    """Posteriors, labels and contributor ids of photos from contributors of these ``sizes``.

    Returns
    -------
    probs : (n, 4) float64, labels : (n,) int64, groups : (n,) int64 (contributor index)
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    g = np.repeat(np.arange(sizes.size), sizes)
    probs = rng.dirichlet(np.full(4, population.dirichlet), size=n)
    probs = 0.96 * probs + 0.01
    y = np.minimum((probs.cumsum(1) < rng.random((n, 1))).sum(1), 3)
    h = population.hardness(rng, sizes.size)
    confusing = rng.integers(0, 4, sizes.size)
    swap = rng.random(n) < h[g]
    y = np.where(swap, confusing[g], y)
    return probs, y.astype(np.int64), g


def weighted_accuracy_curve(rule, probs, labels, weights):
    """Exact (starts, accuracy) of ``rule``'s decisions over its parameter, photos weighted.

    ``rule`` is a fitted-or-not :class:`hedged.hedging.Darts` (any rule with ``_events``).
    """
    rule._prepare()
    y = rule._check_labels(labels, probs.shape[0])
    correct0, lam, sample, delta = rule._events(np.asarray(probs, dtype=np.float64), y)
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(lam, kind="stable")
    starts = np.r_[0.0, np.asarray(lam)[order]]
    steps = np.r_[0.0, (w[np.asarray(sample)[order]] * np.asarray(delta)[order])]
    acc = (np.sum(w * correct0) + np.cumsum(steps)) / w.sum()
    return starts, acc


def capped_weights(groups, cap: int | None) -> np.ndarray:
    """Per-photo weight ``min(n_g, cap) / n_g`` (``cap=None``: 1, plain photo accuracy)."""
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    n = np.bincount(codes).astype(np.float64)
    if cap is None:
        return np.ones(codes.size)
    return (np.minimum(n, cap) / n)[codes]


def accuracy_at(curve, lam: float) -> float:
    """The population accuracy of the parameter ``lam`` (1 for ``inf``: the root is always right)."""
    starts, acc = curve
    if not np.isfinite(lam):
        return 1.0
    return float(acc[np.searchsorted(starts, lam, side="right") - 1])


def icc(correct, groups) -> float:
    """One-way ANOVA intra-class correlation of 0/1 correctness within groups (unequal sizes)."""
    correct = np.asarray(correct, dtype=np.float64)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    n_g = np.bincount(codes).astype(np.float64)
    k, n = n_g.size, correct.size
    if k < 2 or n <= k:
        return float("nan")
    mean_g = np.bincount(codes, weights=correct) / n_g
    grand = correct.mean()
    msb = np.sum(n_g * (mean_g - grand) ** 2) / (k - 1)
    msw = np.sum((correct - mean_g[codes]) ** 2) / (n - k)
    n0 = (n - np.sum(n_g**2) / n) / (k - 1)
    return float((msb - msw) / (msb + (n0 - 1) * msw)) if msb + (n0 - 1) * msw > 0 else 0.0
