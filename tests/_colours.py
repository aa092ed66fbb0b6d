"""A tiny synthetic photo data set for train.py tests: flat-colour JPEGs with noise,
10 contributors x 3 colours x 2 photos, laid out like ../shared/data/clothing."""

import csv

import numpy as np
from PIL import Image

TAXONOMY = """\
format: hedged-taxonomy/1
name: things
children:
  warm:
    children:
      red: {aliases: [Red]}
      yellow: {aliases: [Yellow]}
  blue: {aliases: [Blue]}
"""
COLORS = {"Red": (220, 30, 30), "Yellow": (230, 220, 40), "Blue": (30, 40, 220)}


def make_colour_dataset(root, *, not_sure: bool = False):
    """Write images/, images.csv and tax.yaml under ``root``; ``not_sure`` adds one
    "Not sure" row per contributor (no leaf: dropped and counted by train.py)."""
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for g in range(10):
        for label, rgb in COLORS.items():
            for j in range(2):
                name = f"g{g}_{label}_{j}"
                noise = rng.integers(-20, 20, size=(40, 48, 3))
                Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(root / "images" / f"{name}.jpg")
                rows.append((name, f"s{g}", label))
        if not_sure:
            rows.append((f"g{g}_Red_0", f"s{g}", "Not sure"))
    with open(root / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "sender_id", "label"])
        w.writerows(rows)
    (root / "tax.yaml").write_text(TAXONOMY)
    return root
