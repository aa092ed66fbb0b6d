"""Hedged decisions over leaf-posterior matrices (torch-free).

Rules share the scikit-learn / MAPIE shape: ``rule.fit(probs_cal, labels_cal)``
then ``rule.predict(probs, accuracy=0.95)`` for any target, without refitting.

* :class:`Darts` - Deng et al. 2012, exact calibration of lambda.
* :class:`Climbing` - Goren et al. 2024, climb to the most probable parent.
* :class:`LeafGT` - the leaf if confident enough, else the root.
* :class:`FlatClassifier` - the leaf argmax.

Hierarchical metrics live in :mod:`hedging.metrics`.
"""

from hedged.hedging._base import NotFittedError, check_accuracy
from hedged.hedging.darts import Darts
from hedged.hedging.flat import FlatClassifier
from hedged.hedging.thresholds import Climbing, LeafGT

__all__ = ["Darts", "Climbing", "LeafGT", "FlatClassifier", "NotFittedError", "check_accuracy"]
