"""hedged data check: time on the shared photos, and recall / false pairs on planted near duplicates.

    python bench/bench_data_check.py --data ../shared/data/clothing --out bench/results/data_check.json

1. The full check of the data set (every photo decoded once, duplicates verified), timed.
2. For each seed: 500 shared photos copied, 60 of them planted again as near duplicates
   (resized 50-150%, up to 5% cropped per side, brightness +-10%, JPEG quality 40-95; the
   issue's recipe), the check run on the 560: how many planted copies are found, and how
   many reported pairs join two of the unmodified photos (the contact sheet
   ``<out>.unmodified.png`` shows them for the eye: re-shoots of one garment are true).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hedged.data_check import check_data, contact_sheet  # noqa: E402
from test_data_check import planted_copy, write_csv  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    full = check_data(args.data)
    out = {"full_check": {"n_images": full["n_images"], "seconds": time.perf_counter() - t0,
                          "pairs": full["pairs"], "summary": full["summary"]}, "planted": []}
    print(f"full check: {full['n_images']} photos in {out['full_check']['seconds']:.1f} s; {full['summary']}")
    rows = list(csv.DictReader(open(args.data / "images.csv")))
    unmodified_groups = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(rows), 500, replace=False)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "images").mkdir()
            entries = []
            for k, i in enumerate(pick):
                shutil.copyfile(args.data / "images" / f"{rows[i]['image']}.jpg", root / "images" / f"o{k}.jpg")
                entries.append([f"o{k}", rows[i]["sender_id"], rows[i]["label"]])
            for k in range(60):
                (root / "images" / f"p{k}.jpg").write_bytes(planted_copy(root / "images" / f"o{k}.jpg", rng))
                entries.append([f"p{k}", f"planted{k}", entries[k][2]])
            write_csv(root, entries)
            report = check_data(root)
            groups = report["duplicate_groups"]
            found = sum(any({f"o{k}", f"p{k}"} <= set(g["images"]) for g in groups) for k in range(60))
            others = [g for g in groups if not any(i.startswith("p") for i in g["images"])]
            reported = sum(len(g["images"]) - 1 for g in groups)
            for g in others:  # keep the photos for the sheet
                g["paths"] = [str(args.data / "images" / f"{rows[pick[int(i[1:])]]['image']}.jpg") for i in g["images"]]
            unmodified_groups += others
            row = {"seed": seed, "planted": 60, "found": found, "recall": found / 60,
                   "reported_pairs": reported, "pairs_between_unmodified_photos": len(others)}
            out["planted"].append(row)
            print(row)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
        if unmodified_groups:
            contact_sheet(unmodified_groups, args.out.with_suffix(".unmodified.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
