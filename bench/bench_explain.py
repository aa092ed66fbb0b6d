#!/usr/bin/env python3
"""Time of one photo's explanation with the bundled model (``HedgedClassifier.explain``).

Rows, each the median over the photos and ``--repeats`` passes (one warm-up pass):

* ``predict``       the hedged answer alone (``clf.predict``), for scale;
* ``gradcam``       ``clf.explain(photo)``: the answer, then Grad-CAM of the answered node
                    and of its two most probable children, averaged over the bundle's TTA
                    views and resampled onto the photo (the goal is <= 3 s on 2 cores);
* ``gradcam+png``   the same plus drawing the 2 x 2 PNG (what ``predict.py --explain`` does);
* ``ig (N steps)``  ``clf.explain(photo, method="integrated_gradients", n_steps=N)``.

The photos are those in examples/ and tests/fixtures (8 JPEGs, a few hundred pixels).

    python bench/bench_explain.py --out bench/results/explain.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _machine import cpu_model  # noqa: E402  (bench/ is sys.path[0] for a script)
from hedged.classifier import HedgedClassifier  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--n-photos", type=int, default=8, help="how many of the 8 example/fixture photos (default: all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ig-steps", type=int, default=64, help="integrated-gradients path points (default: %(default)s)")
    p.add_argument("--ig-photos", type=int, default=2, help="photos for the slow IG row (default: %(default)s; 0 skips it)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    photos = (sorted((REPO / "examples").glob("*.jpg")) + sorted((REPO / "tests" / "fixtures").glob("*.jpg")))
    photos = photos[: args.n_photos]
    clf = HedgedClassifier.from_bundle(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-explain-"))

    def png(photo):
        clf.explain(photo).save(tmp / f"{photo.stem}.png")

    stages = {
        "predict": (lambda ph: clf.predict(ph), photos),
        "gradcam": (lambda ph: clf.explain(ph), photos),
        "gradcam+png": (png, photos),
    }
    if args.ig_photos:
        stages[f"ig ({args.ig_steps} steps)"] = (
            lambda ph: clf.explain(ph, method="integrated_gradients", n_steps=args.ig_steps),
            photos[: args.ig_photos],
        )
    times: dict[str, list[float]] = {name: [] for name in stages}
    for rep in range(args.repeats + 1):
        # Stages interleave so that load from other processes drifts over all of them alike.
        for name, (fn, todo) in stages.items():
            if name.startswith("ig") and rep == 0:
                continue  # the IG row is long; its first pass is already warm
            for photo in todo:
                t0 = time.perf_counter()
                fn(photo)
                if rep:
                    times[name].append(time.perf_counter() - t0)
    rows = [
        {"name": name, "median_s": statistics.median(ts), "max_s": max(ts), "n": len(ts)}
        for name, ts in times.items()
    ]
    meta = {
        "model": f"bundle {clf.bundle_.arch}", "input_size": clf.preprocess.input_size,
        "tta_angles": list(clf.tta_angles), "photos": [ph.name for ph in photos],
        "repeats": args.repeats, "ig_steps": args.ig_steps, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": cpu_model(),
        "load_average": list(os.getloadavg()),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
    }
    for r in rows:
        print(f"{r['name']:<18} median {r['median_s']:7.2f} s   max {r['max_s']:7.2f} s   ({r['n']} runs)")
    print(f"load average at the end: {meta['load_average']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
