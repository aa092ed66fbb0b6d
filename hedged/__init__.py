"""hedged: hierarchical classification with hedged predictions (DARTS).

``HedgedClassifier`` is the entry point: ``HedgedClassifier.from_bundle()`` for
images with the bundled model, ``HedgedClassifier(taxonomy).fit(probs, labels)``
for posteriors from any classifier. The taxonomy and rule classes are
re-exported for convenience. Importing this package does not import torch.

The subpackages ``hedged.taxonomy``, ``hedged.hedging`` and ``hedged.models``
live in the repository's top-level folders ``taxonomy/``, ``hedging/`` and
``models/``; an install maps them into this package (``package-dir`` in
pyproject.toml), so nothing is installed under a generic top-level name.
"""

import os as _os

# Run from a source checkout without installing (python predict.py ...): the
# subpackages are found beside this folder. An installed wheel has them inside.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "taxonomy")) and _os.path.isfile(
    _os.path.join(_root, "taxonomy", "__init__.py")
):
    __path__.append(_root)

from hedged.classifier import HedgedClassifier, UncalibratedError, check_accuracy
from hedged.results import Node, Prediction
from hedged.hedging import Climbing, Darts, FlatClassifier, LeafGT
from hedged.taxonomy import Taxonomy, TaxonomyError

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
