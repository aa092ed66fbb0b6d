"""Several trained networks as one model: concatenated features, one linear head (logit averaging).

An ensemble of classifiers whose logits are averaged (each scaled by its own
temperature first) is itself a network of the usual shape: its features are the
members' features side by side, and its classifier one linear layer,

    logits = sum_i w_i / T_i (W_i f_i + b_i) = [w_1 W_1 / T_1, ...] [f_1; ...] + sum_i w_i b_i / T_i.

So it trains, saves, loads, exports to ONNX, quantizes and feeds the out-of-taxonomy
detector like a single EfficientNet-Lite (``forward_features`` / ``get_classifier``),
with one input (the first member's preprocessing) and one pass per view. Averaging
logits is the geometric mean of the members' posteriors; the bundle's temperature is
fitted on validation afterwards, as for any model.

The architecture name lists the members: ``"ensemble:efficientnet_lite1+efficientnet_lite2"``.
"""

from __future__ import annotations

import torch
from torch import nn

PREFIX = "ensemble:"


def member_archs(arch: str) -> list[str] | None:
    """The member architectures of an ensemble name, or None for a single network.

    >>> member_archs("ensemble:efficientnet_lite1+efficientnet_lite2")
    ['efficientnet_lite1', 'efficientnet_lite2']
    >>> member_archs("efficientnet_lite1") is None
    True
    """
    if not isinstance(arch, str) or not arch.startswith(PREFIX):
        return None
    names = [a for a in arch[len(PREFIX):].split("+") if a]
    if len(names) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {arch!r}")
    return names


def ensemble_arch(archs) -> str:
    return PREFIX + "+".join(archs)


class EnsembleNet(nn.Module):
    """Members' features concatenated, one linear head; see the module docstring.

    Parameters
    ----------
    members : sequence of nn.Module
        Networks with ``forward_features(x) -> (N, D_i)`` and ``get_classifier()``
        (their classifiers are not used once the head is built).
    num_classes : int
    """

    def __init__(self, members, num_classes: int):
        super().__init__()
        self.members = nn.ModuleList(members)
        dims = [m.get_classifier().in_features for m in members]
        self.feature_dims = tuple(dims)
        self._fc = nn.Linear(sum(dims), num_classes)

    @classmethod
    def from_members(cls, members, temperatures=None, weights=None) -> EnsembleNet:
        """The ensemble averaging the members' logits, each divided by its temperature."""
        k = len(members)
        temperatures = [1.0] * k if temperatures is None else list(temperatures)
        weights = [1.0 / k] * k if weights is None else list(weights)
        heads = [m.get_classifier() for m in members]
        net = cls(members, heads[0].out_features)
        with torch.no_grad():
            net._fc.weight.copy_(torch.cat([w / t * h.weight for h, t, w in zip(heads, temperatures, weights)], dim=1))
            net._fc.bias.copy_(sum(w / t * h.bias for h, t, w in zip(heads, temperatures, weights)))
        return net

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.forward_features(x) for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self._fc

    def fuse_batchnorm(self) -> EnsembleNet:
        for m in self.members:
            if hasattr(m, "fuse_batchnorm"):
                m.fuse_batchnorm()
        return self
