"""DARTS (Deng et al., CVPR 2012, "Hedging Your Bets") with exact calibration."""

from __future__ import annotations

import math

import numpy as np

from hedged.hedging._base import DEFAULT_GROUP_CAP, TIE_RTOL, HedgingRule, check_accuracy, check_probs

def _transpose(a: np.ndarray) -> np.ndarray:
    """``a.T`` as a C-ordered float64 array, copied in cache-sized tiles (a single
    strided copy of a wide matrix misses the cache on every element: ~5x slower)."""
    out = np.empty((a.shape[1], a.shape[0]), dtype=np.float64)
    for s in range(0, a.shape[0], 64):
        for c in range(0, a.shape[1], 2048):
            out[c : c + 2048, s : s + 64] = a[s : s + 64, c : c + 2048].T
    return out


class Darts(HedgingRule):
    """Decision rule f_lambda(x) = argmax_v (r_v + lambda) p(v|x), calibrated.

    ``p(v|x)`` is the sum of the leaf posteriors under node ``v`` and ``r_v`` the
    information gain of predicting ``v`` (``taxonomy.rewards(prior)``, bits).
    ``lambda = 0`` maximises the expected information gain; it is *not* the
    flat leaf argmax in general (a parent of two leaves at 0.3 each beats both
    leaves when there are many leaves). As lambda grows the chosen node's
    probability never decreases; ``lambda = inf`` predicts the root.

    Calibration is exact: per sample, f_lambda as a function of lambda is
    the upper envelope of the lines ``p_v * lambda + r_v * p_v``, so it is
    piecewise constant with few breakpoints (:meth:`paths`). They are
    computed for all samples (vectorised, in chunks), and sorting them gives
    the exact calibration accuracy at every lambda. Every accuracy target is
    then a lookup, with no bisection and no refit; decisions read the same
    envelopes, so any number of targets costs one envelope per sample
    (``predict(probs, accuracy=[...])``, :meth:`answer_paths`).

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

    def __init__(self, taxonomy, guarantee: str = "pac", delta: float = 0.05, prior=None,
                 group_cap: int = DEFAULT_GROUP_CAP):
        super().__init__(taxonomy, guarantee=guarantee, delta=delta, group_cap=group_cap)
        self.prior = prior

    def _prepare(self) -> None:
        super()._prepare()
        self.rewards_ = np.asarray(self.taxonomy.rewards(self.prior), dtype=np.float64)
        is_leaf = np.zeros(self.taxonomy.n_nodes, dtype=bool)
        is_leaf[self._leaf_nodes] = True
        self._inner_nodes = np.flatnonzero(~is_leaf)
        self._inner_t = self._membership_t[self._inner_nodes]

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

        f_lambda is read off each sample's envelope (:meth:`paths`), the same
        one the calibration counts, so the two can never disagree. Ties
        (scores, or crossing points, equal within a relative 1e-10) go to the
        node with the higher probability, i.e. the more general, safer one,
        then to the lower node index; a single-child node is named by its
        child. ``lam = inf`` gives the root.
        """
        return self._decide_with(probs, lam, "lam")

    def decide(self, probs, lam) -> np.ndarray:
        """Node names chosen by f_lambda; see :meth:`decide_index`."""
        return self._names(self.decide_index(probs, lam))

    def paths(self, probs):
        """f_lambda of every sample as a function of lambda.

        Returns
        -------
        (indptr, lam, node) : ragged arrays
            Sample ``i`` answers ``node[k]`` for lambda in
            ``[lam[k], lam[k+1])``, ``k`` in ``indptr[i]:indptr[i+1]``; the
            first ``lam`` of each sample is 0 and the last node holds up to
            (not including) lambda = inf, the root. Node indices are the ones
            users see (single-child nodes named by their child), consecutive
            nodes differ.
        """
        self._prepare()
        return self._paths(check_probs(probs, self.taxonomy.n_leaves))

    def answer_paths(self, probs):
        """Each sample's answer as a function of the accuracy target.

        Returns
        -------
        (indptr, max_target, node) : ragged arrays
            Sample ``i``'s steps are ``k`` in ``indptr[i]:indptr[i+1]``, with
            ``max_target`` increasing: the answer for target ``a`` is
            ``node[k]`` for the first ``k`` with ``a <= max_target[k]``. The
            last step is always ``(1.0, root)``; a node never answered for any
            target in (0, 1] does not appear. This is exactly what
            :meth:`predict` answers, for every target at once.
        """
        self._check_fitted()
        self._prepare()
        indptr, lam, node = self._paths(check_probs(probs, self.taxonomy.n_leaves))
        return self._answer_steps(indptr, lam, node)

    def _answer_steps(self, indptr, lam, node):
        c = self.calibration_
        n = indptr.size - 1
        rows = np.repeat(np.arange(n), np.diff(indptr))
        last = np.zeros(lam.size, dtype=bool)
        last[indptr[1:][indptr[1:] > indptr[:-1]] - 1] = True
        # Node k is answered while lambda(a) < lam[k+1]: lambda(a) = points[j(a)]
        # (strictly increasing in j) is below it iff j(a) < J = #points below
        # lam[k+1] iff a <= key[J-1].
        nxt = np.where(last, np.inf, np.r_[lam[1:], np.inf])
        j = np.searchsorted(c.points, nxt, side="left")
        mt = np.where(j > 0, c.key[np.maximum(j, 1) - 1], -np.inf)
        if c.n == 0:
            mt[:] = -np.inf
        # Target 1 always means the root (only it is certainly right).
        mt = np.minimum(mt, np.nextafter(1.0, 0.0))
        root = self._specific[self._root]
        rows = np.r_[rows, np.arange(n)]
        mt = np.r_[mt, np.ones(n)]
        node = np.r_[node, np.full(n, root, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")
        rows, mt, node = rows[order], mt[order], node[order]
        # max_target is non-decreasing along a sample; a step that does not
        # raise it answers no target, and equal neighbours are one step.
        keep = mt > 0
        new_row = np.r_[True, rows[1:] != rows[:-1]]
        keep &= new_row | (mt > np.r_[-np.inf, mt[:-1]])
        rows, mt, node = rows[keep], mt[keep], node[keep]
        same_next = np.r_[(rows[1:] == rows[:-1]) & (node[1:] == node[:-1]), False]
        rows, mt, node = rows[~same_next], mt[~same_next], node[~same_next]
        return np.r_[0, np.cumsum(np.bincount(rows, minlength=n))], mt, node

    def leaf_at_target(self, probs) -> np.ndarray:
        """Per sample, the largest target at which the answer is a leaf (NaN if never).

        That leaf is always the sample's most probable one.
        """
        indptr, mt, node = self.answer_paths(probs)
        is_leaf = np.zeros(self.taxonomy.n_nodes, dtype=bool)
        is_leaf[self._leaf_nodes] = True
        out = np.full(indptr.size - 1, np.nan)
        first = indptr[:-1]
        # Only a sample's first answer can be a leaf: later ones are more probable.
        ok = is_leaf[node[first]]
        out[ok] = mt[first[ok]]
        return out

    # ----------------------------------------------------------- internals
    def _decide(self, probs: np.ndarray, lam: float) -> np.ndarray:
        return self._decide_many(probs, np.array([lam]))[:, 0]

    def _decide_many(self, probs: np.ndarray, lams: np.ndarray) -> np.ndarray:
        out = np.empty((probs.shape[0], len(lams)), dtype=np.int64)
        step = self._chunk_rows()
        root = self._specific[self._root]
        for s in range(0, probs.shape[0], step):
            indptr, lam, node = self._paths(probs[s : s + step])
            for j, t in enumerate(lams):
                if math.isinf(t):
                    out[s : s + step, j] = root
                    continue
                count = np.add.reduceat((lam <= t).astype(np.int64), indptr[:-1])
                out[s : s + step, j] = node[indptr[:-1] + count - 1]
        return out

    def _events(self, probs: np.ndarray, y: np.ndarray):
        indptr, lam, node = self._paths(probs)
        rows = np.repeat(np.arange(probs.shape[0]), np.diff(indptr))
        correct = self._is_under(y[rows], node)
        first = np.zeros(lam.size, dtype=bool)
        first[indptr[:-1]] = True
        change = np.r_[False, correct[1:] != correct[:-1]] & ~first
        return correct[indptr[:-1]], lam[change], rows[change], np.where(correct[change], 1, -1)

    def _paths(self, probs: np.ndarray):
        n = probs.shape[0]
        step = self._chunk_rows()
        parts = [self._envelope(probs[s : s + step], s) for s in range(0, n, step)]
        if not parts:
            return np.zeros(1, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64)
        rows = np.concatenate([p[0] for p in parts])
        lam = np.concatenate([p[1] for p in parts])
        node = self._specific[np.concatenate([p[2] for p in parts])]
        # A node and its single child are one answer: keep the first of a run.
        keep = np.r_[True, (node[1:] != node[:-1]) | (rows[1:] != rows[:-1])]
        rows, lam, node = rows[keep], lam[keep], node[keep]
        return np.r_[0, np.cumsum(np.bincount(rows, minlength=n))], lam, node

    def _envelope(self, chunk: np.ndarray, offset: int):
        """Walk the upper envelope of every sample's lines from lambda = 0 up.

        Only nodes at least as probable as the sample's top leaf can ever win
        (a winner's (r_v + lambda) p_v must beat the top leaf's, and no reward
        exceeds a leaf's), and they are few, so after one comparison over the
        node posteriors the walk runs on a ragged list of candidates.
        Returns (row, lambda, node) of every step, sorted by row then lambda.
        """
        m = chunk.shape[0]
        # Candidates: the top leaf (the lowest-index one on exact ties, as the
        # tie rule wants) and the inner nodes at least as probable.
        top_leaf = np.asarray(chunk).argmax(axis=1)
        top = np.asarray(chunk[np.arange(m), top_leaf], dtype=np.float64)
        # Inner-node posteriors come nodes x samples, as the sparse product gives
        # them: transposing the leaf posteriors is cheaper than the node posteriors.
        inner_pt = self._inner_t @ _transpose(chunk)
        icols, irows = np.nonzero(inner_pt >= top * (1.0 - 1e-9))
        pk = np.r_[inner_pt[icols, irows], top]
        del inner_pt
        rows = np.r_[irows, np.arange(m)]
        cols = np.r_[self._inner_nodes[icols], self._leaf_nodes[top_leaf]]
        order = np.lexsort((cols, rows))
        rows, cols, pk = rows[order], cols[order], pk[order]
        bk = pk * self.rewards_[cols]
        # lambda = 0: the best expected gain, near-ties to the more probable node,
        # then to the lower index (cols ascend within a row).
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        sizes = np.diff(np.r_[starts, rows.size])
        best = np.repeat(np.maximum.reduceat(bk, starts), sizes)
        key = np.where(bk >= best - TIE_RTOL * np.abs(best), pk, -1.0)
        hit = np.flatnonzero(key == np.repeat(np.maximum.reduceat(key, starts), sizes))
        first = hit[np.r_[True, rows[hit[1:]] != rows[hit[:-1]]]]
        cur = cols[first]
        p_cur, b_cur, lam_cur = pk[first], bk[first], np.zeros(m)
        out_rows, out_lam, out_node = [np.arange(m)], [np.zeros(m)], [cur]
        keep = pk > p_cur[rows]
        rows, cols, pk, bk = rows[keep], cols[keep], pk[keep], bk[keep]
        while rows.size:
            # Breakpoint with each candidate: (b_cur - b_k) / (p_k - p_cur).
            lam = (b_cur[rows] - bk) / (pk - p_cur[rows])
            np.maximum(lam, lam_cur[rows], out=lam)
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            sizes = np.diff(np.r_[starts, rows.size])
            lmin = np.minimum.reduceat(lam, starts)
            # Lines crossing the envelope at the same point: the steepest one
            # (highest probability) is the envelope just after it.
            tied = lam <= np.repeat(lmin * (1.0 + TIE_RTOL), sizes)
            key = np.where(tied, pk, -1.0)
            hit = np.flatnonzero(key == np.repeat(np.maximum.reduceat(key, starts), sizes))
            first = hit[np.r_[True, rows[hit[1:]] != rows[hit[:-1]]]]
            grp = rows[first]
            out_rows.append(grp)
            out_lam.append(lmin)
            out_node.append(cols[first])
            p_cur[grp] = pk[first]
            b_cur[grp] = bk[first]
            lam_cur[grp] = lmin
            keep = pk > p_cur[rows]
            rows, cols, pk, bk = rows[keep], cols[keep], pk[keep], bk[keep]
        rows = np.concatenate(out_rows)
        order = np.argsort(rows, kind="stable")
        return rows[order] + offset, np.concatenate(out_lam)[order], np.concatenate(out_node)[order]
