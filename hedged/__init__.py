"""hedged: hierarchical classification with hedged predictions (DARTS).

``HedgedClassifier`` is the entry point: ``HedgedClassifier.from_bundle()`` for
images with the bundled model, ``HedgedClassifier(taxonomy).fit(probs, labels)``
for posteriors from any classifier. The taxonomy and rule classes are
re-exported for convenience. Importing this package does not import torch.
"""

from hedged.classifier import HedgedClassifier, UncalibratedError, check_accuracy
from hedged.results import Node, Prediction
from hedging import Climbing, Darts, FlatClassifier, LeafGT
from taxonomy import Taxonomy, TaxonomyError

__all__ = [
    "HedgedClassifier",
    "Prediction",
    "Node",
    "UncalibratedError",
    "check_accuracy",
    "Taxonomy",
    "TaxonomyError",
    "Darts",
    "Climbing",
    "LeafGT",
    "FlatClassifier",
]
