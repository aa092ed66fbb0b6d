"""The flat classifier: the leaf argmax, whatever the accuracy target."""

from __future__ import annotations

import numpy as np

from hedged.hedging._base import HedgingRule, check_accuracy


class FlatClassifier(HedgingRule):
    """Leaf argmax (ties: the lower leaf index); ignores the accuracy target.

    ``fit`` only records the calibration accuracy (``calibration_accuracy_``)
    so that reports can put it beside the hedging rules.

    Parameters
    ----------
    taxonomy : taxonomy.Taxonomy
    guarantee, delta
        Accepted for a uniform interface; unused.
    """

    def _calibration_steps(self, probs: np.ndarray, y: np.ndarray):
        n_correct = int(np.count_nonzero(probs.argmax(axis=1) == y)) if probs.shape[0] else 0
        self.calibration_accuracy_ = n_correct / probs.shape[0] if probs.shape[0] else float("nan")
        return np.zeros(1), np.array([n_correct])

    def _parameter_for(self, accuracy) -> float:
        self._check_fitted()
        check_accuracy(accuracy)
        return 0.0

    def _decide(self, probs: np.ndarray, t: float) -> np.ndarray:
        return self._leaf_nodes[probs.argmax(axis=1)]
