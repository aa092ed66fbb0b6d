"""DARTS (Deng et al., CVPR 2012, "Hedging Your Bets") with exact calibration."""

from __future__ import annotations

import math

import numpy as np

from hedged.hedging._base import HedgingRule, check_accuracy

# Scores within this relative gap are ties. It absorbs the rounding of a
# breakpoint lambda computed by the calibration, so that decide() at exactly a
# breakpoint picks the same node as the calibration step function.
_TIE_RTOL = 1e-10


def _argmax_prefer_general(scores: np.ndarray, node_probs: np.ndarray) -> np.ndarray:
    """Row-wise argmax of ``scores``; ties go to the higher node probability,
    then to the lower node index (ancestors come first in ``taxonomy.nodes``)."""
    best = scores.max(axis=1, keepdims=True)
    near = scores >= best - _TIE_RTOL * np.abs(best)
    return np.where(near, node_probs, -1.0).argmax(axis=1)


class Darts(HedgingRule):
    """Decision rule f_lambda(x) = argmax_v (r_v + lambda) p(v|x), calibrated.

    ``p(v|x)`` is the sum of the leaf posteriors under node ``v`` and ``r_v`` the
    information gain of predicting ``v`` (``taxonomy.rewards(prior)``, bits).
    ``lambda = 0`` maximises the expected information gain; it is *not* the
    flat leaf argmax in general (a parent of two leaves at 0.3 each beats both
    leaves when there are many leaves). As lambda grows the chosen node's
    probability never decreases; ``lambda = inf`` predicts the root.

    Calibration is exact: per calibration sample, f_lambda as a function of
    lambda is the upper envelope of the lines ``p_v * lambda + r_v * p_v``, so
    it is piecewise constant with few breakpoints. They are computed for all
    samples (vectorised, in chunks), and sorting them gives the exact
    calibration accuracy at every lambda. Every accuracy target is then a
    lookup, with no bisection and no refit.

    Parameters
    ----------
    taxonomy : taxonomy.Taxonomy
    guarantee : {"pac", "expected"}, default "pac"
        ``"pac"``: with probability >= 1 - delta over the draw of the
        calibration set, the accuracy on new data is >= the target. Assumes
        the calibration and test samples are exchangeable (i.i.d. from the same
        distribution), the model and its posteriors are fixed (not trained on
        the calibration data), and it is a guarantee about the average accuracy
        over the test distribution, not per sample. Clopper-Pearson bounds with
        fixed-sequence testing from lambda = inf downwards (Learn-then-Test).
        ``"expected"``: the smallest lambda whose calibration accuracy meets the
        target (the paper's criterion; no finite-sample guarantee).
    delta : float in (0, 1), default 0.05
        Allowed failure probability of the ``"pac"`` guarantee.
    prior : array-like (n_leaves,), optional
        Leaf prior for the rewards; default uniform (the paper's setting).

    Attributes
    ----------
    rewards_ : ndarray (n_nodes,)
    n_calibration_ : int
    calibration_ : the exact calibration step function

    Examples
    --------
    >>> from hedged.taxonomy import Taxonomy
    >>> t = Taxonomy.from_edges([("animal", "cat"), ("animal", "dog")])
    >>> rule = Darts(t, guarantee="expected").fit([[0.9, 0.1], [0.4, 0.6]], ["cat", "cat"])
    >>> rule.predict([[0.9, 0.1], [0.4, 0.6]], accuracy=1.0).tolist()
    ['animal', 'animal']
    """

    _parameter_name = "lambda"

    def __init__(self, taxonomy, guarantee: str = "pac", delta: float = 0.05, prior=None):
        super().__init__(taxonomy, guarantee=guarantee, delta=delta)
        self.prior = prior

    def _prepare(self) -> None:
        super()._prepare()
        self.rewards_ = np.asarray(self.taxonomy.rewards(self.prior), dtype=np.float64)

    # ----------------------------------------------------------------- API
    def lambda_for(self, accuracy) -> float:
        """The lambda that ``predict(..., accuracy)`` uses (inf = root for all)."""
        return self._parameter_for(accuracy)

    def lambda_upper_bound(self, accuracy) -> float:
        """The paper's bound ((1 - eps) r_max - r_root) / eps with eps = 1 - accuracy.

        For lambda >= this bound the *model-expected* accuracy of f_lambda is at
        least ``accuracy`` (Deng et al., Theorem 3); the public reference code
        bisects on [0, bound]. Exact calibration does not need it.
        """
        a = check_accuracy(accuracy)
        r = self.rewards_ if hasattr(self, "rewards_") else np.asarray(self.taxonomy.rewards(self.prior))
        eps = 1.0 - a
        if eps <= 0:
            return math.inf
        r_root = float(r[int(self.taxonomy.node_index(self.taxonomy.root))])
        return max(((1.0 - eps) * float(r.max()) - r_root) / eps, 0.0)

    def decide_index(self, probs, lam) -> np.ndarray:
        """Node indices chosen by f_lambda (no calibration involved).

        Ties (scores equal within a relative 1e-10) go to the node with the
        higher probability, i.e. the more general, safer one, then to the
        lower node index. ``lam = inf`` gives the root.
        """
        return self._decide_with(probs, lam, "lam")

    def decide(self, probs, lam) -> np.ndarray:
        """Node names chosen by f_lambda; see :meth:`decide_index`."""
        return self._names(self.decide_index(probs, lam))

    # ----------------------------------------------------------- internals
    def _decide(self, probs: np.ndarray, lam: float) -> np.ndarray:
        n = probs.shape[0]
        out = np.empty(n, dtype=np.int64)
        shifted = self.rewards_ + lam
        step = self._chunk_rows()
        for s in range(0, n, step):
            node_p = self._node_probs(probs[s : s + step])
            out[s : s + step] = _argmax_prefer_general(node_p * shifted, node_p)
        return out

    def _calibration_steps(self, probs: np.ndarray, y: np.ndarray):
        lams, deltas = [np.zeros(1)], [np.zeros(1, dtype=np.int64)]
        n_correct0 = 0
        step = self._chunk_rows()
        for s in range(0, probs.shape[0], step):
            c0, lam, dlt = self._envelope_events(probs[s : s + step], y[s : s + step])
            n_correct0 += c0
            lams.append(lam)
            deltas.append(dlt)
        lam = np.concatenate(lams)
        dlt = np.concatenate(deltas)
        order = np.argsort(lam, kind="stable")
        lam, dlt = lam[order], dlt[order]
        starts, first = np.unique(lam, return_index=True)
        n_correct = n_correct0 + np.cumsum(np.add.reduceat(dlt, first))
        return starts, n_correct

    def _envelope_events(self, chunk: np.ndarray, y: np.ndarray):
        """Walk the upper envelope of every sample's lines from lambda = 0 up.

        Returns the number correct at lambda = 0 and the events (lambda,
        +1 / -1) where a sample's correctness changes. Only nodes with a higher
        probability than the current one can take over, and they are few per
        sample, so the walk runs on a ragged list of candidates (O(candidates)
        per step, not O(n_nodes)).
        """
        node_p = self._node_probs(chunk)
        gain = node_p * self.rewards_
        rows_all = np.arange(node_p.shape[0])
        cur = _argmax_prefer_general(gain, node_p)
        p_cur = node_p[rows_all, cur]
        b_cur = gain[rows_all, cur]
        lam_cur = np.zeros(node_p.shape[0])
        correct = self._is_under(y, cur)
        n_correct0 = int(correct.sum())
        rows, cols = np.nonzero(node_p > p_cur[:, None])
        pk = node_p[rows, cols]
        bk = gain[rows, cols]
        del node_p, gain
        ev_lam, ev_delta = [], []
        while rows.size:
            # Breakpoint with each candidate: (b_cur - b_k) / (p_k - p_cur).
            lam = (b_cur[rows] - bk) / (pk - p_cur[rows])
            np.maximum(lam, lam_cur[rows], out=lam)
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            sizes = np.diff(np.r_[starts, rows.size])
            lmin = np.minimum.reduceat(lam, starts)
            # Lines crossing the envelope at the same point: the steepest one
            # (highest probability) is the envelope just after it.
            tied = lam <= np.repeat(lmin * (1.0 + _TIE_RTOL), sizes)
            key = np.where(tied, pk, -1.0)
            hit = np.flatnonzero(key == np.repeat(np.maximum.reduceat(key, starts), sizes))
            first = hit[np.r_[True, rows[hit[1:]] != rows[hit[:-1]]]]
            grp = rows[first]
            new_nodes = cols[first]
            new_correct = self._is_under(y[grp], new_nodes)
            changed = new_correct != correct[grp]
            ev_lam.append(lmin[changed])
            ev_delta.append(np.where(new_correct[changed], 1, -1))
            correct[grp] = new_correct
            p_cur[grp] = pk[first]
            b_cur[grp] = bk[first]
            lam_cur[grp] = lmin
            keep = pk > p_cur[rows]
            rows, cols, pk, bk = rows[keep], cols[keep], pk[keep], bk[keep]
        if ev_lam:
            return n_correct0, np.concatenate(ev_lam), np.concatenate(ev_delta).astype(np.int64)
        return n_correct0, np.zeros(0), np.zeros(0, dtype=np.int64)
