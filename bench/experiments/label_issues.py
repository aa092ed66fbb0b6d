"""Suspect training labels by confident learning on out-of-fold posteriors (issue 19).

    pip install cleanlab    # the experiment's own dependency (not the engine's)
    python bench/experiments/label_issues.py --bundle /work/runs/r2 --data ../shared/data/clothing \\
        --cache /work/runs/probe --out bench/results/label_issues.json --sheet docs/img/label_suspects.jpg

Out-of-fold posteriors of every *training* photo come from a logistic regression on the
pooled ImageNet features of EfficientNet-Lite1 (no fine-tuning, so no photo has been
seen by the model that scores it), five folds grouped by contributor. ``cleanlab``'s
``find_label_issues`` (Northcutt et al., "Confident Learning", JAIR 2021) ranks the
photos whose given label the out-of-fold posterior disbelieves most. Only training labels
are looked at: validation, calibration and test labels are never touched.

The suspects go to ``train.py --suspects FILE`` (weight 0 or a down-weight); whether that
helps is measured on the validation split (docs/model.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def contact_sheet(paths, captions, out: Path, cols: int = 8, side: int = 160) -> None:
    from PIL import Image, ImageDraw, ImageOps

    rows = -(-len(paths) // cols)
    sheet = Image.new("RGB", (cols * side, rows * (side + 30)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (p, cap) in enumerate(zip(paths, captions)):
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        im.thumbnail((side, side))
        x, y = (k % cols) * side, (k // cols) * (side + 30)
        sheet.paste(im, (x + (side - im.width) // 2, y))
        for i, line in enumerate(cap.split("\n")[:2]):
            draw.text((x + 3, y + side + 2 + 13 * i), line[:28], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=85)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="a bundle whose split.json names the training photos")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--cache", type=Path, default=None, help="folder for the feature array")
    ap.add_argument("--C", type=float, default=0.05)
    ap.add_argument("--top", type=int, default=40, help="suspects on the contact sheet")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sheet", type=Path, default=None)
    args = ap.parse_args(argv)

    from cleanlab.filter import find_label_issues
    from rich.progress import Progress
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bench.backbone_probe import _cached_features
    from hedged.models.bundle import load_bundle
    from hedged.models.data import load_dataset

    b = load_bundle(args.bundle)
    data = load_dataset(args.data)
    where = {str(i): k for k, i in enumerate(data.ids)}
    idx = np.array([where[str(i)] for i in b.split["train"]])
    paths, groups = data.paths[idx], data.groups[idx]
    y = np.asarray(b.taxonomy.resolve_labels(data.labels[idx]))
    with Progress(transient=True) as progress:
        F = _cached_features("efficientnet_lite1@280", list(paths), args.cache, progress)
    oof = np.zeros((len(y), b.taxonomy.n_leaves))
    for tr, te in GroupKFold(5).split(F, y, groups):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=args.C, max_iter=3000)).fit(F[tr], y[tr])
        oof[np.ix_(te, clf.classes_)] = clf.predict_proba(F[te])
    ranked = find_label_issues(y, oof, return_indices_ranked_by="self_confidence")
    leaves = b.taxonomy.leaves
    suspects = [{"image": str(b.split["train"][i]), "sender_id": str(groups[i]), "given": leaves[y[i]],
                 "oof_guess": leaves[int(oof[i].argmax())], "p_given": float(oof[i, y[i]]),
                 "p_guess": float(oof[i].max())} for i in ranked]
    result = {"n_train": int(len(y)), "oof_top1": float((oof.argmax(1) == y).mean()), "n_suspects": len(suspects),
              "by_given_label": {leaf: int(sum(s["given"] == leaf for s in suspects)) for leaf in leaves},
              "suspects": suspects}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"out-of-fold top-1 {result['oof_top1']:.3f}; {len(suspects)} suspected label issues of {len(y)} "
          f"training photos; written to {args.out}")
    if args.sheet:
        top = ranked[: args.top]
        contact_sheet(paths[top], [f"given {b.taxonomy.display_name(leaves[y[i]])}\nOOF: "
                                   f"{b.taxonomy.display_name(leaves[int(oof[i].argmax())])} {oof[i].max():.0%}"
                                   for i in top], args.sheet)
        print(f"contact sheet of the top {len(top)} in {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
