"""The out-of-taxonomy rates of a bundle as shipped (its stored detector on its own model).

An exported bundle copies the torch bundle's detector, fitted on the torch model's
features; this measures it on the exported model: the share of the non-clothing
evaluation images judged outside (goal >= 95 %) and of the test-split clothing photos
judged outside (goal <= 2 %).

    python bench/experiments/ood_default.py --data ../shared/data/clothing --out bench/results/ood_default.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=None, help="default: the default bundle")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from hedged import HedgedClassifier

    clf = HedgedClassifier.from_bundle(args.bundle)
    others = sorted((ROOT / "tests/fixtures/not_clothing/eval").glob("*"))
    test = [Path(args.data) / "images" / f"{i}.jpg" for i in clf.bundle_.split["test"]]
    out = {}
    for name, paths in (("not_clothing_eval", others), ("clothing_test", test)):
        preds = clf.predict(paths, errors="collect")
        outside = sum(p.in_taxonomy is False for p in preds)
        out[name] = {"n": len(preds), "judged_outside": outside, "share": outside / len(preds)}
        print(f"{name}: {outside} / {len(preds)} judged outside ({outside / len(preds):.1%})", flush=True)
    out["bundle"] = str(clf.bundle_.path)
    out["command"] = "python bench/experiments/ood_default.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
