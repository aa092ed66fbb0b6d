"""Add anonymised contributor ids of the calibration photos to an existing bundle.

The bundle's split.json lists its calibration image ids in calibration.npz's
row order; the dataset CSV maps each image to its contributor (sender_id).
The ids are stored as salted sha256 hashes with a random salt that is thrown
away (``hedged.models.bundle.hash_groups``): the bundle can tell which
calibration photos share a contributor, never who that is. calibration.npz's
probs and labels are unchanged; its sha256 in bundle.json is updated.

    python scripts/add_bundle_groups.py models/bundles/clothing ../shared/data/clothing/images.csv

New bundles get the groups from train.py directly; this is for bundles made before.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from hedged.models.bundle import SPLIT, BundleError, add_calibration_groups, hash_groups, load_calibration_groups


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("csv", type=Path, help="dataset CSV with image and group columns")
    ap.add_argument("--image-column", default="image")
    ap.add_argument("--group-column", default="sender_id")
    args = ap.parse_args(argv)
    try:
        ids = json.loads((args.bundle / SPLIT).read_text())["calibration"]
        with open(args.csv, newline="", encoding="utf-8") as f:
            owner = {row[args.image_column]: row[args.group_column] for row in csv.DictReader(f)}
        missing = [i for i in ids if i not in owner]
        if missing:
            raise BundleError(f"{len(missing)} calibration images are not in {args.csv}, e.g. {missing[0]}")
        groups = hash_groups([owner[i] for i in ids])
        add_calibration_groups(args.bundle, groups)
    except (OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stored = load_calibration_groups(args.bundle)
    print(f"{args.bundle}: {stored.size} calibration photos from {np.unique(stored).size} contributors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
