"""Issue 19's goals, measured through a shipped bundle on its test split (photos of unseen contributors).

    python bench/experiments/model_goals.py --bundle models/bundles/clothing-int8 \\
        --data ../shared/data/clothing --out bench/results/model_goals.json

Every photo goes through the facade as a user's would (the bundle's preprocessing, TTA,
temperature and not-clothing detector). Reported: flat top-1; at each target and
guarantee the achieved accuracy counting photos judged "not clothing" as misses (what a
user sees) and among photos judged clothing, the mean normalised information gain, the
share of root ("not sure") answers; photos judged outside, overall and per class; and
``tests/fixtures/not_clothing/eval`` judged outside.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hedged import HedgedClassifier  # noqa: E402
from hedged.hedging.groups import capped_accuracy  # noqa: E402
from hedged.models.data import load_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    clf = HedgedClassifier.from_bundle(args.bundle)
    tax = clf.taxonomy
    data = load_dataset(args.data)
    where = {str(i): k for k, i in enumerate(data.ids)}
    idx = np.array([where[str(i)] for i in clf.bundle_.split["test"]])
    paths, labels, groups = data.paths[idx], data.labels[idx], data.groups[idx]
    y = tax.resolve_labels(labels)
    out = {"bundle": str(args.bundle or "default"), "n_test": int(len(y)),
           "n_contributors": int(len(set(groups))), "targets": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = clf.predict(list(paths), accuracy=0.5, errors="raise")
    inside = np.array([p.in_taxonomy is not False for p in base])
    leaf = np.array([tax.leaf_index(p.leaf.name) for p in base])
    out["flat_top1"] = float(np.mean(leaf == y))
    out["judged_outside"] = float(np.mean(~inside))
    per_class = {}
    for c, name in enumerate(tax.leaves):
        m = y == c
        if m.any():
            per_class[name] = [int(np.sum(~inside[m])), int(m.sum())]
    out["judged_outside_per_class"] = per_class
    out["worst_class_10plus"] = max((a / b for a, b in per_class.values() if b >= 10), default=0.0)
    for guarantee in ("pac-seller", "pac"):
        for t in args.targets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preds = clf.predict(list(paths), accuracy=t, guarantee=guarantee)
            node = [p.node.name if p.node is not None else None for p in preds]
            right = np.array([n is not None and tax.leaves[c] in tax.leaves_under(n) for n, c in zip(node, y)])
            gain = np.array([p.info_gain if p.node is not None else 0.0 for p in preds])
            root = np.array([n == tax.root for n in node])
            out["targets"][f"{guarantee}@{t:g}"] = {
                "accuracy_all": float(right.mean()),  # a photo judged outside counts as a miss
                "accuracy_judged_clothing": float(right[inside].mean()),
                "accuracy_average_contributor": capped_accuracy(right, groups, 1),
                "mean_info_gain": float(np.mean(np.where(right, gain, 0.0))),
                "root_share": float(root.mean()),
            }
    fixtures = sorted((REPO / "tests" / "fixtures" / "not_clothing" / "eval").glob("*.jpg"))
    verdicts = clf.predict([str(p) for p in fixtures], accuracy=0.95)
    out["not_clothing_eval_outside"] = float(np.mean([p.in_taxonomy is False for p in verdicts]))
    out["answers_at_0.95"] = dict(Counter(p.kind for p in clf.predict(list(paths), accuracy=0.95)))
    print(json.dumps({k: v for k, v in out.items() if k != "judged_outside_per_class"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
