"""Which calibration design buys the most information at a target, with a valid bound? (issue 24)

The held-out contributors of a bundle (its calibration and test splits, never
training or validation) are re-divided many times at random: ``G`` contributors
calibrate DARTS, the others measure what the answers are worth. For each design
(number of calibration contributors, photos each contributor may weigh in the
bound) and guarantee, it reports the mean normalised information gain of the
answers at the target on the held-out contributors, their photo accuracy and capped
accuracy, and the share of root answers.

    python bench/guarantee_design.py --bundle models/bundles/clothing \\
        --data ../shared/data/clothing --reps 200 --out bench/results/guarantee_design.json

Real posteriors and real contributors: the correlation of correctness within a
contributor is the one of this model on these photos, not a simulated one.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hedged.hedging import Darts  # noqa: E402
from hedged.hedging.groups import capped_accuracy  # noqa: E402
from hedged.hedging.metrics import information_gain  # noqa: E402
from hedged.hedging.simulation import icc  # noqa: E402
from hedged.models.bundle import load_bundle  # noqa: E402


def held_out(bundle_dir: Path, data: Path):
    """Posteriors, labels and contributor ids of the bundle's calibration + test photos."""
    b = load_bundle(bundle_dir)
    split = json.loads((bundle_dir / "split.json").read_text())
    sender = {}
    with open(data / "images.csv", newline="") as f:
        for row in csv.DictReader(f):
            sender[row["image"]] = row["sender_id"]
            sender[Path(row["image"]).stem] = row["sender_id"]
    ids = list(split["calibration"]) + list(split["test"])
    g = np.array([sender.get(i, sender.get(Path(i).stem)) for i in ids])
    if any(x is None for x in g):
        raise SystemExit("some held-out photos are not in images.csv")
    p = np.r_[b.calibration_probs, b.test_probs]
    y = np.r_[b.calibration_labels, b.test_labels]
    return b.taxonomy, p, y, g


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("models/bundles/clothing"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--n-cal", type=int, nargs="+", default=[40, 65, 90, 110])
    ap.add_argument("--caps", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    tax, p, y, g = held_out(args.bundle, args.data)
    groups = np.unique(g)
    correct_top1 = p.argmax(1) == y
    print(f"{len(y)} held-out photos from {groups.size} contributors; top-1 {correct_top1.mean():.3f}, "
          f"ICC of top-1 correctness {icc(correct_top1, g):.3f}")
    rng = np.random.default_rng(args.seed)
    designs = [("pac", None)] + [("pac-group", c) for c in args.caps]
    rows = []
    for n_cal in args.n_cal:
        acc = {d: [] for d in designs}
        for _ in range(args.reps):
            cal_groups = rng.choice(groups, n_cal, replace=False)
            is_cal = np.isin(g, cal_groups)
            ev = ~is_cal
            for kind, cap in designs:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rule = Darts(tax, group_cap=cap or 10).fit(p[is_cal], y[is_cal], g[is_cal] if cap else None)
                    pred = rule.predict_index(p[ev], accuracy=args.target)
                right = tax.is_correct(pred, y[ev])
                gain = information_gain(tax, pred, y[ev], normalize=True)
                acc[(kind, cap)].append((float(gain.mean()), float(right.mean()),
                                         capped_accuracy(right, g[ev], cap or 10),
                                         float(np.mean(pred == tax.node_index(tax.root)))))
        for (kind, cap), vals in acc.items():
            v = np.array(vals)
            row = {"n_calibration_contributors": n_cal, "guarantee": kind, "cap": cap,
                   "info_gain": float(v[:, 0].mean()), "info_gain_se": float(v[:, 0].std() / math.sqrt(len(v))),
                   "photo_accuracy": float(v[:, 1].mean()), "capped_accuracy": float(v[:, 2].mean()),
                   "share_photo_accuracy_below_target": float(np.mean(v[:, 1] < args.target)),
                   "root_share": float(v[:, 3].mean())}
            rows.append(row)
            print(f"G={n_cal:4d} {kind:9s} cap={str(cap):4s} gain {row['info_gain']:.3f} "
                  f"photo acc {row['photo_accuracy']:.3f} (below target in {row['share_photo_accuracy_below_target']:.2f}) "
                  f"capped acc {row['capped_accuracy']:.3f} root {row['root_share']:.3f}")
            sys.stdout.flush()
    out = {"bundle": str(args.bundle), "target": args.target, "reps": args.reps, "n_photos": int(len(y)),
           "n_contributors": int(groups.size), "icc_top1": icc(correct_top1, g), "rows": rows,
           "seconds": time.perf_counter() - t0}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
