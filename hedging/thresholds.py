"""Confidence-threshold rules for comparison with DARTS: LEAF-GT and climbing.

Both have one parameter, a threshold ``theta`` on a node probability, and the
same calibration as DARTS (``guarantee="pac"`` or ``"expected"``), so the rules
are comparable at equal accuracy targets. For both, a sample is predicted
correctly iff ``theta > a_i`` for a per-sample value ``a_i`` (the probability
of the most general wrong node the rule could stop at; ``-inf`` if none), so
the calibration accuracy is non-decreasing in ``theta`` and exact.
"""

from __future__ import annotations

import math

import numpy as np

from hedged.hedging._base import HedgingRule

_GUARANTEE_DOC = """
    Parameters
    ----------
    taxonomy : taxonomy.Taxonomy
    guarantee : {"pac", "expected"}, default "pac"
        As for :class:`hedging.Darts`: ``"pac"`` certifies the target with
        probability >= 1 - delta over the calibration draw (exchangeable data,
        fixed model); ``"expected"`` takes the smallest threshold whose
        calibration accuracy meets the target.
    delta : float in (0, 1), default 0.05
"""


class _ThresholdRule(HedgingRule):
    _parameter_name = "threshold"
    # a probability threshold: above 1 every sample gets the root
    _parameter_max = 1.0

    def threshold_for(self, accuracy) -> float:
        """The threshold ``predict(..., accuracy)`` uses (inf = root for all)."""
        return self._parameter_for(accuracy)

    def decide_index(self, probs, threshold) -> np.ndarray:
        """Node indices for a given threshold (no calibration involved)."""
        return self._decide_with(probs, threshold, "threshold")

    def decide(self, probs, threshold) -> np.ndarray:
        """Node names for a given threshold."""
        return self._names(self.decide_index(probs, threshold))

    def _events(self, probs: np.ndarray, y: np.ndarray):
        a = self._wrong_levels(probs, y)
        finite = np.flatnonzero(np.isfinite(a))
        # Right at theta = 0 iff no wrong node can stop the rule (level -inf);
        # right from the smallest theta above its level on.
        lam = np.nextafter(a[finite], np.inf)
        return ~np.isfinite(a), lam, finite, np.ones(finite.size, dtype=np.int64)


class LeafGT(_ThresholdRule):
    __doc__ = (
        """LEAF-GT: the leaf argmax if its probability is >= theta, else the root.

    ``theta = 0`` is the flat classifier; ``theta = inf`` the root for all.
"""
        + _GUARANTEE_DOC
    )

    def _decide(self, probs: np.ndarray, theta: float) -> np.ndarray:
        top = probs.argmax(axis=1)
        conf = probs[np.arange(probs.shape[0]), top]
        return np.where(conf >= theta, self._leaf_nodes[top], self._root)

    def _wrong_levels(self, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        top = probs.argmax(axis=1)
        conf = probs[np.arange(probs.shape[0]), top].astype(np.float64)
        return np.where(top == y, -np.inf, conf)


class Climbing(_ThresholdRule):
    __doc__ = (
        """Climbing (Goren, Galil & El-Yaniv, NeurIPS 2024, "Hierarchical Selective
    Classification"): start at the most likely leaf and move to the most
    probable parent until the node's probability is >= theta.

    In a DAG the most probable parent is taken (ties: the lower node index).
    ``theta = 0`` is the flat classifier; ``theta = inf`` the root for all.
"""
        + _GUARANTEE_DOC
    )

    def _prepare(self) -> None:
        super()._prepare()
        tax = self.taxonomy
        parents = [sorted(tax.node_index(list(tax.graph.predecessors(v)))) if v != tax.root else [] for v in tax.nodes]
        width = max(1, max(len(p) for p in parents))
        # Padded with the first parent (a duplicate never changes the argmax);
        # the root row is never read.
        table = np.full((tax.n_nodes, width), self._root, dtype=np.int64)
        for i, p in enumerate(parents):
            if p:
                table[i, :] = p[0]
                table[i, : len(p)] = p
        self._parents = table

    def _climb(self, node_p: np.ndarray, start: np.ndarray, theta: float, on_step=None) -> np.ndarray:
        cur = start.copy()
        rows = np.arange(node_p.shape[0])
        active = rows[(node_p[rows, cur] < theta) & (cur != self._root)]
        while active.size:
            par = self._parents[cur[active]]
            best = node_p[active[:, None], par].argmax(axis=1)
            cur[active] = par[np.arange(active.size), best]
            if on_step is not None:
                on_step(active, cur[active])
            active = active[(node_p[active, cur[active]] < theta) & (cur[active] != self._root)]
        return cur

    def _decide(self, probs: np.ndarray, theta: float) -> np.ndarray:
        n = probs.shape[0]
        out = np.empty(n, dtype=np.int64)
        step = self._chunk_rows()
        for s in range(0, n, step):
            chunk = probs[s : s + step]
            node_p = self._node_probs(chunk)
            out[s : s + step] = self._climb(node_p, self._leaf_nodes[chunk.argmax(axis=1)], theta)
        return out

    def _wrong_levels(self, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty(probs.shape[0])
        step = self._chunk_rows()
        for s in range(0, probs.shape[0], step):
            chunk = probs[s : s + step]
            yc = y[s : s + step]
            node_p = self._node_probs(chunk)
            start = self._leaf_nodes[chunk.argmax(axis=1)]
            rows = np.arange(chunk.shape[0])
            # Along the climb the node probability never decreases and once a
            # node contains the true leaf all later ones do, so the highest
            # wrong node's probability is the running maximum over wrong nodes.
            level = np.where(self._is_under(yc, start), -np.inf, node_p[rows, start])

            def on_step(act, nodes, level=level, node_p=node_p, yc=yc):
                wrong = ~self._is_under(yc[act], nodes)
                level[act[wrong]] = np.maximum(level[act[wrong]], node_p[act[wrong], nodes[wrong]])

            self._climb(node_p, start, math.inf, on_step)
            out[s : s + step] = level
        return out
