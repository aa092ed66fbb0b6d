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
functions, with a more permissive candidate search and a verification step
(:func:`inspect_images`, :func:`verified_pairs`): pairs whose hashes are merely close
are confirmed by local features (ORB keypoints matched under a similarity transform
with RANSAC, OpenCV), which tells a resized, re-encoded or slightly cropped copy from
another garment photographed on the same floor.
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


# ---------------------------------------------------------------- the full check

#: Candidate pairs for verification: both hashes within these bits, or either one very close.
CANDIDATE_BOTH = (16, 16)
CANDIDATE_EITHER = 10
#: RANSAC inliers (ORB matches consistent with one similarity transform) that confirm a copy.
MIN_INLIERS = 10
#: Side of the image the local features are read on.
FEATURE_SIDE = 256
#: Shorter side under which an image is reported as tiny.
TINY = 32


@dataclass
class ImageInfo:
    """What one decode of a file tells: hashes, size, mode, EXIF rotation, problems, local features."""

    sha256: str = ""
    phash: int = 0
    dhash: int = 0
    width: int = 0
    height: int = 0
    mode: str = ""
    exif_rotated: bool = False
    error: str = ""
    keypoints: np.ndarray | None = None
    descriptors: np.ndarray | None = None
    gray: np.ndarray | None = None  # the greyscale image the features were read on (uint8)


def _orb():
    from hedged.models.extras import require

    require("cv2", "the duplicate check's verification", "data")
    import cv2

    return cv2, cv2.ORB_create(nfeatures=500)


def inspect_image(path, orb=None) -> ImageInfo:
    """Decode ``path`` once (reduced size): its hashes, header facts and, with ``orb``, ORB features."""
    import io

    import imagehash
    from PIL import Image, ImageOps

    info = ImageInfo()
    try:
        data = Path(path).read_bytes()
        info.sha256 = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            info.mode = im.mode
            try:
                info.exif_rotated = int(im.getexif().get(0x0112, 1)) not in (0, 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken photo
                info.exif_rotated = False
            im.draft("RGB", (FEATURE_SIDE, FEATURE_SIDE))
            im = ImageOps.exif_transpose(im)
            im.load()  # truncated data fails here
            info.width, info.height = im.size
            small = im.convert("RGB")
        small.thumbnail((FEATURE_SIDE, FEATURE_SIDE))
        gray = small.convert("L")
        info.phash, info.dhash = _bits(imagehash.phash(gray)), _bits(imagehash.dhash(gray))
        if orb is not None:
            info.gray = np.asarray(gray)
            kp, des = orb.detectAndCompute(info.gray, None)
            info.keypoints = np.float32([k.pt for k in kp]).reshape(-1, 2)
            info.descriptors = des
    except Exception as e:  # noqa: BLE001 - reported per file, the others go on
        info.error = f"{type(e).__name__}: {e}".splitlines()[0]
    return info


def inspect_images(paths, progress=None, features: bool = True) -> list[ImageInfo]:
    """:func:`inspect_image` for every path (ORB features when ``features``)."""
    orb = _orb()[1] if features else None
    out = []
    for k, p in enumerate(paths):
        out.append(inspect_image(p, orb))
        if progress is not None:
            progress(k + 1, len(paths))
    return out


#: After alignment, the central part of the two photos must agree this well (Pearson r of the
#: pixels): keypoints on a shared bedspread, hanger or floor align two *different* garments
#: too. Measured: planted copies (resized, cropped, re-encoded at quality 40-95) 0.925-0.999;
#: different garments on one background 0.80-0.89 (docs/data.md).
MIN_ALIGNED_CORRELATION = 0.91


def _inliers(cv2, matcher, a: ImageInfo, b: ImageInfo) -> int:
    """RANSAC inliers of a similarity mapping ``a``'s keypoints onto ``b``'s; 0 unless the photos,
    aligned by it, also agree pixel by pixel in their central part (where the garment is)."""
    if a.descriptors is None or b.descriptors is None or len(a.descriptors) < 8 or len(b.descriptors) < 8:
        return 0
    pairs = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m for m, n in (x for x in pairs if len(x) == 2) if m.distance < 0.75 * n.distance]
    if len(good) < 4:
        return 0
    src = a.keypoints[[m.queryIdx for m in good]]
    dst = b.keypoints[[m.trainIdx for m in good]]
    M, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0)
    if mask is None or M is None:
        return 0
    n = int(mask.sum())
    if n < MIN_INLIERS or a.gray is None or b.gray is None:
        return n
    h, w = a.gray.shape
    # b brought into a's frame (M maps a -> b, so warp with its inverse)
    y0, y1, x0, x1 = int(0.2 * h), int(0.8 * h), int(0.2 * w), int(0.8 * w)
    pa = a.gray[y0:y1, x0:x1].astype(np.float64).ravel()
    pb = cv2.warpAffine(b.gray, M, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)[y0:y1, x0:x1]
    pb = pb.astype(np.float64).ravel()
    if pa.std() < 1e-6 or pb.std() < 1e-6:
        return 0
    r = float(np.corrcoef(pa, pb)[0, 1])
    return n if r >= MIN_ALIGNED_CORRELATION else 0


def verified_pairs(infos: list[ImageInfo], progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Copies among ``infos``: exact (same bytes) and near (close hashes confirmed by local features).

    Returns ``(pairs, inliers)``: ``(P, 2)`` index pairs ``i < j`` and the RANSAC inliers of
    each (a large number for exact copies).
    """
    cv2, _ = _orb()
    ok = np.array([i for i, x in enumerate(infos) if not x.error], dtype=np.int64)
    ph = np.array([infos[i].phash for i in ok], dtype=np.uint64)
    dh = np.array([infos[i].dhash for i in ok], dtype=np.uint64)
    both = hamming_pairs(ph, dh, *CANDIDATE_BOTH)
    either = hamming_pairs(ph, dh, CANDIDATE_EITHER, CANDIDATE_EITHER, both=False)
    cand = np.unique(np.concatenate([both, either]), axis=0) if len(both) + len(either) else np.zeros((0, 2), int)
    cand = ok[cand] if len(cand) else cand
    sha = {}
    for i in ok:
        sha.setdefault(infos[i].sha256, []).append(i)
    exact = {(a, b) for group in sha.values() for k, a in enumerate(group) for b in group[k + 1:]}
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs, counts = [], []
    for k, (a, b) in enumerate(map(tuple, cand)):
        n = 10_000 if (a, b) in exact else _inliers(cv2, matcher, infos[a], infos[b])
        if n >= MIN_INLIERS:
            pairs.append((a, b))
            counts.append(n)
        if progress is not None:
            progress(k + 1, len(cand))
    for a, b in exact - set(pairs):
        pairs.append((a, b))
        counts.append(10_000)
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.array(pairs)[:, 1], np.array(pairs)[:, 0]))
    return np.array(pairs, dtype=np.int64)[order], np.array(counts, dtype=np.int64)[order]
