"""Write the non-clothing image set used to fit and test the out-of-taxonomy detector.

Nothing is downloaded: the images are generated (solid colours, gradients, noise,
stripes, colour wheels, shapes, text, charts) or cut from images that ship inside
installed packages (scikit-learn's sample photos, matplotlib's sample data, the
Adwaita icon theme, networkx/sympy test baselines). Two disjoint halves::

    fit/   seeds and sources used to fit the detector (china.jpg crops, odd icons, ...)
    eval/  other seeds and other sources, only for measuring it (flower.jpg crops, ...)

Run from the repository root (deterministic; rewrites both folders)::

    python bench/not_clothing.py --out tests/fixtures/not_clothing
"""

from __future__ import annotations

import argparse
import colorsys
import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 192
WORDS = "invoice total receipt meeting notes chapter price order delivery menu coffee report page".split()


def _rgb(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def solid(rng, i):
    fixed = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (20, 20, 20)]
    return Image.new("RGB", (SIZE, SIZE), fixed[i] if i < len(fixed) else _rgb(rng))


def gradient(rng, i):
    a, b = np.array(_rgb(rng), float), np.array(_rgb(rng), float)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    if i % 2:
        t = np.hypot(xx - rng.random(), yy - rng.random()).clip(0, 1)  # radial
    else:
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(ang) + yy * np.sin(ang)
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
    return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))


def noise(rng, i):
    kind = i % 4
    if kind == 0:
        arr = rng.integers(0, 256, (SIZE, SIZE, 3))
    elif kind == 1:
        arr = np.repeat(rng.integers(0, 256, (SIZE, SIZE, 1)), 3, 2)
    elif kind == 2:
        arr = rng.normal(128, 40, (SIZE, SIZE, 3)).clip(0, 255)
    else:
        arr = np.where(rng.random((SIZE, SIZE, 1)) < 0.5, 0, 255).repeat(3, 2)  # salt and pepper
    return Image.fromarray(arr.astype(np.uint8))


def smooth_noise(rng, i):
    small = rng.integers(0, 256, (int(rng.integers(3, 12)),) * 2 + (3,)).astype(np.uint8)
    return Image.fromarray(small).resize((SIZE, SIZE), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))


def stripes(rng, i):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    period = int(rng.integers(6, 48))
    a, b = np.array(_rgb(rng)), np.array(_rgb(rng))
    if i % 3 == 0:
        mask = ((xx // period) + (yy // period)) % 2  # checkerboard
    else:
        ang = rng.uniform(0, np.pi)
        mask = ((xx * np.cos(ang) + yy * np.sin(ang)) // period) % 2
    return Image.fromarray(np.where(mask[..., None] == 1, a, b).astype(np.uint8))


def colour_wheel(rng, i):
    yy, xx = (np.mgrid[0:SIZE, 0:SIZE] - SIZE / 2) / (SIZE / 2)
    hue = (np.arctan2(yy, xx) / (2 * np.pi) + rng.random()) % 1.0
    sat = np.hypot(xx, yy).clip(0, 1) if i % 2 else np.ones_like(xx)
    val = np.where(np.hypot(xx, yy) <= 1, 1.0, float(i % 3 == 0))
    rgb = np.vectorize(colorsys.hsv_to_rgb)(hue, sat, val)
    return Image.fromarray((np.stack(rgb, -1) * 255).astype(np.uint8))


def shapes(rng, i):
    im = Image.new("RGB", (SIZE, SIZE), _rgb(rng))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 8))):
        x0, y0 = rng.integers(0, SIZE - 20, 2)
        x1, y1 = x0 + rng.integers(15, SIZE), y0 + rng.integers(15, SIZE)
        box = [int(x0), int(y0), int(x1), int(y1)]
        kind = rng.integers(0, 3)
        if kind == 0:
            d.ellipse(box, fill=_rgb(rng))
        elif kind == 1:
            d.rectangle(box, fill=_rgb(rng))
        else:
            d.polygon([tuple(int(v) for v in rng.integers(0, SIZE, 2)) for _ in range(3)], fill=_rgb(rng))
    return im


def text(rng, i):
    from PIL import ImageFont

    bg = (255, 255, 255) if i % 2 else tuple(int(v) for v in rng.integers(180, 256, 3))
    im = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=int(rng.integers(10, 22)))
    y = 4
    while y < SIZE - 10:
        line = " ".join(rng.choice(WORDS, int(rng.integers(2, 5))))
        d.text((4, y), line, fill=(0, 0, 0) if i % 3 else _rgb(rng), font=font)
        y += int(rng.integers(14, 26))
    return im


def chart(rng, i):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.4, 2.4), dpi=80)
    kind = i % 4
    x = np.arange(12)
    if kind == 0:
        ax.plot(x, rng.normal(size=(12, 3)).cumsum(0))
    elif kind == 1:
        ax.bar(x, rng.random(12), color=[np.array(_rgb(rng)) / 255])
    elif kind == 2:
        ax.scatter(*rng.normal(size=(2, 80)), c=rng.random(80), s=12)
    else:
        ax.pie(rng.random(5) + 0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image.open(buf).convert("RGB").resize((SIZE, SIZE))


def raster(rng, i, source):
    """A colour-mapped crop of an elevation model / scan from matplotlib's sample data."""
    import matplotlib

    from matplotlib import cbook

    if source == "s1045.ima.gz":
        with cbook.get_sample_data(source) as f:  # opened as a GzipFile already
            arr = np.frombuffer(f.read(), np.uint16)[: 256 * 256].reshape(256, 256).astype(float)
    else:
        z = cbook.get_sample_data(source)
        arr = np.asarray(z["elevation" if "elevation" in z.files else "topo"], float)
    h, w = arr.shape
    s = int(rng.integers(min(h, w) // 3, min(h, w)))
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    crop = arr[y : y + s, x : x + s]
    crop = (crop - crop.min()) / (np.ptp(crop) + 1e-9)
    cmap = matplotlib.colormaps[rng.choice(["terrain", "gray", "viridis", "gist_earth", "bone"])]
    return Image.fromarray((cmap(crop)[..., :3] * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)


def photo_crop(rng, i, name):
    from sklearn.datasets import load_sample_image

    arr = load_sample_image(name)
    h, w = arr.shape[:2]
    s = int(rng.integers(h // 4, h))
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    im = Image.fromarray(arr[y : y + s, x : x + s])
    return (im.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else im).resize((SIZE, SIZE), Image.BICUBIC)


def on_background(path: Path, rng) -> Image.Image:
    im = Image.open(path).convert("RGBA")
    bg = Image.new("RGBA", im.size, tuple(int(v) for v in rng.integers(200, 256, 3)) + (255,))
    return Image.alpha_composite(bg, im).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)


GENERATED = {
    "solid": (solid, 6),
    "gradient": (gradient, 8),
    "noise": (noise, 8),
    "smoothnoise": (smooth_noise, 8),
    "stripes": (stripes, 8),
    "wheel": (colour_wheel, 6),
    "shapes": (shapes, 10),
    "text": (text, 8),
    "chart": (chart, 8),
}


def packaged_files(split: str) -> list[tuple[str, Path]]:
    """Icons and test baselines from installed packages, alternately to fit / eval."""
    out = []
    icons = Path("/usr/share/icons/Adwaita/512x512")
    for folder in ("devices", "places"):
        files = sorted((icons / folder).glob("*.png")) if icons.is_dir() else []
        out += [(f"icon-{p.stem}", p) for p in files[(split == "eval") :: 2]]
    if split == "eval":
        import networkx
        import sympy

        for pkg, sub in ((networkx, "drawing/tests/baseline"), (sympy, "plotting/tests")):
            folder = Path(pkg.__file__).parent / sub
            out += [(f"{pkg.__name__}-{p.stem}", p) for p in sorted(folder.glob("*.png"))]
    return out


def write(out: Path, split: str, seed: int) -> int:
    folder = out / split
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n = 0

    def save(name, im):
        nonlocal n
        im.save(folder / f"{name}.jpg", quality=80)
        n += 1

    for family, (fn, count) in GENERATED.items():
        for i in range(count):
            save(f"{family}-{i:02d}", fn(rng, i))
    photo = "china.jpg" if split == "fit" else "flower.jpg"
    for i in range(12):
        save(f"photo-{Path(photo).stem}-{i:02d}", photo_crop(rng, i, photo))
    rasters = ["jacksboro_fault_dem.npz"] if split == "fit" else ["topobathy.npz", "s1045.ima.gz"]
    for source in rasters:
        for i in range(6 // len(rasters)):
            save(f"raster-{source.split('.')[0]}-{i:02d}", raster(rng, i, source))
    for name, path in packaged_files(split):
        save(name, on_background(path, rng))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/not_clothing"))
    args = ap.parse_args()
    for split, seed in (("fit", 1), ("eval", 2)):
        print(split, write(args.out, split, seed))


if __name__ == "__main__":
    main()
