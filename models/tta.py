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

import functools
import math
from collections.abc import Sequence

import numpy as np

# torch is imported inside the torch functions: the numpy twins (rotate_array,
# rotate_views_array) serve the ONNX Runtime path, which runs without torch.


def check_angles(angles) -> tuple[float, ...]:
    """Validate a TTA angle list: non-empty, finite numbers (degrees, counter-clockwise)."""
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Sequence | np.ndarray):
        raise ValueError(f"tta angles must be a non-empty list of degrees, got {angles!r}")
    out = tuple(float(a) for a in angles)
    if not out or not all(np.isfinite(out)):
        raise ValueError(f"tta angles must be a non-empty list of finite degrees, got {list(angles)!r}")
    return out


def rotate(batch, angle: float):
    """Rotate a ``(B, C, H, W)`` batch by ``angle`` degrees counter-clockwise.

    Multiples of 90 degrees are exact (``torch.rot90``; square inputs keep their
    shape). Other angles use bilinear interpolation; the uncovered corners are
    filled with 0, which is the mean colour of an already-normalised tensor.
    """
    a = float(angle) % 360.0
    if a == 0.0:
        return batch
    if a % 90.0 == 0.0 and batch.shape[-1] == batch.shape[-2]:
        import torch

        return torch.rot90(batch, k=int(a // 90), dims=(-2, -1))
    return _rotate_bilinear(batch, float(angle))


def _rotate_bilinear(batch, angle: float):
    """``torchvision.transforms.functional.rotate(batch, angle, BILINEAR, fill=0.0)``, op for op.

    Importing any part of torchvision runs its package ``__init__``, which imports
    ``torchvision.models`` and with it ``torch._dynamo``: over a second of start-up
    for one function. These are the same tensor operations in the same order
    (tests/test_tta.py checks bit-equality with torchvision), so the calibration
    posteriors computed with torchvision stay exactly valid.
    """
    import torch
    from torch.nn.functional import grid_sample

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


def rotate_views(batch, angles):
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
    import torch

    return torch.cat([rotate(batch, a) for a in angles], dim=0)


def _bilinear_taps(angle: float, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel indices ``(4, h*w)`` and weights ``(4, h*w)`` of a rotation.

    The same sampling as torchvision's tensor ``rotate`` (inverse affine matrix about
    the centre, ``grid_sample`` bilinear with ``align_corners=False`` and zero padding);
    taps that fall outside the image get weight 0.
    """
    rot = math.radians(-angle)  # torchvision passes -angle to its inverse matrix
    m = (math.cos(rot), math.sin(rot), -math.sin(rot), math.cos(rot))
    # Everything in float32 and in torch's order of operations (theta / half-size, then
    # the grid product; grid_sample's (g + 1) * size/2 - 0.5), so the taps and weights
    # are those torch computes, not merely close to them.
    f32 = np.float32
    t = [f32(v) / f32(0.5 * n) for v, n in zip(m, (w, w, h, h))]
    xs = np.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, dtype=np.float32)
    ys = np.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, dtype=np.float32)[:, None]
    gx = xs * t[0] + ys * t[1]
    gy = xs * t[2] + ys * t[3]
    ix = ((gx + f32(1)) * f32(w / 2) - f32(0.5)).ravel()
    iy = ((gy + f32(1)) * f32(h / 2) - f32(0.5)).ravel()
    x0, y0 = np.floor(ix), np.floor(iy)
    fx, fy = ix - x0, iy - y0
    gx_, gy_ = f32(1) - fx, f32(1) - fy
    idx, wts = [], []
    for dy, dx, wt in ((0, 0, gx_ * gy_), (0, 1, fx * gy_), (1, 0, gx_ * fy), (1, 1, fx * fy)):
        xx, yy = x0.astype(np.intp) + dx, y0.astype(np.intp) + dy
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        idx.append(np.where(inside, yy * w + xx, 0))
        wts.append(np.where(inside, wt, f32(0)).astype(np.float32))
    return np.stack(idx), np.stack(wts)


@functools.lru_cache(maxsize=16)
def _rotation_matrix(angle: float, h: int, w: int):
    """The rotation as a sparse ``(h*w, h*w)`` matrix: 4 bilinear taps per output pixel,
    each weight already multiplied by the pixel's coverage (torchvision's fill rule)."""
    import scipy.sparse as sp

    idx, wts = _bilinear_taps(angle, h, w)
    n = h * w
    vals = (wts * wts.sum(axis=0)).astype(np.float32)
    return sp.csr_matrix((vals.T.ravel(), idx.T.ravel(), np.arange(0, 4 * n + 1, 4)), shape=(n, n))


def rotate_array(batch: np.ndarray, angle: float) -> np.ndarray:
    """The numpy twin of :func:`rotate` for a float32 ``(B, C, H, W)`` array.

    Matches torchvision to float rounding (about 1e-6 on normalised pixels),
    including its fill rule: the sampled image times the sampled coverage mask.
    The rotation is one sparse matrix product per call (4 taps per pixel,
    compiled in scipy): about 5 times faster than gathering the taps in numpy.
    """
    a = float(angle) % 360.0
    if a == 0.0:
        return batch
    b, c, h, w = batch.shape
    if a % 90.0 == 0.0 and h == w:
        return np.ascontiguousarray(np.rot90(batch, k=int(a // 90), axes=(-2, -1)))
    rot = _rotation_matrix(float(angle), h, w)
    flat = np.asarray(batch, dtype=np.float32).reshape(b * c, h * w)
    out = rot @ flat.T  # (h*w, b*c)
    return np.ascontiguousarray(out.T, dtype=np.float32).reshape(b, c, h, w)


def rotate_views_array(batch: np.ndarray, angles) -> np.ndarray:
    """The numpy twin of :func:`rotate_views`: ``(B, C, H, W)`` -> ``(k*B, C, H, W)``, angle-major."""
    if batch.ndim != 4:
        raise ValueError(f"batch must be (B, C, H, W), got shape {batch.shape}")
    angles = check_angles(angles)
    return np.concatenate([rotate_array(batch, a) for a in angles], axis=0)


def split_views(view_output, k: int):
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
