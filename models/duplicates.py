"""Duplicate photos: content hashes, perceptual hashes, and the groups they force (torch-free).

A copy of a training photo in the calibration or test split makes the accuracy
guarantee and the reported accuracy optimistic, and a copy with two different
labels is noise the model cannot learn. This module finds

* **exact duplicates**: the same file bytes (SHA-256);
* **near duplicates**: photos whose perceptual hashes (``imagehash``'s pHash and
  dHash of the EXIF-rotated greyscale image, 64 bits each) are both within a
  small Hamming distance: re-encodings, resizes and copies with a changed
  brightness;

and turns them into **duplicate groups** (connected components, union-find), which
:func:`merge_groups` joins with the contributor groups so that a split never puts
two copies of one photo on both sides, and :func:`conflicts` lists the groups whose
copies carry different labels.

``hedged data check`` (:mod:`hedged.data_check`) builds its report on the same
functions, with a more permissive candidate search and a verification step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Near-duplicate thresholds used by training (Hamming distance in bits, both hashes).
STRICT_PHASH = 4
STRICT_DHASH = 4
#: Candidate pairs per block of the vectorised Hamming search.
_BLOCK = 512


@dataclass
class ImageHashes:
    """Per image: SHA-256 of the bytes, 64-bit pHash and dHash (0 where unreadable), and errors."""

    sha256: np.ndarray  # (n,) str
    phash: np.ndarray  # (n,) uint64
    dhash: np.ndarray  # (n,) uint64
    error: np.ndarray  # (n,) str, "" when the image decoded
    size: np.ndarray  # (n, 2) int, width and height after EXIF rotation (0 when unreadable)


def _bits(h) -> int:
    return int(np.packbits(np.asarray(h.hash, dtype=bool).ravel()).view(">u8")[0])


def hash_image(path) -> tuple[str, int, int, tuple[int, int]]:
    """SHA-256, pHash, dHash and (width, height) of one image file (raises on a bad image)."""
    import imagehash
    from PIL import Image, ImageOps

    data = Path(path).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    import io

    with Image.open(io.BytesIO(data)) as im:
        full = ImageOps.exif_transpose(im).size
        # JPEG draft mode decodes at reduced size: the hashes look at 32 x 32 pixels
        im.draft("L", (256, 256))
        g = ImageOps.exif_transpose(im).convert("L")
        return sha, _bits(imagehash.phash(g)), _bits(imagehash.dhash(g)), full


def hash_images(paths, progress=None) -> ImageHashes:
    """Hashes of every image; an unreadable one gets its error message and zero hashes."""
    n = len(paths)
    sha = np.empty(n, dtype=object)
    ph = np.zeros(n, dtype=np.uint64)
    dh = np.zeros(n, dtype=np.uint64)
    err = np.full(n, "", dtype=object)
    size = np.zeros((n, 2), dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            sha[i], ph[i], dh[i], size[i] = hash_image(p)
        except Exception as e:  # noqa: BLE001 - reported per file, the others go on
            sha[i] = ""
            err[i] = f"{type(e).__name__}: {e}".splitlines()[0]
        if progress is not None:
            progress(i + 1, n)
    return ImageHashes(sha.astype(str), ph, dh, err.astype(str), size)


def hamming_pairs(a: np.ndarray, b: np.ndarray, max_a: int, max_b: int, both: bool = True) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, whose hashes are within ``max_a`` (and/or ``max_b``) bits.

    Vectorised: blocks of rows against all later rows, XOR and ``bitwise_count``.
    """
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    n = a.size
    out = []
    for s in range(0, n, _BLOCK):
        e = min(s + _BLOCK, n)
        da = np.bitwise_count(a[s:e, None] ^ a[None, :])
        db = np.bitwise_count(b[s:e, None] ^ b[None, :])
        m = (da <= max_a) & (db <= max_b) if both else (da <= max_a) | (db <= max_b)
        m &= np.arange(n)[None, :] > np.arange(s, e)[:, None]
        i, j = np.nonzero(m)
        out.append(np.c_[i + s, j])
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def duplicate_pairs(h: ImageHashes, max_phash: int = STRICT_PHASH, max_dhash: int = STRICT_DHASH) -> np.ndarray:
    """Exact (same bytes) and near (both hashes close) duplicate pairs among readable images."""
    ok = np.flatnonzero(h.error == "")
    near = hamming_pairs(h.phash[ok], h.dhash[ok], max_phash, max_dhash)
    pairs = [ok[near]] if near.size else []
    _, inv = np.unique(h.sha256[ok], return_inverse=True)
    order = np.argsort(inv, kind="stable")
    same = inv[order][1:] == inv[order][:-1]
    if same.any():
        pairs.append(np.c_[ok[order][:-1][same], ok[order][1:][same]])
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.sort(np.concatenate(pairs), axis=1)
    return np.unique(p, axis=0)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` items under the edges ``pairs``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def merge_groups(groups, pairs) -> np.ndarray:
    """Contributor groups joined through duplicate pairs: copies always share a split.

    Returns one merged group id (a string naming the component's smallest original
    group) per sample; groups no duplicate touches keep their id.
    """
    groups = np.asarray(groups).astype(str)
    uniq, inv = np.unique(groups, return_inverse=True)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    comp = components(len(uniq), np.c_[inv[pairs[:, 0]], inv[pairs[:, 1]]] if len(pairs) else pairs)
    first = {}
    for gi, c in enumerate(comp):
        first.setdefault(c, uniq[gi])
    return np.array([first[c] for c in comp[inv]])


def conflicts(labels, pairs) -> list[np.ndarray]:
    """Duplicate groups (sample indices) whose copies carry more than one label."""
    labels = np.asarray(labels)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return []
    comp = components(len(labels), pairs)
    out = []
    touched = np.unique(pairs)
    for c in np.unique(comp[touched]):
        members = np.flatnonzero(comp == c)
        if len(np.unique(labels[members])) > 1:
            out.append(members)
    return out
