"""Compare model bundles on the VALIDATION split only (never test): flat and DARTS numbers.

For each bundle: validation posteriors from the image files with the bundle's own
TTA angles and temperature (exactly as ``predict.py`` computes them), top-1, NLL and
ECE; then DARTS fitted on the bundle's stored calibration posteriors and applied to
the validation posteriors at the given accuracy target(s): achieved accuracy, mean
normalised information gain, leaf and root shares. The validation ids come from each
bundle's ``split.json``; bundles of different splits are refused.

    python bench/experiments/compare_validation.py --data ../shared/data/clothing \\
        --bundles models/bundles/clothing /work/runs/full_ft/bundle --out /work/runs/full_ft/compare_validation.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv=None) -> int:
    import torch

    from hedged.hedging import Darts
    from hedged.hedging.metrics import hierarchical_accuracy, information_gain, leaf_share
    from hedged.models.bundle import load_bundle
    from hedged.models.calibration import accuracy, expected_calibration_error, nll
    from hedged.models.data import load_dataset
    from hedged.models.inference import predict_logits
    from hedged.models.tta import average_view_probs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/clothing")
    p.add_argument("--bundles", nargs="+", required=True)
    p.add_argument("--targets", type=float, nargs="+", default=[0.95])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_dataset(args.data)
    by_id = {str(i): k for k, i in enumerate(data.ids)}
    rows, val_ids = [], None
    for path in args.bundles:
        b = load_bundle(path)
        ids = [str(i) for i in b.split["validation"]]
        if val_ids is not None and ids != val_ids:
            print(f"error: {path} has another validation split than {args.bundles[0]}", file=sys.stderr)
            return 2
        val_ids = ids
        idx = np.array([by_id[i] for i in ids])
        y = b.taxonomy.resolve_labels(data.labels[idx])
        logits = predict_logits(b.model, data.paths[idx], b.preprocess, b.tta_angles)
        probs = average_view_probs(logits, b.temperature)
        row = {"bundle": str(path), "n": int(len(y)), "tta_angles": list(b.tta_angles), "temperature": b.temperature,
               "val_top1": accuracy(probs, y), "val_nll": nll(probs, y), "val_ece": expected_calibration_error(probs, y)}
        rule = Darts(b.taxonomy).fit(b.calibration_probs, b.calibration_labels)
        for t in args.targets:
            pred = rule.predict(probs, accuracy=t)
            row[f"darts@{t}"] = {
                "accuracy": float(hierarchical_accuracy(b.taxonomy, pred, y)),
                "mean_normalised_info_gain": float(information_gain(b.taxonomy, pred, y, normalize=True).mean()),
                "leaf_share": float(leaf_share(b.taxonomy, pred)),
                "root_share": float(np.mean(np.asarray(pred) == b.taxonomy.root)),
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
