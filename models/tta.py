"""Test-time augmentation by rotation.

A photo of a garment is often slightly tilted; averaging the posteriors of a few
rotated copies of the same preprocessed image smooths out the network's
sensitivity to orientation. Views are stacked into one batch so that ``k`` angles
cost about ``k`` forwards of the batch, not ``k`` Python round trips per image.

Layout convention (used everywhere in ``models``): ``rotate_views`` stacks the
views *angle-major* -- rows ``j*B:(j+1)*B`` are all images rotated by
``angles[j]`` -- and per-view logits are returned to callers as ``(N, k, L)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import math

import numpy as np
import torch
from torch.nn.functional import grid_sample


def check_angles(angles) -> tuple[float, ...]:
    """Validate a TTA angle list: non-empty, finite numbers (degrees, counter-clockwise)."""
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Sequence | np.ndarray):
        raise ValueError(f"tta angles must be a non-empty list of degrees, got {angles!r}")
    out = tuple(float(a) for a in angles)
    if not out or not all(np.isfinite(out)):
        raise ValueError(f"tta angles must be a non-empty list of finite degrees, got {list(angles)!r}")
    return out


def rotate(batch: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate a ``(B, C, H, W)`` batch by ``angle`` degrees counter-clockwise.

    Multiples of 90 degrees are exact (``torch.rot90``; square inputs keep their
    shape). Other angles use bilinear interpolation; the uncovered corners are
    filled with 0, which is the mean colour of an already-normalised tensor.
    """
    a = float(angle) % 360.0
    if a == 0.0:
        return batch
    if a % 90.0 == 0.0 and batch.shape[-1] == batch.shape[-2]:
        return torch.rot90(batch, k=int(a // 90), dims=(-2, -1))
    return _rotate_bilinear(batch, float(angle))


def _rotate_bilinear(batch: torch.Tensor, angle: float) -> torch.Tensor:
    """``torchvision.transforms.functional.rotate(batch, angle, BILINEAR, fill=0.0)``, op for op.

    Importing any part of torchvision runs its package ``__init__``, which imports
    ``torchvision.models`` and with it ``torch._dynamo``: over a second of start-up
    for one function. These are the same tensor operations in the same order
    (tests/test_tta.py checks bit-equality with torchvision), so the calibration
    posteriors computed with torchvision stay exactly valid.
    """
    n, _, h, w = batch.shape
    # torchvision's inverse affine matrix for a rotation by -angle about the centre
    rot = math.radians(-angle)
    cos, sin = math.cos(rot), math.sin(rot)
    theta = torch.tensor([cos, sin, 0.0, -sin, cos, 0.0], dtype=batch.dtype, device=batch.device).reshape(1, 2, 3)
    # torchvision's _gen_affine_grid: pixel-centre grid, normalised after applying theta
    base = torch.empty(1, h, w, 3, dtype=batch.dtype, device=batch.device)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 + 0.5 - 1, steps=w, device=batch.device))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 + 0.5 - 1, steps=h, device=batch.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=batch.dtype, device=batch.device)
    grid = base.view(1, h * w, 3).bmm(scaled).view(1, h, w, 2)
    if n > 1:
        grid = grid.expand(n, h, w, 2)
    # torchvision's _apply_grid_transform with fill=0: a coverage mask rides along as an extra channel
    mask = torch.ones((n, 1, h, w), dtype=batch.dtype, device=batch.device)
    out = grid_sample(torch.cat((batch, mask), dim=1), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    mask = out[:, -1:, :, :].expand_as(out[:, :-1, :, :])
    fill = torch.zeros(1, 1, 1, 1, dtype=batch.dtype, device=batch.device).expand_as(mask)
    return out[:, :-1, :, :] * mask + (1.0 - mask) * fill


def rotate_views(batch: torch.Tensor, angles) -> torch.Tensor:
    """Stack rotated copies of ``batch``: ``(B, C, H, W)`` -> ``(k*B, C, H, W)``, angle-major.

    Parameters
    ----------
    batch : torch.Tensor
        Preprocessed images ``(B, C, H, W)``.
    angles : sequence of float
        Rotation angles in degrees; ``k = len(angles)``. Angle 0 is the identity.

    Returns
    -------
    torch.Tensor
        ``(k*B, C, H, W)``; rows ``j*B ... (j+1)*B - 1`` are the images rotated by ``angles[j]``.

    Examples
    --------
    >>> x = torch.zeros(2, 3, 8, 8)
    >>> rotate_views(x, [0, 90, 180, 270]).shape
    torch.Size([8, 3, 8, 8])
    """
    if batch.ndim != 4:
        raise ValueError(f"batch must be (B, C, H, W), got shape {tuple(batch.shape)}")
    angles = check_angles(angles)
    return torch.cat([rotate(batch, a) for a in angles], dim=0)


def split_views(view_output: torch.Tensor, k: int) -> torch.Tensor:
    """Undo ``rotate_views``' stacking: ``(k*B, ...)`` -> ``(B, k, ...)``."""
    b = view_output.shape[0] // k
    return view_output.reshape(k, b, *view_output.shape[1:]).transpose(0, 1)


def average_view_probs(view_logits, temperature: float = 1.0) -> np.ndarray:
    """Posterior of TTA: mean over views of ``softmax(logits / T)``.

    Parameters
    ----------
    view_logits : array-like
        ``(N, k, L)`` per-view logits, or ``(N, L)`` for a single view.
    temperature : float
        Positive temperature ``T``.

    Returns
    -------
    np.ndarray
        ``(N, L)`` float64 rows summing to 1.
    """
    z = np.asarray(view_logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[:, None, :]
    if z.ndim != 3:
        raise ValueError(f"view logits must be (N, k, L) or (N, L), got shape {z.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = z / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return p.mean(axis=1)
