"""Why "Clothing"? The validation photos answered with the root at 0.95 (issue 19, item 5).

    python bench/experiments/root_answers.py --data ../shared/data/clothing \\
        --before /work/runs/r2 --after models/bundles/clothing \\
        --out bench/results/root_answers.json --sheet docs/img/root_answers.jpg

Both bundles must be made on the same split. Each one's validation photos go through the
bundle's own preprocessing, views and temperature; DARTS (pac-seller, target 0.95) is
calibrated on each bundle's stored calibration posteriors. For the photos a bundle answers
with the root it reports the posteriors of the five top-level garment groups
(upper body, lower body, full body, feet, head), which two of them compete (the two
largest), and how much mass the largest holds; then what the ``--after`` model does with the
``--before`` model's root answers. The contact sheet shows the ``--after`` model's root
answers with the true class and the competing pair. Only validation photos are looked at.
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
from hedged.models.data import load_dataset  # noqa: E402

GROUPS = ["body.upper", "body.lower", "body.full", "feet", "head"]


def answers(clf, probs, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = HedgedClassifier(clf.taxonomy).fit(clf.calibration_probs_, clf.calibration_labels_,
                                               clf.calibration_groups_)
        return c.rule("pac-seller").predict_index(probs, target)


def group_probs(tax, probs):
    nodes = tax.node_probs(probs)
    return np.stack([nodes[:, tax.node_index(g)] for g in GROUPS], axis=1)


def summarise(tax, probs, y, pred):
    root = tax.node_index(tax.root)
    is_root = pred == root
    gp = group_probs(tax, probs)
    order = np.argsort(-gp, axis=1)
    pairs = Counter()
    true_groups = Counter()
    leaf_names = list(tax.leaves)
    for i in np.flatnonzero(is_root):
        a, b = sorted((GROUPS[order[i, 0]], GROUPS[order[i, 1]]))
        pairs[f"{a} / {b}"] += 1
        true_groups[next(g for g in GROUPS if leaf_names[y[i]].startswith(g + "."))] += 1
    top = gp.max(1)
    right = tax.is_correct(pred, y)
    return {
        "n": int(len(y)),
        "root_answers": int(is_root.sum()),
        "root_share": float(is_root.mean()),
        "accuracy": float(right.mean()),
        "top1": float((probs.argmax(1) == y).mean()),
        "competing_pairs": dict(pairs.most_common()),
        "true_group_of_root_answers": dict(true_groups.most_common()),
        "largest_group_mass_root": float(np.median(top[is_root])) if is_root.any() else None,
        "largest_group_mass_not_root": float(np.median(top[~is_root])),
        "top1_right_among_root": float((probs.argmax(1) == y)[is_root].mean()) if is_root.any() else None,
    }, is_root, gp


def contact_sheet(paths, captions, out: Path, cols: int = 8, side: int = 150) -> None:
    from PIL import Image, ImageDraw, ImageOps

    rows = -(-len(paths) // cols)
    sheet = Image.new("RGB", (cols * side, rows * (side + 42)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (p, cap) in enumerate(zip(paths, captions)):
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        im.thumbnail((side, side))
        x, y = (k % cols) * side, (k // cols) * (side + 42)
        sheet.paste(im, (x + (side - im.width) // 2, y))
        for j, line in enumerate(cap.split("\n")):
            draw.text((x + 2, y + side + 1 + 13 * j), line, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=70, optimize=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--sheet", type=Path)
    ap.add_argument("--max-sheet", type=int, default=48)
    args = ap.parse_args(argv)
    data = load_dataset(args.data)
    where = {str(i): k for k, i in enumerate(data.ids)}
    result, roots, probs_of = {}, {}, {}
    ref = None
    for name, b in (("before", args.before), ("after", args.after)):
        clf = HedgedClassifier.from_bundle(b, check_taxonomy=False)
        split = clf.bundle_.split
        if ref is not None and split["validation"] != ref:
            raise SystemExit(f"{b} was made on another split than {args.before}")
        ref = split["validation"]
        idx = np.array([where[str(i)] for i in split["validation"]])
        paths, y = data.paths[idx], clf.taxonomy.resolve_labels(data.labels[idx])
        probs = clf.predict_proba(list(paths))
        pred = answers(clf, probs, args.target)
        summary, is_root, gp = summarise(clf.taxonomy, probs, y, pred)
        summary["bundle"] = str(b)
        result[name], roots[name], probs_of[name] = summary, is_root, (probs, pred, gp)
        print(name, json.dumps(summary), flush=True)
    tax = clf.taxonomy
    b_root, a_root = roots["before"], roots["after"]
    _, a_pred, a_gp = probs_of["after"]
    right = tax.is_correct(a_pred, y)
    result["before_root_after"] = {
        "still_root": int((b_root & a_root).sum()),
        "answered_right": int((b_root & ~a_root & right).sum()),
        "answered_wrong": int((b_root & ~a_root & ~right).sum()),
        "newly_root": int((~b_root & a_root).sum()),
    }
    print("before's root answers, after:", result["before_root_after"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.sheet:
        leaf_names = list(tax.leaves)
        pick = np.flatnonzero(a_root)[: args.max_sheet]
        caps = []
        for i in pick:
            o = np.argsort(-a_gp[i])[:2]
            pair = " / ".join(f"{GROUPS[j].split('.')[-1]} {a_gp[i, j]:.2f}" for j in o)
            caps.append(f"{tax.display_name(leaf_names[y[i]])}\n{pair}")
        contact_sheet([paths[i] for i in pick], caps, args.sheet)
        print("wrote", args.sheet)


if __name__ == "__main__":
    main()
