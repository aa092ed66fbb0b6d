#!/usr/bin/env python3
"""Which backbone and input size to fine-tune: a frozen-feature linear probe.

For each ``arch@size`` (or ``a@s+b@t``: the two feature vectors side by side, a
probe of a two-backbone ensemble) it computes the ImageNet backbone's pooled features of every
labelled photo (centre square crop, bicubic, as the model's :class:`models.Preprocess`
does), then fits a standardised multinomial logistic regression and reports

* ``val``: trained on the train split, scored on the validation split;
* ``gkf``: mean accuracy of group 5-fold cross-validation over train + validation,
  grouped by contributor.

The splits are the ones of an existing bundle's ``split.json`` (default: the shipped
clothing model) so the calibration and test photos are never looked at: the choice
of backbone cannot leak the test set. Features are cached in ``--cache`` if given.

    python bench/backbone_probe.py --data ../shared/data/clothing \\
        --configs efficientnet_lite0@224 efficientnet_lite0@300 efficientnet_lite1@280 efficientnet_lite2@300 \\
        --out bench/results/backbone_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hedged.models.data import load_dataset  # noqa: E402
from hedged.models.registry import create_model, get_spec  # noqa: E402
from hedged.taxonomy import Taxonomy  # noqa: E402


class _Images(Dataset):
    def __init__(self, paths, preprocess):
        self.paths, self.pre = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.pre(self.paths[i])


@torch.inference_mode()
def features(arch: str, size: int, paths, progress) -> np.ndarray:
    pre = get_spec(arch).preprocess(input_size=size, resize="center_crop", crop_pct=1.0, interpolation="bicubic")
    model = create_model(arch, num_classes=1000, weights="imagenet").eval()
    task = progress.add_task(f"{arch}@{size}", total=len(paths))
    out = []
    for x in DataLoader(_Images(paths, pre), batch_size=32, num_workers=1):
        out.append(model.forward_features(x.contiguous(memory_format=torch.channels_last)).float().numpy())
        progress.advance(task, len(x))
    return np.concatenate(out)


def _cached_features(cfg: str, paths, cache_dir, progress) -> np.ndarray:
    arch, size = cfg.split("@")
    cache = Path(cache_dir) / f"{arch}_{size}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    F = features(arch, int(size), paths, progress)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, F)
    return F


def probe(F, y, train, val, groups, c: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(idx):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(F[idx], y[idx])

    val_acc = float(np.mean(fit(train).predict(F[val]) == y[val]))
    both = np.concatenate([train, val])
    folds = []
    for a, b in GroupKFold(5).split(both, groups=groups[both]):
        folds.append(float(np.mean(fit(both[a]).predict(F[both[b]]) == y[both[b]])))
    return {"val": val_acc, "gkf_mean": float(np.mean(folds)), "gkf_folds": folds}


def main(argv=None) -> int:
    from rich.progress import Progress

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "clothing"))
    p.add_argument("--taxonomy", default=str(REPO / "taxonomies" / "clothing.yaml"))
    p.add_argument("--split", default=str(REPO / "models" / "bundles" / "clothing" / "split.json"))
    p.add_argument("--configs", nargs="+", default=["efficientnet_lite0@224", "efficientnet_lite1@280"])
    p.add_argument("--C", type=float, default=0.05, help="inverse L2 strength of the logistic regression")
    p.add_argument("--cache", default=None, help="folder for the feature arrays")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    data = load_dataset(args.data, group_column="sender_id")
    y = Taxonomy.from_yaml(args.taxonomy).resolve_labels(data.labels, missing="drop")
    pos = {x: i for i, x in enumerate(data.ids)}
    split = {k: np.array([pos[i] for i in v]) for k, v in json.loads(Path(args.split).read_text()).items()}
    results = []
    with Progress() as progress:
        for cfg in args.configs:
            t0 = time.perf_counter()
            F = np.hstack([_cached_features(part, data.paths, args.cache, progress) for part in cfg.split("+")])
            r = {"config": cfg, "feature_seconds": round(time.perf_counter() - t0, 1),
                 **probe(F, y, split["train"], split["validation"], data.groups, args.C)}
            progress.console.print(f"{cfg:24s} val {r['val']:.3f}   group 5-fold (train+val) {r['gkf_mean']:.3f}")
            results.append(r)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "C": args.C, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
