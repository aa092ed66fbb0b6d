"""Fine-tuning on 2 CPU cores: cache the frozen front of the network, train the tail.

The first blocks of an ImageNet EfficientNet-Lite are generic edge/texture
detectors and cost ~93% of a forward pass; the last blocks plus the head cost ~7%.
So the frozen front runs exactly once per (augmented) view and its output
(``C x 14 x 14`` at 224 px, stored as fp16) is cached; training then runs only the
tail on those maps, many epochs for the price of about one full pass. Augmentation
(random resized crops, flips, rotations, colour jitter) is applied to the images
before caching, ``aug_views`` independent draws per training image; each epoch
picks one of them per image at random.

The validation split is cached unrotated for early stopping only. Every posterior
the bundle reports or stores (validation for choosing the TTA set and the
temperature, calibration, test) is computed afterwards by :func:`models.predict_logits`
on the finished fp16-rounded model, i.e. exactly as ``predict.py`` computes it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from torch import nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hedged.models.config import TrainConfig  # noqa: F401  (re-exported: train's argument)
from hedged.models.calibration import T_BOUNDS, accuracy, expected_calibration_error, fit_temperature, nll
from hedged.models.data import DEFAULT_FRACTIONS, SPLITS, check_fractions, load_dataset, split_by_group
from hedged.models.inference import predict_logits
from hedged.models.preprocess import Preprocess
from hedged.models.registry import create_model, get_spec
from hedged.models.tta import average_view_probs, rotate, rotate_views

#: TTA candidate sets compared on validation when ``tta="auto"``.
TTA_CANDIDATES = ((0.0,), (0.0, -15.0, 15.0))


# ---------------------------------------------------------------------------
# data


class _Views(Dataset):
    """(image index, view) -> normalised tensor; view 0 is the plain preprocessed image."""

    def __init__(self, paths, preprocess: Preprocess, aug_views: int, max_rotation: float, seed: int):
        self.paths, self.pre, self.aug_views = paths, preprocess, aug_views
        self.max_rotation, self.seed = max_rotation, seed
        s = preprocess.input_size
        self.crop = T.RandomResizedCrop(s, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)
        self.jitter = T.ColorJitter(0.25, 0.25, 0.25, 0.02)

    def __len__(self):
        return len(self.paths) * self.aug_views

    def __getitem__(self, k):
        i, v = divmod(k, self.aug_views)
        if v == 0:
            return self.pre(self.paths[i])
        # per-item seed: the cache is reproducible whatever the worker count
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        im = self.jitter(self.crop(self.pre.load(self.paths[i])))
        if torch.rand(1, generator=g) < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = self.pre.normalize(torch.from_numpy(np.asarray(im).copy())).permute(2, 0, 1)
        angle = float((torch.rand(1, generator=g) * 2 - 1) * self.max_rotation)
        return rotate(x[None], angle)[0]


class _Plain(Dataset):
    def __init__(self, paths, preprocess: Preprocess):
        self.paths, self.pre = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.pre(self.paths[i])


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), disable=not enabled,
    )


class FrozenFront(nn.Module):
    """Stem + the first ``cut`` blocks of an EfficientNet-Lite (inference only)."""

    def __init__(self, model: nn.Module, cut: int):
        super().__init__()
        self.model, self.cut = model, cut

    def forward(self, x):
        x = self.model.stem(x)
        for block in self.model._blocks[: self.cut]:
            x = block(x)
        return x


class Tail(nn.Module):
    """Blocks ``cut:`` + head + classifier of an EfficientNet-Lite, fed cached maps."""

    def __init__(self, model: nn.Module, cut: int):
        super().__init__()
        self.model, self.cut = model, cut

    def forward(self, x):
        m = self.model
        return m._fc(m._dropout(m.forward_features(x, start_block=self.cut, stem=False)))


@torch.inference_mode()
def _cache(front, loader, n_items, shape, bar, description, angles=None):
    """Run the frozen front over a loader; angles=None: one map per item, else (N, k, ...)."""
    k = 1 if angles is None else len(angles)
    device = next(front.parameters()).device
    out = np.empty((n_items, k, *shape), dtype=np.float16)
    task = bar.add_task(description, total=n_items)
    pos = 0
    for x in loader:
        b = x.shape[0]
        if angles is not None:
            x = rotate_views(x, angles)
        y = front(x.to(device).contiguous(memory_format=torch.channels_last)).to(torch.float16)
        y = y.reshape(k, b, *shape).transpose(0, 1).contiguous()
        out[pos : pos + b] = y.cpu().numpy()
        pos += b
        bar.advance(task, b)
    return out


def _cache_key(cfg: TrainConfig, preprocess: Preprocess, cut: int, what: str, ids) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([cfg.arch, preprocess.to_dict(), cut, cfg.aug_views, cfg.seed, cfg.max_rotation, what]).encode())
    h.update("\n".join(map(str, ids)).encode())
    return h.hexdigest()[:16]


def _cached(cfg, key, compute):
    if not cfg.cache_dir:
        return compute()
    path = Path(cfg.cache_dir) / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode=None)
    arr = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr


# ---------------------------------------------------------------------------
# training


def _fp16_summary(before, after, labels, log) -> dict:
    """What casting the shipped weights to fp16 changed on validation (logged and stored)."""
    check = {
        "validation_top1_fp32": float(np.mean(before.argmax(1) == labels)),
        "validation_top1_fp16": float(np.mean(after.argmax(1) == labels)),
        "max_abs_logit_change": float(np.abs(before - after).max()),
    }
    log(f"fp16 weights: validation top-1 {check['validation_top1_fp32']:.4f} -> "
        f"{check['validation_top1_fp16']:.4f}, max logit change {check['max_abs_logit_change']:.4f}")
    return check


@torch.inference_mode()
def _tail_logits(tail, feats: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, k, C, H, W) fp16 maps -> (N, k, L) float32 logits."""
    tail.eval()
    device = next(tail.parameters()).device
    n, k = feats.shape[:2]
    flat = feats.reshape(n * k, *feats.shape[2:])
    out = []
    for s in range(0, len(flat), batch):
        x = torch.from_numpy(flat[s : s + batch]).to(device).float().contiguous(memory_format=torch.channels_last)
        out.append(tail(x).float().cpu())
    return torch.cat(out).reshape(n, k, -1).numpy()


def sample_weights(y, n_classes: int, class_power: float = 0.5, groups=None, group_power: float = 0.0) -> np.ndarray:
    """Per-sample loss weights ``count(class)^-class_power * size(group)^-group_power``, mean 1.

    Parameters
    ----------
    y : int array (N,)
        Class of each training sample.
    n_classes : int
    class_power : float
        0: classes as they come; 1: every class weighs the same in total.
    groups : array (N,), optional
        Group (contributor) of each sample.
    group_power : float
        0: off; 1: every group weighs the same in total. A few contributors own most
        training photos; down-weighting them keeps the model from learning their
        floors and lighting instead of the garments.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 weights with mean 1, so the learning rate keeps its meaning.

    Examples
    --------
    >>> sample_weights(np.array([0, 0, 1]), 2, class_power=0.0, groups=np.array(["a", "a", "b"]), group_power=1.0)
    array([0.75, 0.75, 1.5 ])
    """
    y = np.asarray(y)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.maximum(counts, 1.0)[y] ** -class_power
    if groups is not None and group_power > 0:
        _, inv, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
        w = w * sizes[inv].astype(np.float64) ** -group_power
    return w / w.mean()


def _fit_tail(cfg, tail, train_feats, y_train, val_feats, y_val, n_leaves, bar, groups=None, soft=None,
              weight_scale=None):
    rng = np.random.default_rng(cfg.seed)
    device = next(tail.parameters()).device
    w = sample_weights(y_train, n_leaves, cfg.class_weight_power, groups, cfg.contributor_power)
    if weight_scale is not None:
        w = w * weight_scale
    sample_w = torch.tensor(w, dtype=torch.float32, device=device)
    crit = nn.CrossEntropyLoss(reduction="none", label_smoothing=cfg.label_smoothing)
    soft_t = None if soft is None else torch.as_tensor(soft, dtype=torch.float32, device=device)
    alpha = float(cfg.distill_weight)

    def loss_of(out, target, idx):
        sw = sample_w[idx]
        per = crit(out, target)
        if soft_t is not None:
            # knowledge distillation: the teachers' posteriors as soft targets, beside the label
            kd = -(soft_t[idx] * torch.log_softmax(out, dim=1)).sum(dim=1)
            per = (1.0 - alpha) * per + alpha * kd
        return (per * sw).sum() / sw.sum()

    head = set(map(id, tail.model._fc.parameters()))
    param_groups = [
        {"params": [p for p in tail.parameters() if p.requires_grad and id(p) not in head], "lr": cfg.lr * cfg.block_lr_scale},
        {"params": list(tail.model._fc.parameters()), "lr": cfg.lr},
    ]
    opt = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(y_train) / cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(steps_per_epoch, total // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    best = (math.inf, None, -1)
    history = []
    task = bar.add_task("training tail", total=cfg.epochs)
    yt = torch.from_numpy(y_train).to(device)
    for epoch in range(cfg.epochs):
        tail.train()
        order = rng.permutation(len(y_train))
        views = rng.integers(0, train_feats.shape[1], size=len(y_train))
        run_loss = 0.0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            x = torch.from_numpy(train_feats[idx, views[idx]]).to(device).float()
            x = x.contiguous(memory_format=torch.channels_last)
            ti = torch.from_numpy(idx).to(device)
            if cfg.mixup > 0:
                lam = float(rng.beta(cfg.mixup, cfg.mixup))
                perm = torch.from_numpy(rng.permutation(len(idx)))
                out = tail(lam * x + (1 - lam) * x[perm.to(device)])
                loss = lam * loss_of(out, yt[ti], ti) + (1 - lam) * loss_of(out, yt[ti[perm]], ti[perm])
            else:
                loss = loss_of(tail(x), yt[ti], ti)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += float(loss.detach()) * len(idx)
        val_logits = _tail_logits(tail, val_feats[:, :1])
        vp = average_view_probs(val_logits)
        v_nll, v_acc = nll(vp, y_val), accuracy(vp, y_val)
        history.append({"epoch": epoch + 1, "train_loss": run_loss / len(y_train), "val_nll": v_nll, "val_acc": v_acc})
        bar.update(task, advance=1, description=f"training tail (val acc {v_acc:.3f}, nll {v_nll:.3f})")
        cfg.log(f"epoch {epoch + 1:2d}  train loss {run_loss / len(y_train):.4f}  val acc {v_acc:.4f}  val nll {v_nll:.4f}")
        # early stopping on validation NLL: a proper score, and what calibration needs
        if v_nll < best[0]:
            best = (v_nll, copy.deepcopy(tail.state_dict()), epoch + 1)
        elif epoch + 1 - best[2] >= cfg.patience:
            cfg.log(f"early stop: no validation NLL improvement for {cfg.patience} epochs")
            break
    if best[1] is not None:
        tail.load_state_dict(best[1])
    return history, best[2]


def _scores(view_logits, y, angles_idx, t):
    p = average_view_probs(view_logits[:, angles_idx], t)
    return {"accuracy": accuracy(p, y), "nll": nll(p, y), "ece": expected_calibration_error(p, y)}, p


#: Fewer validation photos than this cannot choose a temperature and a TTA set reliably.
MIN_VALIDATION = 30


def degenerate_run_warnings(leaves, y_train, n_validation: int) -> list[str]:
    """Plain-language warnings for a split that will give a poor bundle.

    Parameters
    ----------
    leaves : sequence of str
        The taxonomy's leaves (column order).
    y_train : array of int
        Leaf index of every training photo.
    n_validation : int
        Photos in the validation split.
    """
    out = []
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=len(leaves))
    empty = [leaves[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        out.append(f"{len(empty)} of {len(leaves)} leaves have no training photos ({shown}): "
                   "the model cannot learn them")
    if n_validation < MIN_VALIDATION:
        out.append(f"the validation split has only {n_validation} photos (fewer than {MIN_VALIDATION}): "
                   "early stopping, temperature and TTA choice rest on very little")
    return out


def temperature_warning(temperature: float, bounds=T_BOUNDS) -> str | None:
    """A warning when the fitted temperature sits at an end of its search range (the search hit its limit)."""
    lo, hi = bounds
    if temperature <= lo * 1.01 or temperature >= hi * 0.99:
        return (f"the temperature {temperature:.3g} sits at the end of its range [{lo:g}, {hi:g}]: "
                "the model's confidence is far off; check the data and the validation split")
    return None


def _train_cached(cfg, model, front, shape, cut, preprocess, data, split, ids, ys, taxonomy, log):
    """The cached-front recipe: cache the frozen front's maps, train the tail on them."""
    def loader(ds):
        return DataLoader(ds, batch_size=8, shuffle=False, num_workers=cfg.workers,
                          persistent_workers=False, prefetch_factor=4 if cfg.workers else None)

    feats = {}
    t_cache = time.perf_counter()
    with _progress(cfg.progress) as bar:
        tr = split["train"]
        key = _cache_key(cfg, preprocess, cut, "train", ids["train"])
        feats["train"] = _cached(cfg, key, lambda: _cache(
            front, loader(_Views(data.paths[tr], preprocess, cfg.aug_views, cfg.max_rotation, cfg.seed)),
            len(tr) * cfg.aug_views, shape, bar, f"caching train views x{cfg.aug_views}",
        ).reshape(len(tr), cfg.aug_views, *shape))
        # validation drives early stopping, unrotated; the reported posteriors of every
        # evaluation split come from the finished model below, not from this cache
        va = split["validation"]
        key = _cache_key(cfg, preprocess, cut, "validation(0.0,)", ids["validation"])
        feats["validation"] = _cached(cfg, key, lambda: _cache(
            front, loader(_Plain(data.paths[va], preprocess)), len(va), shape, bar,
            "caching validation", angles=(0.0,)))
    t_cache = time.perf_counter() - t_cache
    log(f"feature cache ready in {t_cache:.0f}s (maps {shape}, block {cut})")

    # only the tail learns; everything before the cut is fixed by construction
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*model._blocks[cut:].parameters(), *model._conv_head.parameters(), *model._bn1.parameters(),
              *model._fc.parameters()]:
        p.requires_grad_(True)
    if cfg.dropout is not None:
        model._dropout.p = cfg.dropout
    tail = Tail(model, cut)
    soft = None
    if cfg.teacher_bundles:
        soft = _teacher_probs(cfg, data.paths[split["train"]], ids["train"], taxonomy, log)
    scale = None
    if cfg.suspect_ids:
        # suspected label mistakes (e.g. from confident learning): down-weighted, not dropped,
        # so the feature cache of the training photos stays valid
        suspects = set(map(str, cfg.suspect_ids))
        hit = np.isin(ids["train"].astype(str), list(suspects))
        scale = np.where(hit, cfg.suspect_weight, 1.0)
        log(f"{int(hit.sum())} suspected label mistakes among the training photos weighted {cfg.suspect_weight:g}")
    t_fit = time.perf_counter()
    with _progress(cfg.progress) as bar:
        history, best_epoch = _fit_tail(cfg, tail, feats["train"], ys["train"], feats["validation"],
                                        ys["validation"], taxonomy.n_leaves, bar, groups=data.groups[split["train"]],
                                        soft=soft, weight_scale=scale)
    t_fit = time.perf_counter() - t_fit
    model.eval()
    fp16_check = None
    if cfg.half:
        # evaluate exactly what is shipped: fp16-rounded weights; record what the cast changed
        before = _tail_logits(tail, feats["validation"])[:, 0]
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.copy_(v.half().float())
        after = _tail_logits(tail, feats["validation"])[:, 0]
        fp16_check = _fp16_summary(before, after, ys["validation"], log)

    return history, best_epoch, fp16_check, t_cache, t_fit


def _ensemble_of(cfg, data, split, taxonomy, log):
    """The members' networks as one :class:`~hedged.models.ensemble.EnsembleNet` (logits averaged,
    each divided by its own temperature), with the first member's preprocessing.

    Every member must have been trained on this run's training photos (its split.json), so that
    validation, calibration and test stay unseen by the ensemble.
    """
    from hedged.models.bundle import load_bundle
    from hedged.models.ensemble import EnsembleNet, ensemble_arch

    train_ids = sorted(map(str, data.ids[split["train"]]))
    bundles = [load_bundle(p) for p in cfg.members]
    for path, b in zip(cfg.members, bundles):
        if list(b.taxonomy.leaves) != list(taxonomy.leaves):
            raise ValueError(f"member {path} has other leaves than the taxonomy")
        if b.runtime != "torch":
            raise ValueError(f"member {path} is an exported ({b.runtime}) bundle; use its torch source")
        if b.split is None or sorted(map(str, b.split.get("train", []))) != train_ids:
            raise ValueError(f"member {path} was trained on other photos than this split's train split")
        if b.preprocess.input_size != bundles[0].preprocess.input_size:
            log(f"member {path} was trained at {b.preprocess.input_size} px; the ensemble feeds it "
                f"{bundles[0].preprocess.input_size} px like the first member")
    model = EnsembleNet.from_members([b.model.float() for b in bundles], [b.temperature for b in bundles])
    with torch.no_grad():  # score exactly what is shipped: the fp16-rounded weights
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    arch = ensemble_arch([b.arch for b in bundles])
    log(f"ensemble of {len(bundles)} members ({arch}), logits averaged at the members' temperatures "
        + ", ".join(f"{b.temperature:.3f}" for b in bundles))
    return model.to(cfg.device).eval(), bundles[0].preprocess, arch


def _teacher_probs(cfg, paths, ids, taxonomy, log) -> np.ndarray:
    """The teachers' mean calibrated posteriors (their own preprocessing, TTA and temperature) of ``paths``.

    Each teacher is a bundle with the same taxonomy; cached in ``cfg.cache_dir``.
    """
    from hedged.models.bundle import load_bundle

    out = []
    for path in cfg.teacher_bundles:
        b = load_bundle(path)
        if list(b.taxonomy.leaves) != list(taxonomy.leaves):
            raise ValueError(f"teacher {path} has other leaves than the taxonomy being trained")
        key = _cache_key(cfg, b.preprocess, -1, f"teacher:{b.manifest['files'].get('weights.pt')}:{b.tta_angles}", ids)

        def compute(b=b, path=path):
            log(f"teacher {path}: posteriors of {len(paths)} training photos x {len(b.tta_angles)} views")
            logits = predict_logits(b.model.eval(), paths, b.preprocess, b.tta_angles, progress=cfg.progress)
            return average_view_probs(logits, b.temperature).astype(np.float32)

        out.append(_cached(cfg, key, compute))
    return np.mean(out, axis=0)


def _train_full(cfg, model, preprocess, data, split, ys, taxonomy, log):
    """Every block trains on fresh augmentation each epoch (:mod:`hedged.models.finetune`)."""
    from hedged.models.finetune import fit_full, logits_of, decode_all, soft_target_matrix

    if cfg.init_bundle:
        held_out = [i for name in SPLITS[1:] for i in data.ids[split[name]].tolist()]
        _init_from_bundle(model, cfg.init_bundle, cfg.arch, taxonomy, log, held_out)
    if cfg.dropout is not None:
        model._dropout.p = cfg.dropout
    if cfg.drop_path is not None:
        for i, block in enumerate(model._blocks):
            block.drop_prob = cfg.drop_path * i / len(model._blocks)
    targets = soft_target_matrix(taxonomy, label_smoothing=cfg.label_smoothing, hierarchy_beta=cfg.hierarchy_beta)
    tr, va = split["train"], split["validation"]
    t_fit = time.perf_counter()
    history, best, before = fit_full(cfg, model, data.paths[tr], ys["train"], data.groups[tr], data.paths[va],
                                     ys["validation"], targets, preprocess, log, _config_dict(cfg))
    t_fit = time.perf_counter() - t_fit
    model.eval()
    fp16_check = None
    if cfg.half:
        if before is None:  # the best epoch was scored before a --resume
            before = logits_of(model, decode_all(data.paths[va], preprocess, workers=cfg.workers), preprocess)
        with torch.no_grad():
            for v in model.state_dict().values():
                if v.is_floating_point():
                    v.copy_(v.half().float())
        # the "after" side is the validation scoring train() runs next (angle 0): one pass saved
        fp16_check = {"before": before}
    return history, best["epoch"], fp16_check, 0.0, t_fit


def _init_from_bundle(model, path, arch, taxonomy, log, held_out=()):
    """Start from a bundle's weights (same architecture and leaves), e.g. the cached-front model.

    The bundle must not have trained on any of ``held_out`` (this run's validation,
    calibration and test ids): its weights would carry those photos' labels into the
    selection and calibration.
    """
    from hedged.models.bundle import load_bundle

    b = load_bundle(path)
    if b.arch != arch:
        raise ValueError(f"--init-bundle {path} is a {b.arch}, not a {arch}")
    if tuple(b.taxonomy.leaves) != tuple(taxonomy.leaves):
        raise ValueError(f"--init-bundle {path} has other leaves than {taxonomy.root!r}'s taxonomy")
    if b.split is None or "train" not in b.split:
        raise ValueError(f"--init-bundle {path} records no training split; cannot check it never saw held-out photos")
    leaked = set(map(str, b.split["train"])) & set(map(str, held_out))
    if leaked:
        raise ValueError(f"--init-bundle {path} was trained on {len(leaked)} photos of this run's "
                         "validation/calibration/test splits")
    device = next(model.parameters()).device
    model.load_state_dict({k: v.float() for k, v in b.model.state_dict().items()})
    model.to(device)
    log(f"initialised from the bundle {path}")


def _config_dict(cfg) -> dict:
    """The config as plain values (checkpoints and provenance)."""
    d = {k: v for k, v in asdict(cfg).items() if k != "log"}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class _FileLog:
    """``log(msg)``: print (unless quiet) and append a timestamped line to a file, flushed at once."""

    def __init__(self, path, echo):
        self.path, self.echo = Path(path), echo
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} UTC  {msg}\n")
        if self.echo is not None:
            self.echo(msg)


def train(cfg: TrainConfig) -> dict:
    """Fine-tune, calibrate and write a model bundle; returns a summary dict.

    See :class:`TrainConfig` for the options and the module docstring for the method.
    Under ``torchrun`` (the full fine-tune only) every process trains its part of each
    global batch (DistributedDataParallel); rank 0 logs, checkpoints, scores and writes
    the bundle, and the other processes return ``{"rank", "world_size", "best_epoch"}``.
    """
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    rank, world, started = start_distributed(cfg)
    if world > 1:
        if not cfg.full_finetune or cfg.members:
            raise ValueError("under torchrun only the full fine-tune runs (add --full-finetune); the cached "
                             "recipe trains a small tail in one process")
        if str(cfg.device).startswith("cuda"):
            cfg = dataclasses.replace(cfg, device=f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}")
        if rank != 0:  # rank 0 logs, checkpoints and writes the bundle
            cfg = dataclasses.replace(cfg, log=lambda message: None, log_file=None, progress=False)
    try:
        result = _train(cfg, t0, rank, world)
    finally:
        if started:
            torch.distributed.destroy_process_group()
    return result


def start_distributed(cfg) -> tuple[int, int, bool]:
    """Join the torchrun process group when there is one (``WORLD_SIZE`` > 1).

    gloo on CPUs, nccl on CUDA. Returns ``(rank, world size, started here)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed: run one process")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    cuda = str(cfg.device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _train(cfg: TrainConfig, t0: float, rank: int, world: int) -> dict:
    from hedged.models.bundle import hash_groups, library_versions, save_bundle
    from hedged.taxonomy import Taxonomy

    log = cfg.log
    if cfg.log_file:
        log = cfg.log = _FileLog(cfg.log_file, cfg.log)
    fractions = check_fractions(cfg.fractions)

    taxonomy = Taxonomy.from_yaml(cfg.taxonomy)
    data = load_dataset(cfg.data, cfg.image_column, cfg.label_column, cfg.group_column)
    y_all = taxonomy.resolve_labels(data.labels, missing="drop")
    dropped = Counter(data.labels[y_all < 0].tolist())
    log(f"{len(data)} images in {data.source}; dropped {sum(dropped.values())} whose label is no leaf: "
        + (", ".join(f"{k!r}: {v}" for k, v in dropped.most_common()) or "none"))
    keep = np.flatnonzero(y_all >= 0)
    if cfg.limit is not None and cfg.limit < len(keep):
        keep = np.sort(np.random.default_rng(cfg.seed).choice(keep, cfg.limit, replace=False))
        log(f"--limit: using {len(keep)} images")
    data, y_all = data.subset(keep), y_all[keep]
    data, y_all, duplicate_check = _respect_duplicates(cfg, data, y_all, log)
    split = split_by_group(data.groups, fractions, cfg.split_seed, labels=y_all if cfg.stratify else None,
                           heldout_max_size=cfg.heldout_max_size)
    counts = {s: int(len(v)) for s, v in split.items()}
    for message in degenerate_run_warnings(taxonomy.leaves, y_all[split["train"]], len(split["validation"])):
        warnings.warn(message, stacklevel=2)
    log("split by " + (data.group_column or "image") + ": " + ", ".join(
        f"{s} {len(v)} images / {len(set(data.groups[v]))} groups" for s, v in split.items()))

    if cfg.members:
        model, preprocess, arch = _ensemble_of(cfg, data, split, taxonomy, log)
        cut = front = shape = None
    else:
        arch = cfg.arch
        spec = get_spec(cfg.arch)
        preprocess = spec.preprocess(
            input_size=cfg.image_size or spec.input_size, resize=cfg.resize, crop_pct=cfg.crop_pct,
            interpolation=cfg.interpolation,
        )
        model = create_model(cfg.arch, num_classes=taxonomy.n_leaves, weights="imagenet")
        if not hasattr(model, "_blocks"):
            raise ValueError(f"train.py fine-tunes EfficientNet-Lite tails; {cfg.arch!r} has no blocks")
        n_blocks = len(model._blocks)
        if not 0 <= cfg.train_blocks <= n_blocks:
            raise ValueError(f"--train-blocks must be in [0, {n_blocks}] for {cfg.arch}, got {cfg.train_blocks}")
        cut = n_blocks - cfg.train_blocks
        model.to(cfg.device)
        front = FrozenFront(model, cut).eval()
        with torch.inference_mode():
            s = preprocess.input_size
            x0 = torch.zeros(1, 3, s, s, device=cfg.device).contiguous(memory_format=torch.channels_last)
            shape = tuple(front(x0).shape[1:])

    if cfg.tta == "auto":
        candidates = TTA_CANDIDATES
    else:
        candidates = (tuple(float(a) for a in cfg.tta),)
    all_angles = tuple(dict.fromkeys(a for c in candidates for a in c))
    if 0.0 not in all_angles:
        all_angles = (0.0, *all_angles)

    ids = {name: data.ids[idx] for name, idx in split.items()}
    ys = {name: y_all[idx] for name, idx in split.items()}
    if cfg.members:
        # nothing to fit: the members are trained; the ensemble is scored and calibrated below
        history, best_epoch, fp16_check, t_cache, t_fit = [], None, None, 0.0, 0.0
    elif cfg.full_finetune:
        history, best_epoch, fp16_check, t_cache, t_fit = _train_full(cfg, model, preprocess, data, split, ys,
                                                                      taxonomy, log)
        if rank != 0:  # the weights are rank 0's too; it scores, calibrates and writes the bundle
            return {"rank": rank, "world_size": world, "best_epoch": best_epoch}
    else:
        history, best_epoch, fp16_check, t_cache, t_fit = _train_cached(cfg, model, front, shape, cut, preprocess,
                                                                        data, split, ids, ys, taxonomy, log)
    # Every reported posterior comes from the finished model run exactly as prediction
    # runs it (decoding, preprocessing, rotated views), not from the fp16 feature cache:
    # the bundle's calibration posteriors are then the ones predict.py will produce.
    t_eval = time.perf_counter()
    logits = {}
    for name in SPLITS[1:]:
        log(f"scoring the {name} split ({len(split[name])} images x {len(all_angles)} angles)")
        logits[name] = predict_logits(model, data.paths[split[name]], preprocess, all_angles,
                                      progress=cfg.progress)
    t_eval = time.perf_counter() - t_eval
    pos = {a: i for i, a in enumerate(all_angles)}
    if isinstance(fp16_check, dict) and "before" in fp16_check:
        fp16_check = _fp16_summary(fp16_check["before"], logits["validation"][:, pos[0.0]],
                                   ys["validation"], log)

    # TTA set and temperature: chosen on validation only
    tta_table = []
    for cand in candidates:
        ai = [pos[a] for a in cand]
        t = fit_temperature(logits["validation"][:, ai], ys["validation"])
        sc, _ = _scores(logits["validation"], ys["validation"], ai, t)
        tta_table.append({"angles": list(cand), "temperature": t, **{f"val_{k}": v for k, v in sc.items()}})
        log(f"TTA {list(cand)}: val acc {sc['accuracy']:.4f}  nll {sc['nll']:.4f}  (T={t:.3f})")
    chosen = min(tta_table, key=lambda r: (round(r["val_nll"], 4), len(r["angles"])))
    angles, temperature = tuple(chosen["angles"]), float(chosen["temperature"])
    if (message := temperature_warning(temperature)) is not None:
        warnings.warn(message, stacklevel=2)
    ai = [pos[a] for a in angles]
    log(f"chosen TTA angles {list(angles)}, temperature {temperature:.3f}")

    # test-set report: with/without TTA, before/after temperature scaling
    test_report = {}
    for label, idx in (("tta", ai), ("no_tta", [pos[0.0]])):
        t_fit_val = fit_temperature(logits["validation"][:, idx], ys["validation"])
        raw, _ = _scores(logits["test"], ys["test"], idx, 1.0)
        cal, _ = _scores(logits["test"], ys["test"], idx, t_fit_val)
        test_report[label] = {"angles": [all_angles[i] for i in idx], "temperature": t_fit_val,
                              "before_ts": raw, "after_ts": cal}
    _, cal_probs = _scores(logits["calibration"], ys["calibration"], ai, temperature)
    _, test_probs = _scores(logits["test"], ys["test"], ai, temperature)

    _, val_probs = _scores(logits["validation"], ys["validation"], ai, temperature)
    # validation numbers, for choosing between bundles without looking at test
    hedging_val = _darts_report(taxonomy, cal_probs, ys["calibration"], val_probs, ys["validation"], log,
                                split="validation")
    hedging = _darts_report(taxonomy, cal_probs, ys["calibration"], test_probs, ys["test"], log)
    elapsed = time.perf_counter() - t0
    metrics = {
        "test": test_report,
        "tta_candidates_validation": tta_table,
        "darts": hedging,
        "darts_validation": hedging_val,
        "history": history,
        "best_epoch": best_epoch,
        "fp16_check": fp16_check,
        "seconds": {"total": elapsed, "cache": t_cache, "fit": t_fit, "evaluate": t_eval},
    }
    cfg_dict = _config_dict(cfg)
    provenance = {
        "data": str(Path(cfg.data).resolve()),
        "source": data.source,
        "sha256": data.sha256,
        "group_column": data.group_column,
        "n_images": int(len(y_all) + sum(dropped.values())) if cfg.limit is None else None,
        "n_used": int(len(y_all)),
        "dropped_labels": dict(dropped),
        "split_counts": counts,
        "duplicate_check": duplicate_check,
        "split_seed": cfg.split_seed,
        "seed": cfg.seed,
        "class_counts": {s: np.bincount(ys[s], minlength=taxonomy.n_leaves).tolist() for s in SPLITS},
        "config": cfg_dict,
        "cut_block": cut,
        "versions": library_versions(),
    }
    save_bundle(
        cfg.out, model=model.cpu(), arch=arch, taxonomy=taxonomy, preprocess=preprocess, tta_angles=angles,
        temperature=temperature, calibration_probs=cal_probs, calibration_labels=ys["calibration"],
        test_probs=test_probs, test_labels=ys["test"], split={k: v.tolist() for k, v in ids.items()},
        metrics=metrics, provenance=provenance, half=cfg.half,
        # Contributors of the calibration photos, anonymised: the contributor-level guarantee needs them.
        calibration_groups=hash_groups(data.groups[split["calibration"]]) if data.group_column else None,
    )
    log(f"bundle written to {cfg.out} in {elapsed:.0f}s total")
    return {"metrics": metrics, "provenance": provenance, "angles": angles, "temperature": temperature,
            "split": split, "data": data, "labels": y_all}


def _respect_duplicates(cfg, data, y_all, log):
    """Join copies of one photo into one group and drop copies with conflicting labels.

    Exact copies (same bytes) and near copies (pHash and dHash both within a few
    bits: re-encodings, resizes) are found with :mod:`hedged.models.duplicates`; their
    contributors' groups are merged so that the split keeps every copy on one side,
    and a duplicate group whose copies carry different labels is left out (unless
    ``keep_conflicts``). Returns the data, labels and a summary for the bundle.
    """
    if not cfg.duplicate_check:
        return data, y_all, {"checked": False}
    from hedged.models.duplicates import STRICT_DHASH, STRICT_PHASH, conflicts, duplicate_pairs, hash_images, merge_groups

    t0 = time.perf_counter()
    h = hash_images(list(data.paths))
    pairs = duplicate_pairs(h)
    bad = conflicts(y_all, pairs)
    groups = np.asarray(data.groups).astype(str)
    cross = int(np.sum(groups[pairs[:, 0]] != groups[pairs[:, 1]])) if len(pairs) else 0
    summary = {
        "checked": True,
        "thresholds": {"phash": STRICT_PHASH, "dhash": STRICT_DHASH},
        "exact_or_near_pairs": int(len(pairs)),
        "pairs_across_contributors": cross,
        "conflicting_groups": [[str(data.ids[i]) for i in g] for g in bad],
        "conflicts_kept": bool(cfg.keep_conflicts),
        "unreadable": [str(data.ids[i]) for i in np.flatnonzero(h.error != "")],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log(f"duplicate check: {len(pairs)} exact or near duplicate pairs ({cross} across contributors), "
        f"{len(bad)} with conflicting labels" + ("" if cfg.keep_conflicts or not bad else " (left out)")
        + f", in {summary['seconds']:.0f}s")
    if data.group_column and len(pairs):
        data.groups = merge_groups(groups, pairs)
    elif len(pairs):
        # no contributor column: each photo is its own group; copies become one group
        data.groups = merge_groups(np.arange(len(groups)).astype(str), pairs)
    if bad and not cfg.keep_conflicts:
        drop = np.zeros(len(y_all), dtype=bool)
        for g in bad:
            drop[g] = True
        keep = np.flatnonzero(~drop)
        data, y_all = data.subset(keep), y_all[keep]
    return data, y_all, summary


def _darts_report(taxonomy, cal_probs, cal_y, test_probs, test_y, log, target: float = 0.95, split: str = "test"):
    try:
        from hedged.hedging import Darts
        from hedged.hedging.metrics import hierarchical_accuracy, information_gain, leaf_share
    except ImportError:
        return None
    try:
        import warnings

        # A tiny calibration set makes the rule warn that it answers the root;
        # that belongs in the training log (and the report's root share), not on stderr.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rule = Darts(taxonomy).fit(cal_probs, cal_y)
            pred = rule.predict(test_probs, accuracy=target)
        for w in dict.fromkeys(str(w.message) for w in caught):
            log(f"DARTS @ {target}: {w}")
        out = {
            "target": target,
            "guarantee": "pac",
            "accuracy": float(hierarchical_accuracy(taxonomy, pred, test_y)),
            # correct answers score their normalised reward, wrong ones 0 (Deng et al.)
            "mean_normalised_info_gain": float(information_gain(taxonomy, pred, test_y, normalize=True).mean()),
            "leaf_share": float(leaf_share(taxonomy, pred)),
            # the issue-12 goal: at most 5 % of answers may be the uninformative root
            "root_share": float(np.mean(np.asarray(pred) == taxonomy.root)),
        }
        log(f"DARTS @ {target}: {split} accuracy {out['accuracy']:.4f}, info gain {out['mean_normalised_info_gain']:.4f}, "
            f"leaf share {out['leaf_share']:.3f}, root share {out['root_share']:.3f}")
        return out
    except Exception as err:  # noqa: BLE001 - the report is optional; training must still produce a bundle
        log(f"DARTS report skipped: {err}")
        return {"error": str(err)}
