"""The stricter promise (issue 24): a photo judged "not clothing" counts as a miss.

On the shipped bundle's test split at 0.95, for each guarantee, with the rules calibrated
either on the photos the detector accepts (rejections="exclude", the default) or counting a
rejected calibration photo as wrong at every lambda (rejections="miss"): the accuracy over
all test photos (rejections as misses), the average contributor's, information gain, root share.

    python bench/experiments/strict_promise.py     # writes bench/results/strict_promise.json
"""
import json
import warnings
from pathlib import Path

import numpy as np
from hedged.hedging.groups import capped_accuracy
from hedged.models.data import load_dataset

from hedged import HedgedClassifier

out = {}
base = HedgedClassifier.from_bundle()
tax = base.taxonomy
data = load_dataset(Path("../shared/data/clothing"))
where = {str(i): k for k, i in enumerate(data.ids)}
idx = np.array([where[str(i)] for i in base.bundle_.split["test"]])
paths, y, groups = list(data.paths[idx]), tax.resolve_labels(data.labels[idx]), data.groups[idx]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    probs = None
    for rej in ("exclude", "miss"):
        clf = HedgedClassifier.from_bundle(rejections=rej)
        for g in ("pac-seller", "pac-group", "pac"):
            preds = clf.predict(paths, accuracy=0.95, guarantee=g)
            node = [p.node.name if p.node is not None else None for p in preds]
            right = np.array([n is not None and tax.leaves[c] in tax.leaves_under(n) for n, c in zip(node, y)])
            gain = np.array([p.info_gain if p.node is not None else 0.0 for p in preds])
            root = np.array([n == tax.root for n in node])
            r = {"accuracy_all": round(float(right.mean()), 4), "avg_contributor_all": round(capped_accuracy(right, groups, 1), 4),
                 "mean_info_gain": round(float(np.mean(np.where(right, gain, 0.0))), 4), "root_share": round(float(root.mean()), 4)}
            out[f"{rej}/{g}"] = r
            print(rej, g, r, flush=True)
(Path(__file__).resolve().parents[1] / "results" / "strict_promise.json").write_text(json.dumps(out, indent=1) + "\n")
