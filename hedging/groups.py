"""The PAC bound when samples come in groups (one contributor's photos).

Photos of one seller share light, floor, phone and taste, so their
correctness is dependent and a bound that counts photos as independent draws
(Clopper-Pearson) is too narrow. Here the sampling unit is the group: groups
(contributors) are exchangeable, i.i.d. draws of ``(c_g, n_g)`` = (photos
answered correctly, photos), and the photos inside a group may depend on each
other arbitrarily. The target stays the share of correct answers over future
*photos*, ``E[c] / E[n]``, and

    accuracy >= t   iff   E[c_g - t n_g] >= 0.

At each parameter of the fixed sequence (from the root down, as for the
photo bound) this is tested with a **betting test supermartingale**
(Waudby-Smith & Ramdas 2023, "Estimating means of bounded random variables
by betting", JRSS-B): with ``B`` the largest group,
``X_g(t) = (c_g - t n_g) / B`` lies in ``[-t, 1 - t]``; the capital
``K_i(t) = prod_{k <= i} (1 + beta_k X_k(t))`` with predictable bets
``0 <= beta_k <= 0.9`` is a non-negative supermartingale when
``E[X] < 0``, so by Ville's inequality ``max_i K_i(t) >= 1 / delta`` happens
with probability at most ``delta``: an exact, finite-sample test, valid for
any group sizes up to ``B``.

Why betting and not Hoeffding-Bentkus: ``X_g`` is scaled by the *largest*
group, so for a typical small group it sits in a narrow band around 0; the
bets adapt to that small variance (their size follows a running variance
estimate), where Hoeffding-Bentkus assumes the worst variance of a
``[-t, 1 - t]`` variable and certifies far less. The bets do not depend on
``t`` (the running variance is taken around the running photo accuracy), so
``K_i(t)`` decreases in ``t``: the set of certified targets is an interval
``(0, L]`` and ``L``, the segment's lower confidence bound, is found by
bisection. Groups are visited in the order of their sorted ids (hashes in
practice), which does not depend on the outcomes.

Assumption to state: no group, past or future, is larger than ``B`` (the
largest calibration group unless given), and group sizes are a property of
the contributor, drawn with them. With few groups or one very large group
the bound certifies little: that is the price of not assuming independent
photos (see docs/hedging.md for the clothing bundle's numbers).
"""

from __future__ import annotations

import math

import numpy as np

#: Largest bet: keeps the capital positive even if a group of the largest size is all wrong at t = 1.
MAX_BET = 0.9
#: Bisection steps for the lower bound (2**-30 of resolution on [0, 1]).
BISECTION_STEPS = 30
#: Segments per block (the block's counts are a dense segments x groups array).
BLOCK_ELEMENTS = 2_000_000


def _bets(c: np.ndarray, n: np.ndarray, scale: float, delta: float) -> np.ndarray:
    """Predictable bets (block x G) from the groups before each one, independent of t."""
    G = c.shape[1]
    cc = np.cumsum(c, axis=1)
    nn = np.cumsum(n)
    # Running photo accuracy before group i (a prior of one half photo right).
    acc_prev = (np.c_[np.zeros((c.shape[0], 1)), cc[:, :-1]] + 0.5) / (np.r_[0.0, nn[:-1]] + 1.0)
    resid = (c - acc_prev * n) / scale
    # Running variance of the residuals before group i, started at a prior
    # variance of the scaled group sizes (one pseudo-observation).
    prior = float(np.mean((n / scale) ** 2)) * 0.25
    ss = np.c_[np.zeros((c.shape[0], 1)), np.cumsum(resid**2, axis=1)[:, :-1]]
    var = (prior + ss) / (np.arange(G) + 1.0)
    return np.minimum(np.sqrt(2.0 * math.log(1.0 / delta) / (G * var)), MAX_BET)


def _passes(c: np.ndarray, n: np.ndarray, bets: np.ndarray, scale: float, t: np.ndarray, delta: float) -> np.ndarray:
    """Whether max_i K_i(t) >= 1/delta, per row (t one value per row)."""
    x = (c - t[:, None] * n) / scale
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
    max_group_size: int | None = None,
) -> np.ndarray:
    """Lower confidence bound of the photo accuracy at every segment, groups as the unit.

    Parameters
    ----------
    base : (G,) correct photos per group on the first segment.
    sizes : (G,) photos per group.
    ev_segment, ev_group, ev_delta : (E,)
        Events sorted by segment: on segment ``ev_segment`` group ``ev_group``
        gains ``ev_delta`` (+1 / -1) correct photos.
    n_segments : int
    delta : float
    max_group_size : int, optional
        The bound ``B`` on group sizes; default the largest calibration group.

    Returns
    -------
    (n_segments,) array: the largest ``t`` (to 2**-30) that the betting test
    certifies at level ``delta`` on that segment (0 if none).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    G = sizes.size
    if G == 0:
        return np.zeros(n_segments)
    scale = float(sizes.max() if max_group_size is None else max_group_size)
    if sizes.max() > scale:
        raise ValueError(f"a calibration group has {int(sizes.max())} samples, more than max_group_size={scale:g}")
    out = np.empty(n_segments)
    block = max(1, BLOCK_ELEMENTS // G)
    counts = np.asarray(base, dtype=np.float64).copy()
    ev_segment = np.asarray(ev_segment)
    bounds = np.searchsorted(ev_segment, np.arange(0, n_segments + block, block))
    for b, j0 in enumerate(range(0, n_segments, block)):
        j1 = min(j0 + block, n_segments)
        e0, e1 = bounds[b], bounds[b + 1]
        step = np.zeros((j1 - j0, G))
        np.add.at(step, (ev_segment[e0:e1] - j0, ev_group[e0:e1]), ev_delta[e0:e1])
        c = counts + np.cumsum(step, axis=0)
        counts = c[-1].copy()
        bets = _bets(c, sizes, scale, delta)
        lo, hi = np.zeros(j1 - j0), np.ones(j1 - j0)
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            ok = _passes(c, sizes, bets, scale, mid, delta)
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
        # lo passed (or is 0); t = 0 always "passes" trivially: nothing to certify.
        out[j0:j1] = lo
    return out
