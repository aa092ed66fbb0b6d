#!/usr/bin/env python3
"""Draw a random sample of the bundle's test errors, to judge which errors are the model's.

Each tile is a misclassified test photo of the bundled model (its stored test
posteriors, ``test.npz``, in the order of ``split.json``'s test ids) with the
dataset label (green), the flat top-1 leaf and its probability (red), and the
DARTS answer at the given target accuracy (blue, ``ok`` when it is correct).

    python bench/experiments/error_gallery.py --data ../shared/data/clothing \\
        --n 48 --seed 1 --out bench/results/error_gallery.jpg

The labels are crowd-sourced; looking at the sample shows how many errors are the
model's and how many are label mistakes or garments between two classes (see
docs/model.md, "Where the errors are").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hedged.hedging import Darts  # noqa: E402
from hedged.models.bundle import load_bundle  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "clothing"),
                   help="folder with images/<id>.jpg")
    p.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    p.add_argument("--n", type=int, default=48, help="errors to draw (default 48)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--accuracy", type=float, default=0.95, help="DARTS target for the blue line")
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--tile", type=int, default=160, help="tile size in pixels")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)

    b = load_bundle(args.model)
    if b.test_probs is None or not b.split or "test" not in b.split:
        p.error("the bundle stores no test posteriors with their image ids")
    tax = b.taxonomy
    probs, y, ids = b.test_probs, b.test_labels, b.split["test"]
    top = probs.argmax(1)
    hedged = Darts(tax).fit(b.calibration_probs, b.calibration_labels).predict(probs, accuracy=args.accuracy)
    ok = tax.is_correct(hedged, y)
    errors = np.flatnonzero(top != y)
    leaf = tax.leaves
    pick = np.sort(np.random.default_rng(args.seed).choice(errors, min(args.n, len(errors)), replace=False))

    w, text_h = args.tile, 40
    rows = -(-len(pick) // args.cols)
    sheet = Image.new("RGB", (args.cols * w, rows * (w + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(pick):
        x, yy = (k % args.cols) * w, (k // args.cols) * (w + text_h)
        path = Path(args.data) / "images" / f"{ids[i]}.jpg"
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((w, w))
                sheet.paste(im, (x + (w - im.width) // 2, yy))
        except OSError as err:
            draw.text((x + 4, yy + 4), f"unreadable: {err}"[:40], fill="black")
        draw.text((x + 2, yy + w), f"{k} label: {tax.display_name(leaf[y[i]])}", fill="darkgreen")
        draw.text((x + 2, yy + w + 12), f"top-1: {tax.display_name(leaf[top[i]])} {probs[i, top[i]]:.2f}", fill="red")
        draw.text((x + 2, yy + w + 24), f"@{args.accuracy:g}: {tax.display_name(hedged[i])}{' ok' if ok[i] else ''}",
                  fill="blue")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=75, optimize=True)  # quality applies to JPEG; PNG ignores it
    print(f"{len(errors)} test errors of {len(y)}; drew {len(pick)} (seed {args.seed}); "
          f"DARTS @ {args.accuracy:g} is correct on {int(ok[errors].sum())} of the {len(errors)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
