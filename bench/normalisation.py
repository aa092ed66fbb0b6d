"""Measure which input normalisation / resize policy the EfficientNet-Lite weights expect.

The pretrained ImageNet head is scored on clothing photos whose label maps to a set
of ImageNet classes (Shoes -> {Loafer, running shoe, sandal, clog, cowboy boot}, ...):

* set-NLL: -log of the softmax mass on the label's ImageNet set (lower is better);
* set top-1: share of photos whose arg-max class is in the set.

Both are macro-averaged over labels so the large T-shirt class does not dominate.
The preprocessing the weights were trained with gives the lowest NLL.

    python bench/normalisation.py --data ../shared/data/clothing --per-label 40 --out normalisation.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hedged.models import Preprocess, create_model, get_spec, load_image  # noqa: E402
from hedged.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD  # noqa: E402

# Clothing label -> ImageNet-1k class indices (line numbers of imagenet1k_synsets.txt,
# 0-based). Labels without a clear ImageNet counterpart (Shirt, Top, Body, ...) are left out.
LABEL_TO_IMAGENET = {
    "T-Shirt": (610,),                      # jersey, T-shirt
    "Polo": (610,),
    "Longsleeve": (610, 841),               # jersey, sweatshirt
    "Hoodie": (841,),                       # sweatshirt
    "Pants": (608,),                        # jean
    "Shorts": (842,),                       # swimming trunks
    "Shoes": (630, 770, 774, 502, 514),     # Loafer, running shoe, sandal, clog, cowboy boot
    "Hat": (515, 808, 452),                 # cowboy hat, sombrero, bonnet
    "Skirt": (655, 689, 601, 775),          # miniskirt, overskirt, hoopskirt, sarong
    "Dress": (578, 689, 601, 655),          # gown, overskirt, hoopskirt, miniskirt
    "Outwear": (869, 568, 474, 465, 735),   # trench coat, fur coat, cardigan, bulletproof vest, poncho
    "Blazer": (834,),                       # suit
}

NORMS = {"inception (0.5, 0.5)": (INCEPTION_MEAN, INCEPTION_STD), "imagenet (0.485.., 0.229..)": (IMAGENET_MEAN, IMAGENET_STD)}


def sample(data: Path, per_label: int) -> tuple[list[Path], list[str]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    with open(data / "images.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] in LABEL_TO_IMAGENET:
                by_label[row["label"]].append(row["image"])
    files, labels = [], []
    for label in LABEL_TO_IMAGENET:
        for name in sorted(by_label[label])[:per_label]:  # sorted uuids: a fixed pseudo-random pick
            files.append(data / "images" / f"{name}.jpg")
            labels.append(label)
    return files, labels


def score(model, batches, labels: list[str]) -> dict[str, float]:
    with torch.inference_mode():
        probs = torch.cat([model(b).softmax(1) for b in batches]).numpy()
    nll, hit = defaultdict(list), defaultdict(list)
    for p, label in zip(probs, labels):
        idx = list(LABEL_TO_IMAGENET[label])
        nll[label].append(-np.log(max(p[idx].sum(), 1e-12)))
        hit[label].append(p.argmax() in idx)
    return {
        "set_nll": float(np.mean([np.mean(v) for v in nll.values()])),
        "set_top1": float(np.mean([np.mean(v) for v in hit.values()])),
        "micro_set_top1": float(np.mean([x for v in hit.values() for x in v])),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing")
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--per-label", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--spec-only", action="store_true",
                    help="only the registry's default preprocessing and the same with the other mean/std")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    files, labels = sample(args.data, args.per_label)
    model = create_model(args.arch)
    size = get_spec(args.arch).input_size
    spec = get_spec(args.arch)
    configs = []
    if args.spec_only:  # the registry default, and the same with the other mean/std
        for norm in NORMS:
            configs.append((norm, spec.resize, spec.crop_pct, spec.interpolation, True))
    for norm in NORMS if not args.spec_only else ():
        for resize, crop in (("center_crop", 0.875), ("center_crop", 1.0), ("squash", 1.0), ("pad", 1.0)):
            configs.append((norm, resize, crop, "bilinear", True))
    for norm in NORMS if not args.spec_only else ():
        configs.append((norm, "center_crop", 0.875, "bicubic", True))
        configs.append((norm, "center_crop", 0.875, "bilinear", False))

    rows = []
    for norm, resize, crop, interp, draft in configs:
        mean, std = NORMS[norm]
        pre = Preprocess(size, resize, mean=mean, std=std, crop_pct=crop, interpolation=interp)
        t0 = time.perf_counter()
        batches = []
        for i in range(0, len(files), args.batch_size):
            chunk = files[i : i + args.batch_size]
            if draft:
                batches.append(pre.batch(chunk))
            else:  # full-resolution decode, to check that JPEG draft decoding costs nothing
                batches.append(pre.batch([load_image(f) for f in chunk]))
        res = score(model, batches, labels)
        res.update(norm=norm, resize=resize, crop_pct=crop, interpolation=interp, jpeg_draft=draft,
                   seconds=round(time.perf_counter() - t0, 1))
        rows.append(res)
        print(f"{norm:28s} {resize:11s} crop={crop:<5.3f} {interp:8s} draft={draft!s:5s} "
              f"set-NLL={res['set_nll']:.3f} set-top1={res['set_top1']:.3f} (micro {res['micro_set_top1']:.3f})",
              flush=True)
    summary = {"arch": args.arch, "n_images": len(files), "labels": {k: list(v) for k, v in LABEL_TO_IMAGENET.items()},
               "results": rows}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
