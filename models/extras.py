"""Optional dependencies: one-line errors that name the extra to install.

The default model runs on ONNX Runtime; torch and torchvision (training, explanations,
torch bundles, export) and captum (integrated gradients, Grad-CAM) are extras.
"""

from __future__ import annotations

import importlib


class MissingExtraError(ImportError):
    """A feature needs a package of an optional extra that is not installed."""


def hint(extra: str) -> str:
    """How to install ``extra``, from PyPI or from a clone."""
    return f"pip install 'hedged[{extra}]' (from a source checkout: pip install -e '.[{extra}]')"


def require(module: str, feature: str, extra: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``feature`` and ``extra``.

    >>> require("math", "arithmetic", "torch")
    """
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module.split('.')[0]} is not installed and {feature} need it: {hint(extra)}") from None


def require_torch(feature: str, extra: str = "torch") -> None:
    """torch and torchvision, or one line naming the extra."""
    require("torch", feature, extra)
    require("torchvision", feature, extra)
