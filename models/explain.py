"""Attribution maps for taxonomy nodes: Grad-CAM and integrated gradients (Captum).

A node's score is its probability, the sum of its leaves' posteriors
``softmax(logits / T)``, so an inner node ("Outerwear") is explained exactly like
a class. Both methods see the photo through the bundle's preprocessing and its
rotation TTA, so they explain the number the answer was made from:

- Grad-CAM (:func:`gradcam`, Selvaraju et al. 2017) runs on the output of the last
  convolutional stage. Each TTA view gets its own map for its own node probability;
  the maps are upsampled to the input, rotated back to the photo's frame and
  averaged where the views cover the photo (a rotated view loses its corners).
- Integrated gradients (:func:`integrated_gradients`, Sundararajan et al. 2017)
  differentiate the TTA posterior itself (the mean over views of the rotated inputs'
  probabilities); the rotation is inside the differentiated function, so the
  attributions are already in the photo's frame and sum to ``f(x) - f(baseline)``.

:func:`to_photo_frame` maps an ``S x S`` input-frame map back onto the photo (NaN
where the model saw nothing, e.g. outside a centre crop).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hedged.models.preprocess import Preprocess
from hedged.models.tta import check_angles, rotate, rotate_views, split_views

__all__ = [
    "NodeProbability",
    "gradcam",
    "gradcam_layer",
    "integrated_gradients",
    "membership_matrix",
    "node_probabilities",
    "to_photo_frame",
]


class NodeProbability(nn.Module):
    """``x -> softmax(model(x) / T) @ membership``: node probabilities per input.

    Parameters
    ----------
    model : torch.nn.Module
        Leaf classifier (logits ``(B, L)``).
    membership : array-like, shape (L, K)
        Column ``k`` is 1 for the leaves under target node ``k``.
    temperature : float
        The bundle's temperature.
    """

    def __init__(self, model: nn.Module, membership, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.register_buffer("membership", torch.as_tensor(np.asarray(membership), dtype=torch.float32))
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float() / self.temperature, dim=-1) @ self.membership


class _TTANodeProbability(nn.Module):
    """The TTA posterior of the nodes: mean over rotated views of :class:`NodeProbability`."""

    def __init__(self, scorer: NodeProbability, angles: tuple[float, ...]):
        super().__init__()
        self.scorer = scorer
        self.angles = angles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = rotate_views(x, self.angles).contiguous(memory_format=torch.channels_last)
        return split_views(self.scorer(views), len(self.angles)).mean(dim=1)


def _captum_attr():
    try:
        import captum.attr
    except ImportError:
        from hedged.models.extras import MissingExtraError, hint

        raise MissingExtraError(f"captum is not installed and explanations need it: {hint('explain')}") from None
    return captum.attr


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the last convolutional stage of ``model``.

    EfficientNet-Lite: the last MBConv block (``_blocks[-1]``, stride 32); ResNet:
    ``layer4``; MobileNetV3: ``features[-1]``.
    """
    if hasattr(model, "members"):
        # an ensemble: the first member's last stage (its maps show that member's evidence)
        return gradcam_layer(model.members[0])
    if hasattr(model, "_blocks"):
        return model._blocks[-1]
    if hasattr(model, "layer4"):
        return model.layer4
    if hasattr(model, "features"):
        return model.features[-1]
    raise ValueError(f"no known last convolutional stage in {type(model).__name__}; pass layer=...")


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be one preprocessed image of shape (1, 3, S, S), got {shape}")
    return x.detach().float()


def _membership(membership) -> np.ndarray:
    m = np.asarray(membership, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] < 1:
        raise ValueError(f"membership must be (n_leaves, n_nodes) with at least one node, got shape {m.shape}")
    return m


@torch.no_grad()
def node_probabilities(model: nn.Module, x: torch.Tensor, membership, temperature: float, angles=(0.0,)) -> np.ndarray:
    """TTA node probabilities ``(B, K)`` of preprocessed images ``x`` ``(B, 3, S, S)``."""
    model.eval()
    f = _TTANodeProbability(NodeProbability(model, _membership(membership), temperature), check_angles(angles))
    return f(x.float()).double().numpy()


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    membership,
    temperature: float,
    angles=(0.0,),
    *,
    relu: bool = True,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM maps of K nodes for one image, in the input frame.

    Parameters
    ----------
    model : torch.nn.Module
        The leaf classifier (its parameters are not changed; eval mode is set).
    x : torch.Tensor
        One preprocessed image ``(1, 3, S, S)`` (unrotated).
    membership : array-like, shape (L, K)
        Leaves of each target node (see :class:`NodeProbability`).
    temperature : float
    angles : sequence of float
        The TTA rotations the answer was made with.
    relu : bool
        Keep only the positive evidence, as in the Grad-CAM paper; ``False`` keeps
        the sign (the randomisation test compares signed maps).
    layer : torch.nn.Module, optional
        Default :func:`gradcam_layer`.

    Returns
    -------
    np.ndarray
        ``(K, S, S)`` float32: per node, the mean over views of the view's map
        (bilinearly upsampled from the layer's grid) rotated back to the input frame.
    """
    attr = _captum_attr()
    LayerAttribution, LayerGradCam = attr.LayerAttribution, attr.LayerGradCam
    x = _check_input(x)
    m = _membership(membership)
    angles = check_angles(angles)
    k, n_nodes, size = len(angles), m.shape[1], x.shape[-2:]
    model.eval()
    if layer is not None:
        layers = [layer]
    elif hasattr(model, "members"):
        # an ensemble: each member's last stage, weighted by the ensemble's own score, summed
        # before the ReLU (the members' evidence adds up in the averaged logits)
        layers = [gradcam_layer(member) for member in model.members]
    else:
        layers = [gradcam_layer(model)]
    views = rotate_views(x, angles)  # (k, 3, S, S), angle-major
    # One batch for all (node, view) pairs: node-major rows, each row's target is its node.
    inputs = views.repeat(n_nodes, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    target = [j for j in range(n_nodes) for _ in range(k)]
    maps = 0
    for lay in layers:
        cam = LayerGradCam(NodeProbability(model, m, temperature), lay)
        part = cam.attribute(inputs, target=target, relu_attributions=relu and len(layers) == 1)
        maps = maps + LayerAttribution.interpolate(part.detach().float(), tuple(size), interpolate_mode="bilinear")
    if relu and len(layers) > 1:
        maps = torch.relu(maps)
    maps = maps.reshape(n_nodes, k, *size)
    back = torch.stack([rotate(maps[:, j : j + 1], -a)[:, 0] for j, a in enumerate(angles)], dim=1)
    # A view rotated by a non-right angle has no content in its corners: rotated back,
    # those photo pixels were unseen by that view and must not dilute the others' maps.
    ones = torch.ones(1, 1, *size)
    cover = torch.stack([rotate(ones, -a)[0, 0] for a in angles])  # (k, S, S)
    out = back.sum(dim=1) / cover.sum(dim=0).clamp_min(1e-6)
    return out.numpy().astype(np.float32, copy=False)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    membership,
    temperature: float,
    angles=(0.0,),
    *,
    n_steps: int = 64,
    baseline: torch.Tensor | float = 0.0,
    internal_batch_size: int = 8,
    return_convergence_delta: bool = False,
):
    """Integrated-gradients attributions of K nodes' TTA probability for one image.

    Parameters
    ----------
    model, x, membership, temperature, angles
        As for :func:`gradcam`.
    n_steps : int
        Gauss-Legendre points on the path from the baseline to ``x``.
    baseline : torch.Tensor or float
        Default 0: in normalised input space, the mean grey the TTA rotation also
        fills corners with.
    internal_batch_size : int
        Path points per forward (each one runs ``len(angles)`` views).
    return_convergence_delta : bool
        Also return Captum's completeness error per node:
        ``sum(attributions) - (f(x) - f(baseline))``.

    Returns
    -------
    np.ndarray
        ``(K, 3, S, S)`` float32 attributions in the input frame; with
        ``return_convergence_delta`` also a ``(K,)`` float64 array.
    """
    IntegratedGradients = _captum_attr().IntegratedGradients
    x = _check_input(x)
    m = _membership(membership)
    angles = check_angles(angles)
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    model.eval()
    n_nodes = m.shape[1]
    f = _TTANodeProbability(NodeProbability(model, m, temperature), angles)
    inputs = x.repeat(n_nodes, 1, 1, 1)
    # Captum runs batch * n_steps path points; internal_batch_size counts those points.
    result = IntegratedGradients(f).attribute(
        inputs,
        baselines=baseline,
        target=list(range(n_nodes)),
        n_steps=int(n_steps),
        internal_batch_size=max(1, int(internal_batch_size)),
        return_convergence_delta=return_convergence_delta,
    )
    if return_convergence_delta:
        attr, delta = result
        return attr.detach().float().numpy(), delta.detach().double().numpy()
    return result.detach().float().numpy()


def _input_affine(preprocess: Preprocess, width: int, height: int) -> tuple[float, float, float, float]:
    """``(ax, bx, ay, by)`` with input pixel ``u = ax * x + bx``, ``v = ay * y + by`` for photo pixel ``(x, y)``.

    Follows :meth:`Preprocess.resize_image` for each resize policy (continuous pixel
    coordinates: 0 is the left edge of the first pixel).
    """
    s = preprocess.input_size
    if preprocess.resize == "squash":
        return s / width, 0.0, s / height, 0.0
    if preprocess.resize == "center_crop":
        side = min(width, height) * preprocess.crop_pct
        left, top = (width - side) / 2.0, (height - side) / 2.0
        return s / side, -left * s / side, s / side, -top * s / side
    scale = s / max(width, height)
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    return nw / width, float((s - nw) // 2), nh / height, float((s - nh) // 2)


def to_photo_frame(maps, preprocess: Preprocess, photo_size: tuple[int, int], out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Resample input-frame maps onto the photo.

    Parameters
    ----------
    maps : array-like, shape (K, S, S) or (K, C, S, S)
        Maps in the model-input frame (``S = preprocess.input_size``); channels are summed.
    preprocess : Preprocess
        The recipe that made the input from the photo.
    photo_size : (width, height)
        Size of the photo the preprocessing was applied to.
    out_size : (width, height), optional
        Output resolution (default ``photo_size``); same aspect ratio as the photo
        for the maps to line up.

    Returns
    -------
    np.ndarray
        ``(K, H, W)`` float32, bilinear; NaN where the photo pixel is outside what
        the model saw (outside a centre crop; never for "squash" or "pad").
    """
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    if t.ndim == 4:
        t = t.sum(dim=1)
    s = preprocess.input_size
    if t.ndim != 3 or tuple(t.shape[-2:]) != (s, s):
        raise ValueError(f"maps must be (K, {s}, {s}) in the input frame, got shape {tuple(t.shape)}")
    width, height = (int(v) for v in photo_size)
    ow, oh = (width, height) if out_size is None else (int(v) for v in out_size)
    ax, bx, ay, by = _input_affine(preprocess, width, height)
    # Centres of the output pixels, in photo then input coordinates, then grid_sample's [-1, 1].
    u = ax * ((torch.arange(ow, dtype=torch.float64) + 0.5) * width / ow) + bx
    v = ay * ((torch.arange(oh, dtype=torch.float64) + 0.5) * height / oh) + by
    gx, gy = 2.0 * u / s - 1.0, 2.0 * v / s - 1.0
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).float()  # (oh, ow, 2) as (x, y)
    out = F.grid_sample(t[:, None], grid.expand(t.shape[0], oh, ow, 2), mode="bilinear",
                        padding_mode="border", align_corners=False)[:, 0]
    seen = (u >= 0) & (u <= s)
    seen_y = (v >= 0) & (v <= s)
    out[:, ~(seen_y[:, None] & seen[None, :])] = float("nan")
    return out.numpy()


def membership_matrix(leaf_sets: Sequence[Sequence[int]], n_leaves: int) -> np.ndarray:
    """``(n_leaves, K)`` 0/1 matrix from the leaf indices of each target node."""
    m = np.zeros((n_leaves, len(leaf_sets)), dtype=np.float32)
    for k, leaves in enumerate(leaf_sets):
        m[np.asarray(leaves, dtype=np.int64), k] = 1.0
    return m
