"""Members, their average and a distilled student, side by side on the validation split (issue 19).

    python bench/experiments/ensemble_val.py --data ../shared/data/clothing \\
        --bundles /work/runs/r2 /work/runs/r4 --out bench/results/ensemble_val.json

Each bundle's validation photos (its split.json, which must be the same split for all) go
through the bundle's own preprocessing, TTA and temperature; the ensemble averages the
calibrated posteriors and refits one temperature on validation. Reported: top-1, NLL, ECE
and the mean information gain of DARTS at 0.95 (pac-seller, calibrated on each model's own
calibration split through the same path), and seconds per photo of each model. Nothing here
looks at the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hedged import HedgedClassifier  # noqa: E402
from hedged.hedging.metrics import information_gain  # noqa: E402
from hedged.models.calibration import expected_calibration_error, fit_temperature, nll  # noqa: E402
from hedged.models.data import load_dataset  # noqa: E402


def split_paths(data, ids):
    where = {str(i): k for k, i in enumerate(data.ids)}
    idx = np.array([where[str(i)] for i in ids])
    return data.paths[idx], data.labels[idx]


def darts_gain(clf, cal_p, cal_y, cal_g, probs, y, target=0.95):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = HedgedClassifier(clf.taxonomy).fit(cal_p, cal_y, cal_g)
        rule = c.rule("pac-seller" if cal_g is not None else "pac")
        pred = rule.predict_index(probs, target)
    right = clf.taxonomy.is_correct(pred, y)
    return float(information_gain(clf.taxonomy, pred, y, normalize=True).mean()), float(right.mean()), float(
        np.mean(pred == clf.taxonomy.node_index(clf.taxonomy.root)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--bundles", nargs="+", required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    data = load_dataset(args.data)
    rows, val, cal = {}, {}, {}
    ref_split = None
    for b in args.bundles:
        clf = HedgedClassifier.from_bundle(b)
        split = clf.bundle_.split
        if ref_split is None:
            ref_split = split
        elif split["validation"] != ref_split["validation"] or split["calibration"] != ref_split["calibration"]:
            raise SystemExit(f"{b} was made on another split")
        paths, labels = split_paths(data, split["validation"])
        y = clf.taxonomy.resolve_labels(labels)
        t0 = time.perf_counter()
        p = clf.predict_proba(list(paths))
        sec = (time.perf_counter() - t0) / len(paths)
        val[b] = p
        cal[b] = (clf.calibration_probs_, clf.calibration_labels_, clf.calibration_groups_)
        gain = darts_gain(clf, *cal[b], p, y)
        rows[b] = {"top1": float((p.argmax(1) == y).mean()), "nll": nll(p, y), "ece": expected_calibration_error(p, y),
                   "darts_0.95_info_gain": gain[0], "darts_0.95_accuracy": gain[1], "darts_0.95_root_share": gain[2],
                   "seconds_per_photo": sec, "tta": list(clf.tta_angles)}
        print(b, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[b].items()}, flush=True)
    # the ensemble: mean of calibrated posteriors, one temperature refitted on validation
    mean = np.mean([val[b] for b in args.bundles], axis=0)
    t = fit_temperature(np.log(np.clip(mean, 1e-12, 1))[:, None], y)
    z = np.log(np.clip(mean, 1e-12, 1)) / t
    ens = np.exp(z - z.max(1, keepdims=True))
    ens /= ens.sum(1, keepdims=True)
    cal_mean = np.mean([cal[b][0] for b in args.bundles], axis=0)
    zc = np.log(np.clip(cal_mean, 1e-12, 1)) / t
    cal_ens = np.exp(zc - zc.max(1, keepdims=True))
    cal_ens /= cal_ens.sum(1, keepdims=True)
    gain = darts_gain(clf, cal_ens, cal[args.bundles[0]][1], cal[args.bundles[0]][2], ens, y)
    rows["ensemble"] = {"members": args.bundles, "temperature": float(t), "top1": float((ens.argmax(1) == y).mean()),
                        "nll": nll(ens, y), "ece": expected_calibration_error(ens, y),
                        "darts_0.95_info_gain": gain[0], "darts_0.95_accuracy": gain[1],
                        "darts_0.95_root_share": gain[2],
                        "seconds_per_photo": sum(rows[b]["seconds_per_photo"] for b in args.bundles)}
    print("ensemble", {k: round(v, 4) if isinstance(v, float) else v for k, v in rows["ensemble"].items()})
    if args.out:
        args.out.write_text(json.dumps({"n_validation": int(len(y)), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
