"""Batched inference with rotation TTA: images -> per-view logits -> posteriors."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from hedged.models.preprocess import Preprocess
from hedged.models.tta import average_view_probs, check_angles, rotate_views, split_views


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: Iterable,
    preprocess: Preprocess,
    angles=(0.0,),
    batch_size: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """Per-view logits of ``images`` under rotation TTA.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier (put into eval mode here).
    images : iterable
        Anything :func:`models.load_image` accepts (paths, PIL images, arrays, ...).
    preprocess : Preprocess
        The model's input recipe.
    angles : sequence of float
        TTA rotation angles in degrees (``(0,)``: no TTA).
    batch_size : int
        Images per step; their ``batch_size * len(angles)`` views are run through the
        network ``batch_size`` views at a time, since small batches are fastest on CPU
        (batch 8 measured as the sweet spot).
    progress : bool
        Show a rich progress bar.

    Returns
    -------
    np.ndarray
        ``(N, k, L)`` float32 logits, ``k = len(angles)``.
    """
    angles = check_angles(angles)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = list(images)
    model.eval()
    device = next(model.parameters()).device  # inputs follow the model (CPU unless moved)
    chunks = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("predicting", total=len(images))
    try:
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size]
            x = rotate_views(preprocess.batch(part), angles).to(device).contiguous(memory_format=torch.channels_last)
            # Views go through the network batch_size at a time: on CPU a batch of k*B views
            # runs slower per view than k batches of B (cache-bound depthwise convolutions).
            logits = torch.cat([model(v) for v in x.split(batch_size)])
            chunks.append(split_views(logits.float(), len(angles)).cpu().numpy())
            if bar is not None:
                bar.advance(task, len(part))
    finally:
        if bar is not None:
            bar.stop()
    if not chunks:
        n_out = model.get_classifier().out_features
        return np.zeros((0, len(angles), n_out), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def predict_probs(
    model: nn.Module,
    images: Iterable,
    preprocess: Preprocess,
    angles=(0.0,),
    temperature: float = 1.0,
    batch_size: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """Posteriors ``(N, L)``: the mean over TTA views of ``softmax(logits / temperature)``.

    See :func:`predict_logits` for the parameters. The rows sum to 1 (float64).
    """
    return average_view_probs(predict_logits(model, images, preprocess, angles, batch_size, progress), temperature)
