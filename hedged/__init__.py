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

__version__ = "0.2.0"

# The public names are imported on first use (PEP 562), so that `import hedged`
# (and `hedged --help`, `hedged --version`) does not pay for numpy and scipy.
_EXPORTS = {
    "HedgedClassifier": "hedged.classifier",
    "UncalibratedError": "hedged.classifier",
    "check_accuracy": "hedged.classifier",
    "Prediction": "hedged.results",
    "Node": "hedged.results",
    "Climbing": "hedged.hedging",
    "Darts": "hedged.hedging",
    "FlatClassifier": "hedged.hedging",
    "LeafGT": "hedged.hedging",
    "Taxonomy": "hedged.taxonomy",
    "TaxonomyError": "hedged.taxonomy",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hedged' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
