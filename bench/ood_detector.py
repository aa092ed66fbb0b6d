"""Fit, calibrate and measure the bundle's out-of-taxonomy detector; optionally store it.

Reads the per-view logits/features cached by ``bench/ood_features.py`` (run it first,
for the clothing splits and both non-clothing folders)::

    python bench/ood_features.py --out /work/runs/ood \\
        --dirs tests/fixtures/not_clothing/fit tests/fixtures/not_clothing/eval
    python bench/ood_detector.py --cache /work/runs/ood [--write]

Data roles (nothing is chosen on test data):

* fitting: the bundle's *validation* clothing photos (in: the odd half; the even half gives the mean and
  Ledoit-Wolf covariance of the ``mahalanobis`` signal) against
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

from hedged.hedging.ood import SIGNALS, InTaxonomyDetector, finite_sample_threshold, taxonomy_signals
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

    from sklearn.covariance import LedoitWolf

    bundle = load_bundle(args.bundle)
    w, b = imagenet_head(bundle.arch)
    inside = imagenet_classes_under(*default_wordnet_paths(args.wordnet))
    # Mahalanobis statistics from half of the validation clothing photos (never calibration
    # or test); the other half are the regression's in-taxonomy examples, so that the
    # signal is not fitted and judged on the same photos.
    val_feats = load(args.cache, "validation")[1]
    half = np.arange(len(val_feats)) % 2 == 0
    lw = LedoitWolf().fit(val_feats[half].reshape(-1, w.shape[1]).astype(np.float64))
    # The matrices are stored as fp16: compute every score with the rounded values.
    head = dict(
        imagenet_weight=w.astype(np.float16).astype(np.float32),
        imagenet_bias=b,
        imagenet_in=inside,
        feature_mean=lw.location_.astype(np.float32),
        feature_precision=lw.precision_.astype(np.float16).astype(np.float32),
    )

    def signals(name, which=SIGNALS):
        logits, feats, _ = load(args.cache, name)
        return taxonomy_signals(logits, feats, signals=which, **head)

    S = {n: signals(n) for n in ("validation", "calibration", "test", "fit", "eval", "unlabelled")
         if (args.cache / f"{n}.npz").exists()}
    col = {s: i for i, s in enumerate(SIGNALS)}
    a = args.max_false_rejection
    report: dict = {"max_false_rejection": a, "n": {k: len(v) for k, v in S.items()}}

    def measure(det_cols, det):
        thr = det.threshold_for(a)
        out = {}
        for n in ("calibration", "test", "eval", "unlabelled"):
            if n in S:
                out[n] = float(np.mean(det.score(S[n][:, det_cols]) < thr))  # share judged outside
            else:
                out[n] = float("nan")
        return out

    # 1. Each signal alone (threshold from the calibration clothing): what each is worth.
    rows = []
    for s in SIGNALS:
        det = InTaxonomyDetector([s], a)
        det.mean_, det.scale_, det.coef_, det.intercept_ = np.zeros(1), np.ones(1), np.ones(1), 0.0
        det.calibrate(S["calibration"][:, [col[s]]])
        rows.append({"signals": [s], **measure([col[s]], det)})

    # 2. Signal subsets for the logistic regression, chosen by 5-fold CV on the fitting data.
    X_fit = np.concatenate([S["validation"][~half], S["fit"]])
    y_fit = np.r_[np.ones(int((~half).sum())), np.zeros(len(S["fit"]))].astype(int)
    rng = np.random.default_rng(0)
    folds = rng.permutation(len(y_fit)) % 5
    cv = []
    for r in range(1, len(SIGNALS) + 1):
        for subset in itertools.combinations(SIGNALS, r):
            cols = [col[s] for s in subset]
            oof = np.empty(len(y_fit))
            for k in range(5):
                tr, te = folds != k, folds == k
                det = InTaxonomyDetector(subset, a).fit(X_fit[tr][:, cols], y_fit[tr])
                oof[te] = det.score(X_fit[te][:, cols])
            # out-of-fold clothing scores set the threshold (a fold alone has too few photos
            # for a 2% quantile), out-of-fold non-clothing scores measure detection
            det_rates = [np.mean(oof[y_fit == 0] < finite_sample_threshold(oof[y_fit == 1], a))]
            cv.append((float(np.mean(det_rates)), -len(subset), subset))
            det = InTaxonomyDetector(subset, a).fit(X_fit[:, cols], y_fit).calibrate(S["calibration"][:, cols])
            rows.append({"signals": list(subset), "cv_detection": float(np.mean(det_rates)), **measure(cols, det)})
    best = max(cv)[2]
    cols = [col[s] for s in best]
    det = InTaxonomyDetector(best, a).fit(X_fit[:, cols], y_fit).calibrate(S["calibration"][:, cols])
    det.set_head(**head)
    # what prediction will compute from the stored arrays
    assert np.allclose(det.signals_of(*load(args.cache, "calibration")[:2]), S["calibration"][:, cols])
    chosen = measure(cols, det)
    if "unlabelled" in S:
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
                "other": chosen.get("unlabelled Other"),
                "not_sure": chosen.get("unlabelled Not sure"),
            },
            "counts": report["n"],
        }
        save_detector(args.bundle, det, info={"imagenet_in_synsets": list(CLOTHING_SYNSETS), "metrics": metrics})
        print("stored in", args.bundle)


if __name__ == "__main__":
    main()
