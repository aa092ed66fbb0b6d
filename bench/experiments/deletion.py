"""The deletion check of tests/test_explain.py on more photos than a test can afford.

Same protocol as ``test_deleting_salient_pixels_hurts_more_than_random``: Grad-CAM
(with the TTA) of the answered node at 0.95 (one view; the most probable child of the
root for a root answer); grey the most salient 20 % of the input pixels, and, as the
control, the same mask circularly shifted to 3 random places (mean); a win when the
node's TTA probability drops more under the salient mask; a tie (not counted) when the
two are within 0.005. The test runs it on 20 photos (78 % won); this script runs it on
``--n`` photos of one split of the bundle (default: validation) to estimate the rate
with less noise.

    python bench/experiments/deletion.py --data ../shared/data/clothing --split validation --n 80 \
        --out bench/results/deletion.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models/bundles/clothing"))
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="validation", choices=("validation", "test", "calibration"))
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--tie", type=float, default=0.005)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from hedged import HedgedClassifier
    from hedged.models.explain import gradcam, membership_matrix, node_probabilities

    torch.set_num_threads(2)
    clf = HedgedClassifier.from_bundle(args.bundle)
    tax = clf.taxonomy
    ids = clf.bundle_.split[args.split]
    picked = np.random.default_rng(0).choice(len(ids), size=min(args.n, len(ids)), replace=False)
    photos = [Path(args.data) / "images" / f"{ids[i]}.jpg" for i in sorted(picked)]
    rng = np.random.default_rng(0)
    rows, t0 = [], time.perf_counter()
    for k, path in enumerate(photos):
        x = clf.preprocess.batch([path]).float()
        s = x.shape[-1]
        probs = node_probabilities(clf.model, x, np.eye(tax.n_leaves, dtype=np.float32), clf.temperature)
        node = clf.predict_from_probs(probs, 0.95)[0].node.name
        if node == tax.root:
            node_p = tax.node_probs(probs)[0]
            node = max(tax.children(node), key=lambda v: node_p[tax.node_index(v)])
        m = membership_matrix([np.atleast_1d(tax.leaf_index(list(tax.leaves_under(node))))], tax.n_leaves)
        cam = gradcam(clf.model, x, m, clf.temperature, clf.tta_angles)[0]
        salient = torch.from_numpy(cam >= np.quantile(cam, 1.0 - args.fraction))
        shifts = [tuple(int(v) for v in rng.integers(s // 4, s - s // 4, size=2)) for _ in range(3)]
        masks = [salient] + [torch.roll(salient, shifts=sh, dims=(0, 1)) for sh in shifts]
        batch = x.repeat(len(masks), 1, 1, 1).contiguous()
        for row, mask in enumerate(masks):
            batch[row, :, mask] = 0.0
        full = float(node_probabilities(clf.model, x, m, clf.temperature, clf.tta_angles)[0, 0])
        p = node_probabilities(clf.model, batch, m, clf.temperature, clf.tta_angles)[:, 0]
        rand = float(p[1:].mean())
        outcome = "tie" if abs(p[0] - rand) < args.tie else ("win" if p[0] < rand else "loss")
        rows.append({"image": path.stem, "node": node, "p": full, "salient": float(p[0]), "random": rand,
                     "outcome": outcome})
        print(f"[{k + 1}/{len(photos)}] {path.stem[:12]} {node}: p {full:.3f} salient {p[0]:.3f} "
              f"random {rand:.3f} {outcome} ({time.perf_counter() - t0:.0f} s)", flush=True)
    wins = sum(r["outcome"] == "win" for r in rows)
    losses = sum(r["outcome"] == "loss" for r in rows)
    ties = len(rows) - wins - losses
    share = wins / max(1, wins + losses)
    # Wilson 95 % interval of the untied win rate.
    n, z = wins + losses, 1.96
    centre = (share + z * z / (2 * n)) / (1 + z * z / n) if n else float("nan")
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n) if n else float("nan")
    print(f"{args.split}: {wins} wins, {losses} losses, {ties} ties: salient deletion won on {share:.1%} "
          f"of the untied photos (95 % CI {centre - half:.1%} to {centre + half:.1%})")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "split": args.split, "n": len(rows), "fraction": args.fraction, "tie": args.tie,
            "wins": wins, "losses": losses, "ties": ties, "win_rate_untied": share,
            "wilson95": [centre - half, centre + half],
            "command": "python bench/experiments/deletion.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "photos": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
