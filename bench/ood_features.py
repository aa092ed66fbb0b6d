"""Cache the bundle model's per-view logits and features for the OOD study.

One pass per image (the bundle's TTA views), so the detector can be fitted,
calibrated and evaluated from the cache without running the CNN again::

    python bench/ood_features.py --out /work/runs/ood --splits calibration validation \
        --dirs tests/fixtures/not_clothing/fit tests/fixtures/not_clothing/eval
    python bench/ood_features.py --out /work/runs/ood --splits test unlabelled

Writes ``<out>/<name>.npz`` with ``logits`` (N, k, L), ``features`` (N, k, D) and ``ids``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import time
from pathlib import Path

import numpy as np
import torch

from hedged.models import load_bundle
from hedged.models.inference import predict_logits


def run(bundle, model, paths, out: Path, name: str, ids, angles, chunk: int = 64) -> None:
    """Chunked, and each chunk cached, so an interrupted run resumes where it stopped."""
    dest = out / f"{name}.npz"
    if dest.exists():
        print(f"{name}: cached")
        return
    t0 = time.perf_counter()
    parts = []
    for start in range(0, len(paths), chunk):
        part = out / f".{name}.{start:05d}.npz"
        if not part.exists():
            images = [bundle.preprocess.load(p) for p in paths[start : start + chunk]]
            logits, feats = predict_logits(model, images, bundle.preprocess, angles, return_features=True)
            np.savez(part, logits=logits, features=feats.astype(np.float16))
            print(f"{name}: {start + len(images)}/{len(paths)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        with np.load(part) as z:
            parts.append((z["logits"], z["features"]))
    logits = np.concatenate([p[0] for p in parts])
    feats = np.concatenate([p[1] for p in parts])
    np.savez_compressed(dest, logits=logits, features=feats, ids=np.asarray(ids), angles=np.asarray(angles))
    for start in range(0, len(paths), chunk):
        (out / f".{name}.{start:05d}.npz").unlink()
    print(f"{name}: {len(paths)} images in {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--data", default="../shared/data/clothing")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--splits", nargs="*", default=["calibration", "test", "validation", "unlabelled"])
    ap.add_argument("--dirs", nargs="*", default=[], help="folders of non-clothing images (name = folder name)")
    ap.add_argument("--threads", type=int, default=1, help="1 on a busy machine: idle-spinning threads waste it")
    ap.add_argument("--one-view", nargs="*", default=["validation", "fit"],
                    help="sets scored without TTA (only the 0 degree view): the detector's fitting sets, where "
                         "the calibrated threshold does not depend on the exact signal distribution")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.bundle)
    model = copy.deepcopy(bundle.model).fuse_batchnorm()
    images = Path(args.data) / "images"

    def angles(name):
        return (0.0,) if name in args.one_view else bundle.tta_angles

    for d in args.dirs:
        paths = sorted(p for p in Path(d).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        name = Path(d).name
        run(bundle, model, paths, args.out, name, [p.name for p in paths], angles(name))
    rows = list(csv.DictReader(open(Path(args.data) / "images.csv")))
    for split in args.splits:
        if split == "unlabelled":  # "Other" and "Not sure": hard cases, reported, never targets
            sel = [r for r in rows if r["label"] in ("Other", "Not sure")]
            ids, labels = [r["image"] for r in sel], [r["label"] for r in sel]
            np.save(args.out / "unlabelled_labels.npy", np.asarray(labels))
        else:
            ids = bundle.split[split]
        run(bundle, model, [images / f"{i}.jpg" for i in ids], args.out, split, ids, angles(split))


if __name__ == "__main__":
    main()
