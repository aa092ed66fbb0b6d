"""Batched inference with rotation TTA: images -> per-view logits -> posteriors."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from hedged.models.preprocess import Preprocess
from hedged.models.tta import average_view_probs, check_angles, rotate_views, split_views


#: The named outputs of a bundle's model, in this order (``bundle.json`` lists them under
#: ``"outputs"``; an exported model, e.g. ONNX, must offer the same names and shapes).
OUTPUTS = {
    "logits": "float32 (N, num_classes): classifier logits of each input view, columns = taxonomy leaves",
    "features": "float32 (N, feature_dim): pooled penultimate features; logits = classifier(features), "
    "and the out-of-taxonomy detector's heads read them",
}


class LogitsAndFeatures(nn.Module):
    """``model`` with both outputs of :data:`OUTPUTS`: ``forward(x) -> (logits, features)``.

    One backbone pass: in eval mode ``model(x) == model.get_classifier()(model.forward_features(x))``.
    This is the module to export (ONNX) when the exported model must feed the
    out-of-taxonomy detector too.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.forward_features(x)
        return self.model.get_classifier()(feats), feats


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: Iterable,
    preprocess: Preprocess,
    angles=(0.0,),
    batch_size: int = 8,
    progress: bool = False,
    return_features: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-view logits of ``images`` under rotation TTA (and, optionally, the features).

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
    return_features : bool
        Also return the pooled penultimate features the logits are computed from
        (``model.forward_features``), at no extra cost: the classifier is applied to
        them here. The out-of-taxonomy detector reads them (:mod:`models.ood`).

    Returns
    -------
    logits : np.ndarray
        ``(N, k, L)`` float32 logits, ``k = len(angles)``.
    features : np.ndarray
        ``(N, k, D)`` float32, ``D = model.num_features``; only with ``return_features``.
    """
    angles = check_angles(angles)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = list(images)
    model.eval()
    device = next(model.parameters()).device  # inputs follow the model (CPU unless moved)
    chunks, feat_chunks = [], []
    both = LogitsAndFeatures(model)
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
            if return_features:
                logits, feats = (torch.cat(t) for t in zip(*(both(v) for v in x.split(batch_size))))
                feat_chunks.append(split_views(feats.float(), len(angles)).cpu().numpy())
            else:
                logits = torch.cat([model(v) for v in x.split(batch_size)])
            chunks.append(split_views(logits.float(), len(angles)).cpu().numpy())
            if bar is not None:
                bar.advance(task, len(part))
    finally:
        if bar is not None:
            bar.stop()
    if not chunks:
        logits = np.zeros((0, len(angles), model.get_classifier().out_features), dtype=np.float32)
        feats = np.zeros((0, len(angles), model.get_classifier().in_features), dtype=np.float32)
    else:
        logits = np.concatenate(chunks).astype(np.float32, copy=False)
        feats = np.concatenate(feat_chunks).astype(np.float32, copy=False) if return_features else None
    return (logits, feats) if return_features else logits


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
