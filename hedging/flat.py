"""The flat classifier: the leaf argmax, whatever the accuracy target."""

from __future__ import annotations

import numpy as np

from hedged.hedging._base import HedgingRule, check_accuracies


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

    def _events(self, probs: np.ndarray, y: np.ndarray):
        correct = probs.argmax(axis=1) == y if probs.shape[0] else np.zeros(0, dtype=bool)
        self.calibration_accuracy_ = float(correct.mean()) if probs.shape[0] else float("nan")
        return correct, np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)

    def _parameters_for(self, accuracy, simultaneous: bool = False):
        self._check_fitted()
        a, scalar = check_accuracies(accuracy)
        return np.zeros(np.atleast_1d(a).shape), scalar

    def _decide(self, probs: np.ndarray, t: float) -> np.ndarray:
        return self._leaf_nodes[probs.argmax(axis=1)]
