"""Labelled image collections (CSV or ImageFolder) and group-aware splits.

Two layouts are read:

* a CSV (a ``.csv`` file, or a directory holding ``images.csv``) with an image
  column, a label column and optionally a group column. An image entry is a path
  relative to the CSV's directory; an entry without a file suffix, or one that
  is not found there, is also looked for under ``images/`` and with ``.jpg``
  (the clothing data set: ``image`` -> ``images/<image>.jpg``).
* an ImageFolder tree: ``root/<label>/<image>``; every image is its own group.

Splits keep every group (e.g. the photographer, ``sender_id``) inside one split,
so validation and test measure accuracy on unseen contributors.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPLITS = ("train", "validation", "calibration", "test")
# Image shares of train / validation / calibration / test, with HELDOUT_MAX_SIZE: chosen
# for the contributor-level guarantee (docs/hedging.md, "Designing the calibration
# split"): on the clothing data, calibration holds 117 contributors (the bound's
# sampling unit) instead of 65.
DEFAULT_FRACTIONS = (0.62, 0.075, 0.2, 0.105)
#: Contributors with more photos than this train the model and are never held out.
HELDOUT_MAX_SIZE = 50
GROUP_COLUMN_GUESSES = ("sender_id", "group")


class DatasetError(ValueError):
    """A data set cannot be read: missing files/columns, empty, or unsplittable."""


@dataclass
class ImageDataset:
    """Parallel arrays describing a labelled image collection.

    Attributes
    ----------
    paths : np.ndarray of str
        Image file paths.
    labels : np.ndarray of str
        Dataset labels as written (mapped to taxonomy leaves by ``resolve_labels``).
    groups : np.ndarray of str
        Group of each image (split unit).
    ids : np.ndarray of str
        Stable image identifiers (the CSV entry, or the path relative to the root).
    source : str
        The CSV file or folder read.
    sha256 : str
        sha256 of the CSV file, or of the sorted ``label/relative path`` list for a folder.
    group_column : str or None
    """

    paths: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    ids: np.ndarray
    source: str
    sha256: str
    group_column: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index) -> ImageDataset:
        index = np.asarray(index)
        return ImageDataset(
            self.paths[index], self.labels[index], self.groups[index], self.ids[index],
            self.source, self.sha256, self.group_column,
        )


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve_image(root: Path, entry: str) -> Path | None:
    candidates = [root / entry, root / "images" / entry]
    if not Path(entry).suffix:
        candidates += [c.with_name(c.name + ".jpg") for c in candidates]
    for c in candidates:
        if c.is_file():
            return c
    return None


def read_csv_dataset(
    csv_path, image_column: str = "image", label_column: str = "label", group_column: str | None = None
) -> ImageDataset:
    """Read a CSV data set (see the module docstring for how image entries are resolved).

    ``group_column=None`` uses ``sender_id`` or ``group`` when present, else one
    group per image.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CSV file not found: {str(csv_path)!r}")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    for col, what in ((image_column, "image"), (label_column, "label")):
        if col not in columns:
            raise DatasetError(f"{csv_path.name} has no {what} column {col!r} (columns: {', '.join(columns)})")
    if group_column is None:
        group_column = next((c for c in GROUP_COLUMN_GUESSES if c in columns), None)
    elif group_column not in columns:
        raise DatasetError(f"{csv_path.name} has no group column {group_column!r} (columns: {', '.join(columns)})")
    if not rows:
        raise DatasetError(f"{csv_path.name} has no rows")
    root = csv_path.parent
    ids = np.array([r[image_column].strip() for r in rows])
    paths = [_resolve_image(root, i) for i in ids]
    missing = [i for i, p in zip(ids, paths) if p is None]
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) listed in {csv_path.name} not found under {str(root)!r}, e.g. {missing[0]!r}"
        )
    labels = np.array([r[label_column].strip() for r in rows])
    groups = np.array([r[group_column].strip() for r in rows]) if group_column else ids.copy()
    return ImageDataset(
        np.array([str(p) for p in paths]), labels, groups, ids, str(csv_path), sha256_file(csv_path), group_column
    )


def read_image_folder(root) -> ImageDataset:
    """Read ``root/<label>/<image>``; labels are the folder names, one group per image."""
    root = Path(root)
    items = sorted(
        (d.name, p)
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".")
        for p in d.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not items:
        raise DatasetError(f"no images found in class subfolders of {str(root)!r}")
    ids = np.array([str(p.relative_to(root)) for _, p in items])
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return ImageDataset(
        np.array([str(p) for _, p in items]), np.array([lab for lab, _ in items]), ids.copy(), ids,
        str(root), digest, None,
    )


def load_dataset(path, image_column: str = "image", label_column: str = "label", group_column: str | None = None):
    """A CSV file, a directory holding ``images.csv`` (or exactly one CSV), or an ImageFolder tree."""
    path = Path(path)
    if path.is_file():
        return read_csv_dataset(path, image_column, label_column, group_column)
    if not path.is_dir():
        raise DatasetError(f"data path not found: {str(path)!r}")
    csvs = [path / "images.csv"] if (path / "images.csv").is_file() else sorted(path.glob("*.csv"))
    if len(csvs) == 1:
        return read_csv_dataset(csvs[0], image_column, label_column, group_column)
    if len(csvs) > 1:
        raise DatasetError(f"{str(path)!r} holds several CSV files; pass one of them: {[c.name for c in csvs]}")
    if group_column is not None:
        raise DatasetError("--group-column needs a CSV data set; an ImageFolder tree has one group per image")
    return read_image_folder(path)


def check_fractions(fractions) -> tuple[float, ...]:
    f = tuple(float(x) for x in fractions)
    if len(f) != len(SPLITS) or any(not x > 0 for x in f) or abs(sum(f) - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must be {len(SPLITS)} positive numbers summing to 1 "
                           f"({'/'.join(SPLITS)}), got {list(fractions)}")
    return f


def split_by_group(groups, fractions=DEFAULT_FRACTIONS, seed: int = 0, labels=None,
                   heldout_max_size: int | None = None) -> dict[str, np.ndarray]:
    """Partition sample indices into train/validation/calibration/test, whole groups only.

    Groups are taken from the largest down (ties in a seeded random order) and each
    goes to the split where it does the most good: without ``labels``, the split
    furthest below its target share of *images*; with ``labels``, the split whose
    per-class counts it brings closest to ``fraction * class total`` (each class
    weighted by 1 / its total, so a rare class counts as much as a common one),
    which keeps every class in every split in proportion as far as whole groups
    allow. With very unequal groups (one contributor with 15% of the photos) this
    keeps the image shares close to ``fractions``, which counting groups would not,
    and the largest contributors land in train, so the evaluation splits hold many
    contributors.

    With ``heldout_max_size`` (the design for the contributor-level guarantee,
    docs/hedging.md): groups of more than that many samples go to train, and the
    other groups are taken in a seeded random order (not largest first), each to
    the split where it does the most good as above. The held-out splits are then a
    randomised, class-balanced sample of the contributors with at most
    ``heldout_max_size`` photos, so calibration holds many contributors (what a
    bound over contributors needs) and no single seller dominates it.

    Parameters
    ----------
    groups : array-like
        Group label of each sample.
    fractions : 4 floats summing to 1
        Target image shares of train, validation, calibration, test.
    seed : int
    labels : array-like of int, optional
        Class of each sample (``>= 0``) to stratify on.
    heldout_max_size : int, optional
        Larger groups can only go to train.

    Returns
    -------
    dict
        Split name -> sorted int array of sample indices.

    Raises
    ------
    DatasetError
        Fewer groups than splits, bad fractions, or ``labels`` of another length.
    """
    fractions = np.array(check_fractions(fractions))
    groups = np.asarray(groups)
    uniq, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(uniq) < len(SPLITS):
        raise DatasetError(f"need at least {len(SPLITS)} groups to split, got {len(uniq)}")
    if labels is None:
        counts = sizes[:, None].astype(float)  # one pseudo-class: image shares only
    else:
        labels = np.asarray(labels)
        if labels.shape != groups.shape:
            raise DatasetError(f"labels must have one entry per sample ({len(groups)}), got shape {labels.shape}")
        if labels.size and labels.min() < 0:
            raise DatasetError("labels must be class indices >= 0")
        counts = np.zeros((len(uniq), int(labels.max()) + 1 if labels.size else 1))
        np.add.at(counts, (inverse, labels), 1.0)
    totals = counts.sum(0)
    weight = 1.0 / np.maximum(totals, 1.0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    if heldout_max_size is None:
        order = order[np.argsort(-sizes[order], kind="stable")]
    else:
        if isinstance(heldout_max_size, bool) or int(heldout_max_size) < 1:
            raise DatasetError(f"heldout_max_size must be a positive integer, got {heldout_max_size!r}")
        big = sizes[order] > heldout_max_size
        # the prolific groups first (to train), then the others in the random order
        order = np.r_[order[big][np.argsort(-sizes[order][big], kind="stable")], order[~big]]
        if np.count_nonzero(sizes <= heldout_max_size) < len(SPLITS) - 1:
            raise DatasetError(f"need at least {len(SPLITS) - 1} groups of at most {heldout_max_size} samples "
                               "for the held-out splits")
    target = fractions[:, None] * totals[None, :]  # (split, class)
    filled = np.zeros_like(target)
    empty = set(range(len(SPLITS)))
    assign = np.empty(len(uniq), dtype=int)
    remaining = len(uniq)
    for g in order:
        if heldout_max_size is not None and sizes[g] > heldout_max_size:
            options = np.array([0])
        elif len(empty) >= remaining:  # keep enough groups back that no split stays empty
            options = np.array(sorted(empty))
        else:
            options = np.arange(len(SPLITS))
        # change in the weighted squared distance to the targets if g joins split s;
        # the image-share deficit breaks ties (and decides alone without labels)
        before = ((filled[options] - target[options]) ** 2 * weight).sum(1)
        after = ((filled[options] + counts[g] - target[options]) ** 2 * weight).sum(1)
        deficit = filled[options].sum(1) - target[options].sum(1)
        s = int(options[np.lexsort((deficit, np.round(after - before, 9)))[0]])
        assign[g] = s
        filled[s] += counts[g]
        empty.discard(s)
        remaining -= 1
    per_sample = assign[inverse]
    return {name: np.flatnonzero(per_sample == i) for i, name in enumerate(SPLITS)}
