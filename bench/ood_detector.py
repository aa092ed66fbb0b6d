"""Fit, calibrate and measure the bundle's out-of-taxonomy detector; optionally store it.

Reads the per-view logits/features cached by ``bench/ood_features.py`` (run it first,
for the clothing splits and both non-clothing folders)::

    python bench/ood_features.py --bundle B --out /work/runs/ood \
        --splits train validation calibration test unlabelled --one-view train fit \
        --dirs tests/fixtures/not_clothing/fit tests/fixtures/not_clothing/eval
    python bench/ood_detector.py --bundle B --cache /work/runs/ood [--write]

Data roles (nothing is chosen on test data, and the threshold never sees the
calibration split, which calibrates DARTS with the detector's rejections as misses):

* statistics: the bundle's *train* clothing photos give the class means and the shared,
  Ledoit-Wolf shrunk within-class covariance of the Mahalanobis signals;
* fitting: the logistic regression separates the *validation* clothing photos (unseen by
  the network) from ``not_clothing/fit``; the signal set is chosen by 5-fold
  cross-validation there, each fold judged at its out-of-fold threshold;
* threshold: the *validation* clothing photos' scores, with its own confidence: the
  false-rejection rate stays at most ``--max-false-rejection`` with probability
  ``1 - --delta`` over the draw of those photos (``hedging.ood.rejection_rank``; the
  same photos fitted the three or so weights of the regression, a small optimism);
* evaluation: the *test* clothing photos, overall and per class, and ``not_clothing/eval``;
  the dataset's "Other" / "Not sure" photos are reported as hard cases.

``--write`` stores the detector in the bundle (``ood.json`` + ``ood.npz``) and each
calibration photo's score in ``calibration.npz``, hashes updated.
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


#: Features the detector reads: all of a single network's, the first member's of an ensemble.
FEATURE_DIMS = {"n": None}


def load(cache: Path, name: str):
    with np.load(cache / f"{name}.npz") as z:
        feats = z["features"].astype(np.float32)
        if FEATURE_DIMS["n"]:
            feats = feats[..., : FEATURE_DIMS["n"]]
        return z["logits"], feats, z["ids"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--wordnet", default="../shared/data/wordnet")
    ap.add_argument("--max-false-rejection", type=float, default=0.02)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--out", type=Path, help="write the report (JSON) here")
    ap.add_argument("--write", action="store_true", help="store the detector in the bundle")
    args = ap.parse_args()

    from sklearn.covariance import LedoitWolf

    from hedged.models.ensemble import member_archs

    bundle = load_bundle(args.bundle)
    # an ensemble's detector reads its first member's features (one network's matrices)
    w, b = imagenet_head((member_archs(bundle.arch) or [bundle.arch])[0])
    if member_archs(bundle.arch):
        FEATURE_DIMS["n"] = int(w.shape[1])
    inside = imagenet_classes_under(*default_wordnet_paths(args.wordnet))
    leaves = bundle.taxonomy.leaves
    train_logits, train_feats, train_ids = load(args.cache, "train")
    f_tr = train_feats[:, 0].astype(np.float64)
    y_tr = _labels_of(bundle, "train", train_ids)
    # class means and the shared within-class covariance: train photos only
    means = np.stack([f_tr[y_tr == c].mean(0) if np.any(y_tr == c) else f_tr.mean(0) for c in range(len(leaves))])
    lw_class = LedoitWolf().fit(f_tr - means[y_tr])
    lw_all = LedoitWolf().fit(f_tr)
    # The matrices are stored as fp16: compute every score with the rounded values.
    precision = lw_class.precision_.astype(np.float16).astype(np.float32)
    head = dict(
        imagenet_weight=w.astype(np.float16).astype(np.float32),
        imagenet_bias=b,
        imagenet_in=inside,
        feature_mean=lw_all.location_.astype(np.float32),
        feature_precision=precision,
        class_means=means.astype(np.float32),
    )

    def signals(name, which=SIGNALS):
        logits, feats, _ = load(args.cache, name)
        return taxonomy_signals(logits, feats, signals=which, **head)

    S = {n: signals(n) for n in ("train", "validation", "calibration", "test", "fit", "eval", "unlabelled")
         if (args.cache / f"{n}.npz").exists()}
    ys = {n: _labels_of(bundle, n, load(args.cache, n)[2]) for n in ("validation", "calibration", "test")}
    col = {s: i for i, s in enumerate(SIGNALS)}
    a, delta = args.max_false_rejection, args.delta
    report: dict = {"max_false_rejection": a, "delta": delta, "n": {k: len(v) for k, v in S.items()}}

    def measure(cols, det):
        thr = det.threshold_for(a)
        out = {n: float(np.mean(det.score(S[n][:, cols]) < thr)) for n in ("validation", "calibration", "test", "eval",
                                                                             "unlabelled") if n in S}
        worst = 0.0
        for c in range(len(leaves)):
            m = ys["test"] == c
            if m.sum() >= 10:
                worst = max(worst, float(np.mean(det.score(S["test"][m][:, cols]) < thr)))
        out["test_worst_class_10plus"] = worst
        return out

    # Signal subsets for the logistic regression, chosen by 5-fold CV on the fitting data
    # (train clothing, a spread of 600, against the non-clothing fit set).
    # The regression's in-taxonomy examples are the validation photos: unseen by the network,
    # like the photos it will judge (training photos score as in-sample, far too clean).
    X_fit = np.concatenate([S["validation"], S["fit"]])
    y_fit = np.r_[np.ones(len(S["validation"])), np.zeros(len(S["fit"]))].astype(int)
    rng = np.random.default_rng(0)
    folds = rng.permutation(len(y_fit)) % 5
    rows, cv = [], []
    for r in range(1, len(SIGNALS) + 1):
        for subset in itertools.combinations(SIGNALS, r):
            cols = [col[s] for s in subset]
            oof = np.empty(len(y_fit))
            for k in range(5):
                tr, te = folds != k, folds == k
                det = InTaxonomyDetector(subset, a, delta=delta, feature_dims=FEATURE_DIMS["n"]).fit(X_fit[tr][:, cols], y_fit[tr])
                oof[te] = det.score(X_fit[te][:, cols])
            detection = float(np.mean(oof[y_fit == 0] < finite_sample_threshold(oof[y_fit == 1], a, delta)))
            cv.append((detection, -len(subset), subset))
            det = InTaxonomyDetector(subset, a, delta=delta, feature_dims=FEATURE_DIMS["n"]).fit(X_fit[:, cols], y_fit).calibrate(S["validation"][:, cols])
            rows.append({"signals": list(subset), "cv_detection": detection, **measure(cols, det)})
    best = max(cv)[2]
    cols = [col[s] for s in best]
    det = InTaxonomyDetector(best, a, delta=delta, feature_dims=FEATURE_DIMS["n"]).fit(X_fit[:, cols], y_fit).calibrate(S["validation"][:, cols])
    det.set_head(**head)
    # what prediction will compute from the stored arrays
    assert np.allclose(det.signals_of(*load(args.cache, "calibration")[:2]), S["calibration"][:, cols])
    chosen = measure(cols, det)
    thr = det.threshold_for(a)
    per_class = []
    for c, leaf in enumerate(leaves):
        row = {"leaf": leaf}
        for n in ("validation", "calibration", "test"):
            m = ys[n] == c
            row[n] = [int(np.sum(det.score(S[n][m][:, cols]) < thr)), int(m.sum())]
        per_class.append(row)
    if "unlabelled" in S:
        labels = np.load(args.cache / "unlabelled_labels.npy")
        outside_u = det.score(S["unlabelled"][:, cols]) < thr
        for lab in ("Other", "Not sure"):
            chosen[f"unlabelled {lab}"] = float(np.mean(outside_u[labels == lab]))
    names = load(args.cache, "eval")[2]
    missed = [str(n) for n, o in zip(names, det.score(S["eval"][:, cols]) < thr) if not o]

    print(f"{'signals':48s} {'cv det':>7s} {'val out':>8s} {'test out':>9s} {'worst cls':>9s} {'eval det':>9s}")
    for r in sorted(rows, key=lambda r: -r["cv_detection"])[:15]:
        print(f"{'+'.join(r['signals']):48s} {r['cv_detection']:7.3f} {r['validation']:8.3f} {r['test']:9.3f} "
              f"{r['test_worst_class_10plus']:9.3f} {r['eval']:9.3f}")
    print("chosen by CV:", "+".join(best), json.dumps(chosen))
    print("per class (judged outside / photos):")
    for row in per_class:
        print(f"  {row['leaf']:40s} val {row['validation']}  cal {row['calibration']}  test {row['test']}")
    print("eval images judged in the taxonomy:", missed)
    report.update(subsets=rows, chosen=list(best), chosen_rates=chosen, per_class=per_class, eval_missed=missed,
                  threshold_rank=int(np.sum(det.calibration_scores_ < thr)))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.write:
        metrics = {
            "fitted_on": "validation clothing photos vs tests/fixtures/not_clothing/fit; class means and "
                         "covariance from the train photos",
            "threshold_on": f"validation clothing photos, false rejection <= {a} with probability {1 - delta}",
            "judged_outside": {
                "validation_clothing": chosen["validation"],
                "calibration_clothing": chosen["calibration"],
                "test_clothing": chosen["test"],
                "test_worst_class_10plus": chosen["test_worst_class_10plus"],
                "not_clothing_eval": chosen["eval"],
                "other": chosen.get("unlabelled Other"),
                "not_sure": chosen.get("unlabelled Not sure"),
            },
            "per_class": per_class,
            "counts": report["n"],
        }
        save_detector(args.bundle, det, info={"imagenet_in_synsets": list(CLOTHING_SYNSETS), "metrics": metrics},
                      calibration_scores=det.score(S["calibration"][:, cols]))
        print("stored in", args.bundle)


def _labels_of(bundle, split: str, ids) -> np.ndarray:
    """Leaf indices of a split's photos, in the cache's order (the bundle's split ids)."""
    import csv

    data = Path(bundle.provenance.get("data", "../shared/data/clothing"))
    csv_path = data / "images.csv" if data.is_dir() else data
    label = {r["image"]: r["label"] for r in csv.DictReader(open(csv_path))}
    return np.asarray(bundle.taxonomy.resolve_labels([label[str(i)] for i in ids]))


if __name__ == "__main__":
    main()
