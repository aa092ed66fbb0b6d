"""Fit, calibrate and measure the bundle's out-of-taxonomy detector; optionally store it.

Reads the per-view logits/features cached by ``bench/ood_features.py`` (run it first,
for the clothing splits and both non-clothing folders)::

    python bench/ood_features.py --out /work/runs/ood \\
        --dirs tests/fixtures/not_clothing/fit tests/fixtures/not_clothing/eval
    python bench/ood_detector.py --cache /work/runs/ood [--write]

Data roles (nothing is chosen on test data):

* fitting: the bundle's *validation* clothing photos (in) against
  ``not_clothing/fit`` (out); the signal set is chosen by 5-fold cross-validation there;
* calibration: the bundle's *calibration* clothing photos set the reject threshold
  (finite-sample quantile, at most ``--max-false-rejection`` of clothing called outside);
* evaluation: the *test* clothing photos and ``not_clothing/eval``; the dataset's
  "Other" / "Not sure" photos are reported as hard cases.

``--write`` stores the detector in the bundle (``ood.json`` + ``ood.npz``, hashes updated).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from hedged.hedging.ood import SIGNALS, InTaxonomyDetector, taxonomy_signals
from hedged.models.bundle import DEFAULT_BUNDLE, load_bundle, save_detector
from hedged.models.ood import CLOTHING_SYNSETS, default_wordnet_paths, imagenet_classes_under, imagenet_head


def load(cache: Path, name: str):
    with np.load(cache / f"{name}.npz") as z:
        return z["logits"], z["features"].astype(np.float32), z["ids"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--wordnet", default="../shared/data/wordnet")
    ap.add_argument("--max-false-rejection", type=float, default=0.02)
    ap.add_argument("--write", action="store_true", help="store the detector in the bundle")
    args = ap.parse_args()

    bundle = load_bundle(args.bundle)
    w, b = imagenet_head(bundle.arch)
    inside = imagenet_classes_under(*default_wordnet_paths(args.wordnet))
    head = dict(imagenet_weight=w, imagenet_bias=b, imagenet_in=inside)

    def signals(name, which=SIGNALS):
        logits, feats, _ = load(args.cache, name)
        return taxonomy_signals(logits, feats, signals=which, **head)

    S = {n: signals(n) for n in ("validation", "calibration", "test", "fit", "eval", "unlabelled")}
    col = {s: i for i, s in enumerate(SIGNALS)}
    a = args.max_false_rejection
    report: dict = {"max_false_rejection": a, "n": {k: len(v) for k, v in S.items()}}

    def measure(det_cols, det):
        thr = det.threshold_for(a)
        out = {}
        for n in ("calibration", "test", "eval", "unlabelled"):
            out[n] = float(np.mean(det.score(S[n][:, det_cols]) < thr))  # share judged outside
        return out

    # 1. Each signal alone (threshold from the calibration clothing): what each is worth.
    rows = []
    for s in SIGNALS:
        det = InTaxonomyDetector([s], a)
        det.mean_, det.scale_, det.coef_, det.intercept_ = np.zeros(1), np.ones(1), np.ones(1), 0.0
        det.calibrate(S["calibration"][:, [col[s]]])
        rows.append({"signals": [s], **measure([col[s]], det)})

    # 2. Signal subsets for the logistic regression, chosen by 5-fold CV on the fitting data.
    X_fit = np.concatenate([S["validation"], S["fit"]])
    y_fit = np.r_[np.ones(len(S["validation"])), np.zeros(len(S["fit"]))].astype(int)
    rng = np.random.default_rng(0)
    folds = rng.permutation(len(y_fit)) % 5
    cv = []
    for r in range(1, len(SIGNALS) + 1):
        for subset in itertools.combinations(SIGNALS, r):
            cols = [col[s] for s in subset]
            det_rates = []
            for k in range(5):
                tr, te = folds != k, folds == k
                det = InTaxonomyDetector(subset, a).fit(X_fit[tr][:, cols], y_fit[tr])
                # held-out clothing sets the threshold, held-out non-clothing measures detection
                det.calibrate(X_fit[te & (y_fit == 1)][:, cols])
                det_rates.append(np.mean(~det.predict(X_fit[te & (y_fit == 0)][:, cols])))
            cv.append((float(np.mean(det_rates)), -len(subset), subset))
            det = InTaxonomyDetector(subset, a).fit(X_fit[:, cols], y_fit).calibrate(S["calibration"][:, cols])
            rows.append({"signals": list(subset), "cv_detection": float(np.mean(det_rates)), **measure(cols, det)})
    best = max(cv)[2]
    cols = [col[s] for s in best]
    det = InTaxonomyDetector(best, a).fit(X_fit[:, cols], y_fit).calibrate(S["calibration"][:, cols])
    chosen = measure(cols, det)
    labels = np.load(args.cache / "unlabelled_labels.npy")
    outside_u = det.score(S["unlabelled"][:, cols]) < det.threshold_for(a)
    for lab in ("Other", "Not sure"):
        chosen[f"unlabelled {lab}"] = float(np.mean(outside_u[labels == lab]))
    names = load(args.cache, "eval")[2]
    missed = [str(n) for n, o in zip(names, det.score(S["eval"][:, cols]) < det.threshold_for(a)) if not o]

    print(f"{'signals':42s} {'cv det':>7s} {'cal out':>8s} {'test out':>9s} {'eval det':>9s} {'Other/NS':>9s}")
    for r in rows:
        cvd = f"{r['cv_detection']:.3f}" if "cv_detection" in r else "-"
        print(
            f"{'+'.join(r['signals']):42s} {cvd:>7s} {r['calibration']:8.3f} {r['test']:9.3f} {r['eval']:9.3f} "
            f"{r['unlabelled']:9.3f}"
        )
    print("chosen by CV:", "+".join(best), json.dumps(chosen))
    print("eval images judged in the taxonomy:", missed)
    report.update(single_and_subsets=rows, chosen=list(best), chosen_rates=chosen, eval_missed=missed)
    if args.write:
        metrics = {
            "fitted_on": "validation clothing photos vs tests/fixtures/not_clothing/fit",
            "calibrated_on": "calibration clothing photos",
            "judged_outside": {
                "calibration_clothing": chosen["calibration"],
                "test_clothing": chosen["test"],
                "not_clothing_eval": chosen["eval"],
                "other": chosen["unlabelled Other"],
                "not_sure": chosen["unlabelled Not sure"],
            },
            "counts": report["n"],
        }
        save_detector(
            args.bundle,
            det,
            imagenet_weight=w,
            imagenet_bias=b,
            imagenet_in=inside,
            info={"imagenet_in_synsets": list(CLOTHING_SYNSETS), "metrics": metrics},
        )
        print("stored in", args.bundle)


if __name__ == "__main__":
    main()
