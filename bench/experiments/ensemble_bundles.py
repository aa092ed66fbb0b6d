#!/usr/bin/env python3
"""Experiment (not the shipped method): what averaging two bundles' posteriors would score.

Both bundles must share the taxonomy and the split (``split.json``: same image ids,
in the same order). Their stored calibration and test posteriors (each already at
its own temperature and TTA) are averaged with equal weights, fixed before looking
at test: the bundles store no validation posteriors to choose weights on. Reports
flat top-1 and NLL of each bundle and of the average on the test split, and DARTS
at the target accuracy (pac guarantee, fitted on the averaged calibration posteriors).

    python bench/experiments/ensemble_bundles.py models/bundles/clothing /path/to/other_bundle
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hedged.hedging import Darts  # noqa: E402
from hedged.hedging.metrics import hierarchical_accuracy, information_gain  # noqa: E402
from hedged.models.bundle import load_bundle  # noqa: E402
from hedged.models.calibration import accuracy, nll  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs=2)
    p.add_argument("--accuracy", type=float, default=0.95)
    p.add_argument("--out", default=None, help="JSON file for the numbers")
    args = p.parse_args(argv)
    a, b = (load_bundle(x) for x in args.bundles)
    if a.taxonomy.leaves != b.taxonomy.leaves:
        p.error("the bundles' taxonomies have different leaves")
    if not (a.split and b.split) or any(a.split.get(k) != b.split.get(k) for k in ("calibration", "test")):
        p.error("the bundles were not trained on the same split")
    tax, y, cal_y = a.taxonomy, a.test_labels, a.calibration_labels
    rows = {}
    for name, cal, test in (
        (args.bundles[0], a.calibration_probs, a.test_probs),
        (args.bundles[1], b.calibration_probs, b.test_probs),
        ("average", (a.calibration_probs + b.calibration_probs) / 2, (a.test_probs + b.test_probs) / 2),
    ):
        pred = Darts(tax).fit(cal, cal_y).predict(test, accuracy=args.accuracy)
        rows[name] = {
            "top1": accuracy(test, y),
            "nll": nll(test, y),
            f"darts_{args.accuracy:g}_accuracy": float(hierarchical_accuracy(tax, pred, y)),
            f"darts_{args.accuracy:g}_info_gain": float(information_gain(tax, pred, y, normalize=True).mean()),
        }
        print(f"{name:40s} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[name].items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "test_images": len(y), **rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
