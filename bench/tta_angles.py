#!/usr/bin/env python3
"""Which rotation TTA angle set: flat accuracy and NLL of a bundle on its validation split.

Runs the bundle's model once per angle on the validation photos (listed in the
bundle's ``split.json``), then scores each candidate set by averaging the softmax of
its views, with the temperature fitted on those same validation posteriors (as
``train.py`` does when it picks the shipped set among ``models.training.TTA_CANDIDATES``).
Calibration and test photos are not touched.

    python bench/tta_angles.py --data ../shared/data/clothing --out bench/results/tta_angles.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hedged.models.bundle import load_bundle  # noqa: E402
from hedged.models.calibration import accuracy, expected_calibration_error, fit_temperature, nll  # noqa: E402
from hedged.models.data import load_dataset  # noqa: E402
from hedged.models.inference import predict_logits  # noqa: E402
from hedged.models.tta import average_view_probs  # noqa: E402

CANDIDATES = ((0.0,), (0.0, -10.0, 10.0), (0.0, -15.0, 15.0), (0.0, -30.0, 30.0), (0.0, -15.0, 15.0, -30.0, 30.0),
              (0.0, 90.0, -90.0, 180.0))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "clothing"))
    p.add_argument("--model", default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--split", default="validation")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    b = load_bundle(args.model)
    data = load_dataset(args.data)
    pos = {x: i for i, x in enumerate(data.ids)}
    idx = np.array([pos[i] for i in b.split[args.split]])
    y = b.taxonomy.resolve_labels(data.labels[idx], missing="raise")
    angles = tuple(dict.fromkeys(a for c in CANDIDATES for a in c))
    logits = predict_logits(b.model, data.paths[idx], b.preprocess, angles, progress=True)
    col = {a: i for i, a in enumerate(angles)}
    rows = []
    for cand in CANDIDATES:
        v = logits[:, [col[a] for a in cand]]
        t = fit_temperature(v, y)
        raw, cal = average_view_probs(v, 1.0), average_view_probs(v, t)
        rows.append({"angles": list(cand), "temperature": t, "accuracy": accuracy(cal, y), "nll_raw": nll(raw, y),
                     "nll": nll(cal, y), "ece": expected_calibration_error(cal, y)})
        print(f"{str(list(cand)):36s} acc {rows[-1]['accuracy']:.4f}  NLL {rows[-1]['nll_raw']:.4f} -> "
              f"{rows[-1]['nll']:.4f} (T={t:.3f})  ECE {rows[-1]['ece']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "split": args.split, "n": int(len(y)),
                                              "bundle_angles": list(b.tta_angles), "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
