"""Full fine-tuning: every block trains, with fresh augmentation every epoch.

The cached-front recipe of :mod:`hedged.models.training` trains only the tail on
feature maps computed once; its accuracy stopped improving (docs/model.md). This
module trains the whole network on freshly augmented photos each epoch:

* augmentation per photo and epoch: random resized crop, horizontal flip,
  TrivialAugmentWide, the +-50 degree rotations of the cached recipe (corners filled
  with the mean colour), random erasing; per batch MixUp or CutMix
  (``torchvision.transforms.v2``);
* AdamW with linear warm-up then cosine decay (:func:`lr_factor`), layer-wise
  learning-rate decay (:func:`param_groups`), no weight decay on norms and biases;
* soft targets: label smoothing, or the hierarchy-aware targets of Bertinetto et
  al., "Making Better Mistakes", CVPR 2020 (:func:`soft_target_matrix`);
* class and contributor sample weights as in the cached recipe;
* an exponential moving average of the weights (``torch.optim.swa_utils``);
* progressive resolution (:func:`size_for_epoch`): most epochs at a lower input
  size, the last ones at the size that ships;
* selection on validation only: after every epoch the model and its EMA are scored
  on the validation split (NLL after fitting a temperature, the criterion the
  shipped recipe's calibration cares about) and the best of all is kept;
* a checkpoint every epoch (:func:`save_checkpoint`) holding only tensors and plain
  Python values, so it loads with ``torch.load(weights_only=True)``; a resumed run
  continues the epoch counter, schedule, EMA, history and random streams.

Every random draw of an epoch is seeded from ``(seed, epoch)`` (and the photo index
for augmentation), so a run resumed from the checkpoint of epoch ``e`` replays
epochs ``e+1...`` exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from hedged.models.calibration import accuracy, fit_temperature, nll
from hedged.models.preprocess import Preprocess
from hedged.models.tta import average_view_probs, rotate

CHECKPOINT_FORMAT = "hedged-train-checkpoint/1"
LAST, BEST = "last.pt", "best.pt"


# ---------------------------------------------------------------------------
# targets


def lca_heights(taxonomy) -> np.ndarray:
    """Height of the lowest common ancestor of every pair of leaves.

    The height of a node is the length of the longest downward path from it to a
    leaf (a leaf has height 0), so ``d[i, i] = 0`` and ``d[i, j]`` grows with how far
    up the taxonomy two leaves part; in a DAG the lowest of their common ancestors
    counts. This is the mistake severity of Bertinetto et al. (2020).

    Parameters
    ----------
    taxonomy : hedged.taxonomy.Taxonomy

    Returns
    -------
    np.ndarray
        ``(L, L)`` int64, symmetric, zero diagonal, leaves in column order.

    Examples
    --------
    >>> from hedged.taxonomy import Taxonomy
    >>> t = Taxonomy.from_edges([("r", "warm"), ("warm", "red"), ("warm", "yellow"), ("r", "blue")])
    >>> lca_heights(t).tolist()
    [[0, 1, 2], [1, 0, 2], [2, 2, 0]]
    """
    import networkx as nx

    g = taxonomy.graph
    height = {}
    for v in reversed(list(nx.topological_sort(g))):
        height[v] = 1 + max((height[c] for c in g.successors(v)), default=-1)
    L = taxonomy.n_leaves
    d = np.full((L, L), np.iinfo(np.int64).max, dtype=np.int64)
    csc = taxonomy.membership.tocsc()
    # every common ancestor bounds the pair's distance from above; the lowest wins
    for j, node in enumerate(taxonomy.nodes):
        under = csc.indices[csc.indptr[j] : csc.indptr[j + 1]]
        block = np.ix_(under, under)
        d[block] = np.minimum(d[block], height[node])
    return d


def soft_target_matrix(taxonomy=None, n_classes: int | None = None, label_smoothing: float = 0.0,
                       hierarchy_beta: float | None = None) -> np.ndarray:
    """Row ``y`` is the training target distribution for a photo of leaf ``y``.

    Parameters
    ----------
    taxonomy : Taxonomy, optional
        Needed for ``hierarchy_beta``; else ``n_classes`` gives the size.
    n_classes : int, optional
    label_smoothing : float
        Mixes ``eps`` of the uniform distribution into every row.
    hierarchy_beta : float or None
        Soft hierarchical targets ``q_y(k) ~ exp(-beta * d(k, y))`` with ``d`` the LCA
        height (:func:`lca_heights`): mass spreads to the leaves that share a small
        subtree with the truth, so errors land inside it (Bertinetto et al., CVPR
        2020). ``None``: one-hot.

    Returns
    -------
    np.ndarray
        ``(L, L)`` float32, rows sum to 1.

    Examples
    --------
    >>> soft_target_matrix(n_classes=2, label_smoothing=0.2).tolist()
    [[0.8999999761581421, 0.10000000149011612], [0.10000000149011612, 0.8999999761581421]]
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if hierarchy_beta is not None:
        if taxonomy is None:
            raise ValueError("hierarchical targets need a taxonomy")
        if not hierarchy_beta > 0:
            raise ValueError(f"hierarchy beta must be positive, got {hierarchy_beta}")
        logits = -float(hierarchy_beta) * lca_heights(taxonomy).astype(np.float64)
        q = np.exp(logits - logits.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    else:
        n = taxonomy.n_leaves if taxonomy is not None else n_classes
        if n is None:
            raise ValueError("give a taxonomy or n_classes")
        q = np.eye(n)
    q = (1 - label_smoothing) * q + label_smoothing / q.shape[1]
    return q.astype(np.float32)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of ``-sum_k q_k log p_k`` over the batch.

    Parameters
    ----------
    logits : (B, L) tensor
    targets : (B, L) tensor
        Target distributions.
    weights : (B,) tensor, optional
        Sample weights; the result is ``sum(w * loss) / sum(w)``.
    """
    per = -(targets * torch.log_softmax(logits.float(), dim=1)).sum(1)
    if weights is None:
        return per.mean()
    return (per * weights).sum() / weights.sum()


# ---------------------------------------------------------------------------
# schedule


def lr_factor(step: int, total: int, warmup: int, floor: float = 0.0) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up from ``1 / warmup`` to 1 over the first ``warmup`` steps, then a
    cosine from 1 down to ``floor`` at step ``total``.

    Examples
    --------
    >>> [round(lr_factor(s, total=10, warmup=2), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.345, 0.0]
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(max(step - warmup, 0), span) / span
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def size_for_epoch(epoch: int, epochs: int, final_size: int, train_size: int | None, final_epochs: int) -> int:
    """Input side for ``epoch`` (0-based): ``train_size`` until the last ``final_epochs``.

    Training at a lower resolution is cheap (cost ~ side^2) and, with random resized
    crops, costs little accuracy once the last epochs adapt to the final size.

    Examples
    --------
    >>> [size_for_epoch(e, 5, 280, 224, 2) for e in range(5)]
    [224, 224, 224, 280, 280]
    """
    if train_size is None or epoch >= epochs - final_epochs:
        return final_size
    return train_size


def param_groups(model: nn.Module, lr: float, layer_decay: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay.

    Depth 0 is the stem, depth ``k + 1`` block ``k``, the head convolution and the
    classifier the top depth ``D``; a parameter at depth ``i`` gets
    ``lr * layer_decay ** (D - i)``: early generic filters move least. Norm weights
    and biases get no weight decay.
    """
    n_blocks = len(model._blocks)
    top = n_blocks + 1

    def depth(name: str) -> int:
        if name.startswith("_blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith(("_conv_stem", "_bn0")):
            return 0
        return top

    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        d = depth(name)
        decay = p.ndim > 1  # conv/linear weights; norms and biases stay undecayed
        key = (d, decay)
        if key not in groups:
            scale = layer_decay ** (top - d)
            groups[key] = {"params": [], "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0,
                           "depth": d}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


# ---------------------------------------------------------------------------
# data


def _item_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """Independent seed per (run seed, epoch, stream, photo): 0 = photos, 1 = the epoch's batch draws."""
    return int(np.random.SeedSequence([seed, epoch, stream, index]).generate_state(1)[0])


class AugmentedPhotos(Dataset):
    """Photo index -> (augmented normalised tensor, index); new draws every epoch.

    Set :attr:`epoch` and :attr:`size` before iterating an epoch. Each item's draws are
    seeded from ``(seed, epoch, index)``, so they do not depend on worker count or
    on where a resumed run started.
    """

    def __init__(self, paths, preprocess: Preprocess, seed: int, max_rotation: float = 50.0,
                 erasing: float = 0.25, trivial_augment: bool = True):
        self.paths, self.pre, self.seed = list(paths), preprocess, seed
        self.max_rotation = max_rotation
        self.erase = T.RandomErasing(p=erasing, value=0.0) if erasing > 0 else None
        self.trivial = T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR) if trivial_augment else None
        self.epoch, self.size = 0, preprocess.input_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_item_seed(self.seed, self.epoch, i))
            im = self.pre.load(self.paths[i])
            im = T.RandomResizedCrop(self.size, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3),
                                     interpolation=T.InterpolationMode.BICUBIC)(im)
            if torch.rand(1) < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if self.trivial is not None:
                im = self.trivial(im)
            x = self.pre.normalize(torch.from_numpy(np.asarray(im).copy())).permute(2, 0, 1)
            if self.max_rotation > 0:
                angle = float((torch.rand(1) * 2 - 1) * self.max_rotation)
                x = rotate(x[None], angle)[0]  # corners: 0 = the mean colour after normalising
            if self.erase is not None:
                x = self.erase(x)
        return x.contiguous(), i


class _Decoded(Dataset):
    def __init__(self, paths, preprocess):
        self.paths, self.pre = list(paths), preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(self.pre.to_uint8(self.paths[i]).copy())


def decode_all(paths, preprocess: Preprocess, workers: int = 0) -> torch.Tensor:
    """Photos -> ``(N, S, S, 3)`` uint8 at the preprocess size (validation, decoded once)."""
    ds = _Decoded(paths, preprocess)
    loader = DataLoader(ds, batch_size=16, num_workers=workers)
    s = preprocess.input_size
    return torch.cat(list(loader)) if len(ds) else torch.empty((0, s, s, 3), dtype=torch.uint8)


@torch.inference_mode()
def logits_of(model: nn.Module, pixels: torch.Tensor, preprocess: Preprocess, batch: int = 16) -> np.ndarray:
    """Logits of pre-decoded uint8 NHWC photos (no TTA), model in eval mode."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(pixels), batch):
        x = preprocess.normalize(pixels[s : s + batch]).permute(0, 3, 1, 2).to(device)
        out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------------------
# checkpoints


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path, *, epoch: int, config: dict, model, ema, optimizer, scheduler, history: list,
                    best: dict) -> None:
    """Write the state after ``epoch`` completed epochs (tensors and plain values only)."""
    _atomic_save({
        "format": CHECKPOINT_FORMAT, "epoch": int(epoch), "config": config,
        "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": _rng_state(), "history": history, "best": best,
    }, Path(path))


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; never unpickles code.

    Raises
    ------
    ValueError
        The file is missing, not a checkpoint, or of another format.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise ValueError(f"--resume: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one clear message
        raise ValueError(f"--resume: {path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"--resume: {path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return ckpt


#: config fields that may differ between a run and its resumption (they change
#: where things go or how fast they run, not what is computed)
RESUME_FREE = {"out", "checkpoint_dir", "resume", "log_file", "threads", "workers", "device", "progress", "log",
               "cache_dir", "log_every", "data"}


def check_resumable(saved: dict, current: dict) -> None:
    diff = [k for k in sorted(set(saved) | set(current)) if k not in RESUME_FREE and saved.get(k) != current.get(k)]
    if diff:
        k = diff[0]
        raise ValueError(f"--resume: the checkpoint was made with {k}={saved.get(k)!r}, this run has "
                         f"{k}={current.get(k)!r}" + (f" (and {len(diff) - 1} more differences)" if len(diff) > 1 else ""))


# ---------------------------------------------------------------------------
# the loop


def distributed_rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process under torchrun; ``(0, 1)`` otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_norm_mode(cfg, device: torch.device, world: int) -> str:
    """The BatchNorm mode a run uses (``cfg.batch_norm`` with ``"auto"`` resolved)."""
    mode = getattr(cfg, "batch_norm", "auto")
    if mode not in ("auto", "batch", "frozen", "sync"):
        raise ValueError(f"--batch-norm must be auto, batch, frozen or sync, got {mode!r}")
    if mode == "auto":
        return "sync" if device.type == "cuda" and world > 1 else "batch"
    if mode == "sync" and device.type != "cuda":
        raise ValueError("--batch-norm sync needs CUDA (torch's SyncBatchNorm runs on GPUs only); "
                         "on CPUs use batch or frozen")
    if mode == "sync" and world == 1:
        return "batch"  # one process: SyncBatchNorm is BatchNorm
    return mode


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn the SyncBatchNorm layers of ``module`` back into BatchNorm2d (in place), weights kept."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                child.track_running_stats).to(child.weight.device if child.affine else "cpu")
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            revert_sync_batchnorm(child)
    return module


def fit_full(cfg, model: nn.Module, train_paths, y_train, train_groups, val_paths, y_val, targets: np.ndarray,
             preprocess: Preprocess, log, config_dict: dict) -> tuple[list, dict, np.ndarray | None]:
    """Fine-tune ``model`` in place; leave it holding the best weights by validation.

    Parameters
    ----------
    cfg : TrainConfig
        Uses the full fine-tuning fields (``epochs``, ``batch_size``, ``lr``,
        ``layer_decay``, ``warmup_epochs``, ``train_size``, ``final_epochs``, ``mixup``,
        ``cutmix``, ``ema_halflife``, ``patience``, ``checkpoint_dir``, ``resume``...).
    targets : (L, L) array
        :func:`soft_target_matrix`.
    preprocess : Preprocess
        The final (shipped) input recipe; validation is scored with it.
    config_dict : dict
        Plain config stored in the checkpoint and compared on resume.

    Returns
    -------
    history : list of dict
        Per epoch: train loss, size, seconds, validation top-1 / NLL (T = 1 and fitted)
        of the model and of its EMA.
    best : dict
        ``epoch``, ``which`` (``"model"`` or ``"ema"``) and ``score`` of the kept weights.
    best_logits : np.ndarray or None
        Their validation logits (fp32, unrotated) when computed in this session.
    """
    from hedged.models.training import sample_weights

    device = next(model.parameters()).device
    rank, world = distributed_rank_world()
    bn_mode = batch_norm_mode(cfg, device, world)
    if bn_mode == "sync":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(memory_format=torch.channels_last)
    n_classes = targets.shape[0]
    y_train = np.asarray(y_train)
    sw = torch.tensor(sample_weights(y_train, n_classes, cfg.class_weight_power, train_groups, cfg.contributor_power),
                      dtype=torch.float32)
    q = torch.from_numpy(targets)
    y_t = torch.from_numpy(y_train)
    bs = min(cfg.batch_size, len(y_train))
    if bs % world:
        raise ValueError(f"--batch-size {bs} (the global batch) must be a multiple of the {world} processes")
    local_bs = bs // world
    # drop_last: every batch has bs photos (BatchNorm, MixUp pairing); with N processes each takes
    # bs/N photos of the same global batch a single process would take (DistributedSampler)
    steps_per_epoch = len(y_train) // bs
    total = cfg.epochs * steps_per_epoch
    warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
    opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.layer_decay, cfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, total=total, warmup=warmup))
    ema = None
    if cfg.ema_halflife and cfg.ema_halflife > 0:
        decay = 0.5 ** (1.0 / max(1.0, cfg.ema_halflife * steps_per_epoch))
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    mixers = []
    if cfg.mixup > 0:
        mixers.append(v2.MixUp(alpha=cfg.mixup, num_classes=local_bs))
    if cfg.cutmix > 0:
        mixers.append(v2.CutMix(alpha=cfg.cutmix, num_classes=local_bs))
    # labels are the photos' positions in the batch: the mixed "one-hot" rows are the
    # mixing matrix M, so targets (M @ q[y]) and sample weights (M @ w) mix exactly.
    # Under torchrun each process mixes the photos of its own part of the global batch.
    mixer = v2.RandomChoice(mixers) if mixers else None
    eye = torch.arange(local_bs)

    # rank 0 alone scores validation, logs and writes checkpoints; the others follow its decisions
    lead = rank == 0
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir and lead else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best = {"epoch": 0, "which": None, "score": math.inf}
    best_state = best_logits = None
    start = 0
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume)
        check_resumable(ckpt["config"], config_dict)
        model.load_state_dict(ckpt["model"])
        if ema is not None and ckpt["ema"] is not None:
            ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        history, best, start = list(ckpt["history"]), dict(ckpt["best"]), int(ckpt["epoch"])
        best_path = Path(cfg.resume).parent / BEST if not Path(cfg.resume).is_dir() else Path(cfg.resume) / BEST
        if best["which"] is not None and lead:
            if not best_path.is_file():
                raise ValueError(f"--resume: the best weights {best_path} are missing")
            best_state = torch.load(best_path, map_location="cpu", weights_only=True)
        log(f"resumed from {cfg.resume}: {start} of {cfg.epochs} epochs done, best so far epoch {best['epoch']} "
            f"({best['which']}, val NLL {best['score']:.4f})")

    val_pixels = decode_all(val_paths, preprocess, workers=cfg.workers) if lead else None
    ds = AugmentedPhotos(train_paths, preprocess, cfg.seed, cfg.max_rotation, cfg.erasing, cfg.trivial_augment)
    # One sampler for one process and for N: a permutation seeded by (seed, epoch), of which
    # process r takes every N-th photo from r; batch k of every process together is then
    # batch k of the single process with the same global batch.
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                                  drop_last=True)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    for epoch in range(start, cfg.epochs):
        if best["epoch"] and epoch - best["epoch"] >= cfg.patience:
            log(f"early stop: no validation improvement for {cfg.patience} epochs")
            break
        t0 = time.perf_counter()
        ds.epoch = epoch
        ds.size = size_for_epoch(epoch, cfg.epochs, preprocess.input_size, cfg.train_size, cfg.final_epochs)
        # dropout, drop-path, MixUp/CutMix draws: per epoch and process
        torch.manual_seed(_item_seed(cfg.seed, epoch, rank, stream=1))
        sampler.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=local_bs, sampler=sampler, drop_last=True, num_workers=cfg.workers,
                            prefetch_factor=2 if cfg.workers else None)
        net.train()
        if bn_mode == "frozen":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        run_loss, seen = 0.0, 0
        for step, (x, idx) in enumerate(loader):
            tgt, w = q[y_t[idx]], sw[idx]
            if mixer is not None:
                x, m = mixer(x, eye)
                tgt, w = m @ tgt, m @ w
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            tgt, w = tgt.to(device), w.to(device)
            if world == 1:
                loss = soft_cross_entropy(net(x), tgt, w)
            else:
                # the global batch's weighted mean: each process's share of sum(w * loss) over the
                # global sum(w), times N because DistributedDataParallel averages the gradients
                total_w = w.sum().detach().clone()
                torch.distributed.all_reduce(total_w)
                loss = soft_cross_entropy(net(x), tgt, w) * (w.sum() / total_w) * world
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            if world > 1:
                loss = loss.detach().clone()
                torch.distributed.all_reduce(loss)
                loss = loss / world
            run_loss += float(loss.detach()) * len(idx) * world
            seen += len(idx) * world
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                el = time.perf_counter() - t0
                log(f"epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps_per_epoch} size {ds.size} "
                    f"loss {run_loss / seen:.4f} lr {sched.get_last_lr()[-1]:.2e} {seen / el:.1f} img/s "
                    f"(epoch ETA {el / (step + 1) * (steps_per_epoch - step - 1) / 60:.1f} min)")
        t_train = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "size": ds.size, "train_loss": run_loss / max(seen, 1),
               "train_img_per_s": seen / t_train}
        candidates = {"model": model} | ({"ema": ema.module} if ema is not None else {})
        if not lead:  # rank 0's decision: the best epoch so far (early stopping)
            got = [None]
            torch.distributed.broadcast_object_list(got, src=0)
            best = got[0]
            continue
        for which, scored in candidates.items():
            lg = logits_of(scored, val_pixels, preprocess)
            p1 = average_view_probs(lg[:, None])
            t = fit_temperature(lg[:, None], y_val)
            pt = average_view_probs(lg[:, None], t)
            row |= {f"{which}_val_acc": accuracy(p1, y_val), f"{which}_val_nll": nll(p1, y_val),
                    f"{which}_val_nll_ts": nll(pt, y_val), f"{which}_temperature": float(t)}
            # selection: validation NLL after temperature scaling, which is what the
            # bundle's calibrated posteriors will have (label smoothing biases raw NLL)
            if row[f"{which}_val_nll_ts"] < best["score"]:
                best = {"epoch": epoch + 1, "which": which, "score": row[f"{which}_val_nll_ts"]}
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in scored.state_dict().items()})
                best_logits = lg
                if ckpt_dir is not None:
                    _atomic_save(best_state, ckpt_dir / BEST)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        log(f"epoch {epoch + 1}/{cfg.epochs} done in {row['seconds'] / 60:.1f} min (size {ds.size}, "
            f"{row['train_img_per_s']:.1f} img/s): train loss {row['train_loss']:.4f}; val "
            + "; ".join(f"{w} top-1 {row[f'{w}_val_acc']:.4f} NLL {row[f'{w}_val_nll']:.4f} "
                        f"(T-fitted {row[f'{w}_val_nll_ts']:.4f})" for w in candidates)
            + f"; best epoch {best['epoch']} {best['which']}")
        if ckpt_dir is not None:
            save_checkpoint(ckpt_dir / LAST, epoch=epoch + 1, config=config_dict, model=model, ema=ema,
                            optimizer=opt, scheduler=sched, history=history, best=best)
        if world > 1:
            torch.distributed.broadcast_object_list([best], src=0)
    if bn_mode == "sync":
        revert_sync_batchnorm(model)
    if best_state is not None:
        model.load_state_dict(best_state)
        log(f"selected epoch {best['epoch']} ({best['which']}) by validation NLL {best['score']:.4f}")
    return history, best, best_logits
