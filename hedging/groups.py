"""The PAC bound when photos come in groups (one contributor's photos).

Photos of one seller share light, floor, phone and taste, so their correctness
is dependent and a bound that counts photos as independent draws
(Clopper-Pearson) is too narrow: on the clothing data it fails in 14-22 % of
calibration draws at delta = 5 % (docs/hedging.md). Here the sampling unit is the
group: groups (contributors) are exchangeable, i.i.d. draws of
``(c_g, n_g)`` = (photos answered correctly, photos), and the photos inside a
group may depend on each other arbitrarily.

What is bounded: the **capped photo accuracy**. Each group's photos together
weigh ``W_g = min(n_g, cap)`` photos (``cap`` fixed in advance), so

    A_cap = E[W_g a_g] / E[W_g],    a_g = c_g / n_g.

When no contributor has more than ``cap`` photos this is exactly the share of
right answers over future photos drawn contributor by contributor; a larger
contributor counts as ``cap`` photos (so that one prolific seller cannot decide
the promise for everybody); ``cap = 1`` weighs every contributor equally, the
accuracy "for the average seller". ``A_cap >= t`` iff ``E[X_g(t)] >= 0`` with

    X_g(t) = W_g (a_g - t) / cap   in [-t, 1 - t].

At each parameter of the fixed sequence (from the root down, as for the photo
bound) this is tested with a **betting test supermartingale** (Waudby-Smith &
Ramdas 2023, "Estimating means of bounded random variables by betting",
JRSS-B): the capital ``K_i(t) = prod_{k <= i} (1 + beta_k X_k(t))`` with bets
``0 <= beta_k <= 0.9`` that depend only on the groups visited before ``k`` is a
non-negative supermartingale when ``E[X] < 0``, so by Ville's inequality
``max_i K_i(t) >= 1 / delta`` happens with probability at most ``delta``: an
exact finite-sample test for any group sizes.

Two things make it valid that were not so before (the statistical review of
issue 24):

* **Visiting order.** Groups are visited in a seeded random permutation of
  their positions, so the order does not depend on the id values (ids that
  sort good or small contributors first certified false targets in 60 % of
  draws when the groups were visited in id order).
* **Scale fixed in advance.** The bets are scaled by ``cap`` (a number chosen
  before the data are seen), not by the largest calibration group, and their
  prior variance is a constant: nothing in a bet looks at a group not yet
  visited.

Why betting and not Hoeffding: ``X_g`` of a typical group sits in a narrow
band around its mean; the bets adapt to that small variance (their size
follows a running variance estimate). The bets do not depend on ``t`` (the
running variance is taken around the running capped accuracy), so
``K_i(t)`` decreases in ``t``: the certified targets form an interval
``(0, L]`` and ``L``, the segment's lower confidence bound, is found by
bisection.
"""

from __future__ import annotations

import math

import numpy as np

#: Largest bet: keeps the capital positive even if a group is all wrong at t = 1.
MAX_BET = 0.9
#: Prior variance of X (one pseudo-observation) that starts the running variance.
#: A constant chosen on synthetic data (bench/guarantee_sim.py), never on calibration data.
PRIOR_VARIANCE = 0.05
#: Bisection steps for the lower bound (2**-30 of resolution on [0, 1]).
BISECTION_STEPS = 30
#: Segments per block (the block's counts are a dense segments x groups array).
BLOCK_ELEMENTS = 2_000_000
#: Seed of the order in which groups are visited (any fixed number is valid).
ORDER_SEED = 20240424


def check_cap(cap) -> int:
    """A group cap: a positive integer (photos one contributor may weigh at most)."""
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ValueError(f"group_cap must be a positive integer (photos per contributor), got {cap!r}")
    return int(cap)


def visiting_order(n_groups: int, seed: int = ORDER_SEED) -> np.ndarray:
    """The order in which groups are visited: a seeded permutation of ``range(n_groups)``.

    Whatever order the group ids sort in, a uniformly random permutation of their
    positions visits the groups in an order independent of the ids (and of the data).
    """
    return np.random.default_rng(seed).permutation(n_groups)


def _bets(x_hat: np.ndarray, w: np.ndarray, delta: float) -> np.ndarray:
    """Predictable bets (block x G) from the groups visited before each one; independent of t.

    ``x_hat``: each group's capped-weight correct count ``W a`` / cap (block x G) and
    ``w = W / cap`` (G,), both in visiting order.
    """
    G = x_hat.shape[1]
    cx = np.cumsum(x_hat, axis=1)
    cw = np.cumsum(w)
    # Running capped accuracy before group i (a prior of half a photo right).
    acc_prev = (np.c_[np.zeros((x_hat.shape[0], 1)), cx[:, :-1]] + 0.5) / (np.r_[0.0, cw[:-1]] + 1.0)
    resid = x_hat - acc_prev * w
    ss = np.c_[np.zeros((x_hat.shape[0], 1)), np.cumsum(resid**2, axis=1)[:, :-1]]
    var = (PRIOR_VARIANCE + ss) / (np.arange(G) + 1.0)
    return np.minimum(np.sqrt(2.0 * math.log(1.0 / delta) / (G * var)), MAX_BET)


def _passes(x_hat: np.ndarray, w: np.ndarray, bets: np.ndarray, t: np.ndarray, delta: float) -> np.ndarray:
    """Whether max_i K_i(t) >= 1/delta, per row (t one value per row)."""
    x = x_hat - t[:, None] * w
    logk = np.cumsum(np.log1p(bets * x), axis=1)
    return logk.max(axis=1) >= math.log(1.0 / delta)


def group_lower_bounds(
    base: np.ndarray,
    sizes: np.ndarray,
    ev_segment: np.ndarray,
    ev_group: np.ndarray,
    ev_delta: np.ndarray,
    n_segments: int,
    delta: float,
    cap: int,
    order_seed: int = ORDER_SEED,
) -> np.ndarray:
    """Lower confidence bound of the capped photo accuracy at every segment, groups as the unit.

    Parameters
    ----------
    base : (G,) correct photos per group on the first segment.
    sizes : (G,) photos per group.
    ev_segment, ev_group, ev_delta : (E,)
        Events sorted by segment: on segment ``ev_segment`` group ``ev_group``
        gains ``ev_delta`` (+1 / -1) correct photos.
    n_segments : int
    delta : float
    cap : int
        Photos one group weighs at most, fixed in advance (:func:`check_cap`).
    order_seed : int
        Seed of the visiting order (:func:`visiting_order`).

    Returns
    -------
    (n_segments,) array: the largest ``t`` (to 2**-30) that the betting test
    certifies at level ``delta`` on that segment (0 if none).
    """
    cap = check_cap(cap)
    sizes = np.asarray(sizes, dtype=np.float64)
    G = sizes.size
    if G == 0:
        return np.zeros(n_segments)
    order = visiting_order(G, order_seed)
    inv = np.empty(G, dtype=np.int64)
    inv[order] = np.arange(G)
    sizes = sizes[order]
    w = np.minimum(sizes, cap) / cap  # W_g / cap
    per_photo = w / sizes  # weight of one correct photo of group g, / cap
    out = np.empty(n_segments)
    block = max(1, BLOCK_ELEMENTS // G)
    counts = np.asarray(base, dtype=np.float64)[order].copy()
    ev_segment = np.asarray(ev_segment)
    ev_group = inv[np.asarray(ev_group, dtype=np.int64)]
    bounds = np.searchsorted(ev_segment, np.arange(0, n_segments + block, block))
    for b, j0 in enumerate(range(0, n_segments, block)):
        j1 = min(j0 + block, n_segments)
        e0, e1 = bounds[b], bounds[b + 1]
        step = np.zeros((j1 - j0, G))
        np.add.at(step, (ev_segment[e0:e1] - j0, ev_group[e0:e1]), ev_delta[e0:e1])
        c = counts + np.cumsum(step, axis=0)
        counts = c[-1].copy()
        x_hat = c * per_photo
        bets = _bets(x_hat, w, delta)
        lo, hi = np.zeros(j1 - j0), np.ones(j1 - j0)
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            ok = _passes(x_hat, w, bets, mid, delta)
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
        # lo passed (or is 0); t = 0 always "passes" trivially: nothing to certify.
        out[j0:j1] = lo
    return out


def capped_accuracy(correct, groups, cap: int) -> float:
    """The capped photo accuracy of answered photos: each group weighs ``min(n_g, cap)`` photos.

    ``cap`` at least the largest group gives the plain photo accuracy, ``cap = 1``
    the mean over groups of their accuracy.

    >>> capped_accuracy([1, 1, 1, 0], ["a", "a", "a", "b"], cap=1)
    0.5
    >>> capped_accuracy([1, 1, 1, 0], ["a", "a", "a", "b"], cap=3)
    0.75
    """
    correct = np.asarray(correct, dtype=np.float64)
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1].ravel()
    n = np.bincount(codes).astype(np.float64)
    c = np.bincount(codes, weights=correct, minlength=n.size)
    w = np.minimum(n, check_cap(cap))
    return float(np.sum(w * c / n) / np.sum(w))
