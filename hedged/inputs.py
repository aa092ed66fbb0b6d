"""Turn command-line arguments (files, directories, globs) into a list of images."""

from __future__ import annotations

import glob
import os
from pathlib import Path

# HEIC/HEIF (pillow-heif) and AVIF (Pillow) are phone formats: found in
# directories like the others, never skipped silently.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
     ".heic", ".heif", ".avif"}
)
_GLOB_CHARS = frozenset("*?[")


def is_image_file(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _images_in(directory: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and is_image_file(f))
    return found


def expand_inputs(args, *, repeats: dict | None = None) -> list[tuple[str, str | None]]:
    """Expand paths, directories (recursively, image extensions only) and globs.

    Parameters
    ----------
    args : iterable of str
        As given on the command line; the order is kept, files inside a
        directory or matched by a glob are sorted.

    Returns
    -------
    list of (path, error)
        ``error`` is ``None`` for an input to classify, else why the argument
        gave nothing (missing file, empty directory, glob without matches). A
        file named explicitly is passed on whatever its extension, so that an
        unreadable one is reported rather than silently skipped.

    A path met more than once (named twice, or also inside a named directory)
    is kept once, at its first place; ``repeats``, when given, receives
    ``path -> times met`` for those paths, so that the caller can say so.
    """
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.normpath(path)
        if key not in seen:
            seen.add(key)
            out.append((path, None))
        elif repeats is not None:
            repeats[path] = repeats.get(path, 1) + 1

    for arg in args:
        arg = os.fspath(arg)
        path = Path(arg)
        if path.is_dir():
            images = _images_in(path)
            if not images:
                out.append((arg, "no image files in directory"))
            for f in images:
                add(f)
        elif path.exists():
            add(arg)
        elif _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            files = [m for m in matches if os.path.isfile(m) and is_image_file(m)]
            for d in (m for m in matches if os.path.isdir(m)):
                files.extend(_images_in(Path(d)))
            if not files:
                out.append((arg, "no image files match this pattern"))
            for f in files:
                add(f)
        else:
            out.append((arg, "file not found"))
    return out
