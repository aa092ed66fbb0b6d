"""Image loading that survives real uploads, and the model's input preprocessing.

:func:`load_image` turns anything a user may hand us (a path, raw bytes, a file
object, a PIL image, a numpy array, a torch tensor) into an 8-bit RGB PIL image, or
raises :class:`ImageLoadError` with a one-line message naming the source and the
problem. :class:`Preprocess` is the small serialisable recipe (input size, resize
policy, mean/std, interpolation) that travels with a model bundle and turns images
into normalised float tensors.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "ImageLoadError",
    "Preprocess",
    "load_image",
]

#: Refuse images above this many pixels: a 50-megapixel RGB image already needs
#: 150 MB decoded, and decompression bombs are tiny files that expand to gigabytes.
DEFAULT_MAX_PIXELS = 50_000_000

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: TensorFlow's EfficientNet-Lite preprocessing: (x - 127) / 128 on 0..255 pixels.
INCEPTION_MEAN = (127.0 / 255.0,) * 3
INCEPTION_STD = (128.0 / 255.0,) * 3

RESIZE_POLICIES = ("center_crop", "squash", "pad")
_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# Composite transparent images onto white: product photos with a cut-out background
# are meant to be seen on white, and black would read as a dark garment.
_BACKGROUND = (255, 255, 255)


#: Pixels above which a loaded image is reduced before it is kept (:meth:`Preprocess.reduce`).
WORKING_PIXELS = 16_000_000


class ImageLoadError(ValueError):
    """An input could not be turned into an RGB image (missing, corrupt, too large, bad array)."""


def _describe(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return repr(os.fspath(src))
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    name = getattr(src, "name", None)
    if isinstance(name, str):
        return repr(name)
    return f"<{type(src).__name__}>"


# ---------------------------------------------------------------------------
# loading

# ISO base media (ftyp box) brands of HEIC/HEIF photos, as iPhones write them.
# Pillow reads AVIF itself; HEIC needs the pillow-heif plugin, registered on the
# first HEIC file so that other images do not pay for importing it.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_heif_state: dict[str, bool] = {}


def _heif_ready(fp: Any) -> bool:
    """Whether ``fp`` holds a HEIF image and the plugin to read it is registered.

    Returns False for other files (the stream position is restored either way).
    Raises :class:`ImageLoadError` for a HEIC file when pillow-heif is missing.
    """
    try:
        pos = fp.tell()
        head = fp.read(12)
        fp.seek(pos)
    except (AttributeError, OSError, ValueError):
        return False
    if len(head) < 12 or head[4:8] != b"ftyp" or head[8:12] not in _HEIF_BRANDS:
        return False
    if "registered" not in _heif_state:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            _heif_state["registered"] = False
        else:
            register_heif_opener()
            _heif_state["registered"] = True
    if not _heif_state["registered"]:
        raise ImageLoadError(
            f"HEIC/HEIF image {_describe(fp)} needs the pillow-heif package (pip install pillow-heif)"
        )
    return True


def load_image(
    src: Any,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int | None = None,
) -> Image.Image:
    """Load ``src`` as an 8-bit RGB PIL image, upright and without transparency.

    Parameters
    ----------
    src : str, os.PathLike, bytes, file object, PIL.Image.Image, numpy.ndarray or torch.Tensor
        Arrays are ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4``; tensors ``CxHxW`` (or
        ``HxW``). Both are ``uint8`` (0..255), ``uint16`` (0..65535) or float/bool in
        [0, 1]. Four channels are RGBA.
    max_pixels : int or None
        Refuse images with more pixels (width x height) before decoding them; ``None``
        disables the check (PIL's own much larger limit still applies).
    min_size : int or None
        The smallest width and height the caller needs. For JPEG files much larger than
        that, the decoder downscales by 2, 4 or 8 while decoding (``Image.draft``),
        which is several times faster and keeps both sides >= ``min_size``.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``. EXIF orientation is applied; transparency is composited onto
        white; grayscale, palette, CMYK, 1-bit and 16-bit images are converted.

    Raises
    ------
    ImageLoadError
        Missing file, not an image, truncated/corrupt data, too many pixels, or an
        array/tensor of the wrong shape, dtype or value range.

    Examples
    --------
    >>> load_image(np.zeros((2, 3), dtype=np.uint8)).size
    (3, 2)
    """
    if isinstance(src, Image.Image):
        _check_pixels(src.size, max_pixels, src)
        return _to_rgb(src, src)
    if _is_torch_tensor(src):
        return load_image(_tensor_to_array(src), max_pixels=max_pixels)
    if isinstance(src, np.ndarray):
        _check_array_size(src, max_pixels)
        return _to_rgb(_array_to_pil(src), src)
    return _open(src, max_pixels, min_size)


def _open(src: Any, max_pixels: int | None, min_size: int | None) -> Image.Image:
    what = _describe(src)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageLoadError(f"image file not found: {what}")
        if path.is_dir():
            raise ImageLoadError(f"expected an image file, got a directory: {what}")
        if not path.is_file():
            # a FIFO, socket or device: opening it could block forever
            raise ImageLoadError(f"not a regular file: {what}")
        with open(path, "rb") as fh:  # closed even when decoding fails
            return _decode(fh, src, max_pixels, min_size)
    elif isinstance(src, (bytes, bytearray, memoryview)):
        fp = io.BytesIO(bytes(src))
    elif hasattr(src, "read"):
        fp = src
    else:
        raise ImageLoadError(
            f"cannot load an image from {type(src).__name__}; expected a path, bytes, a file "
            "object, a PIL image, a numpy array or a torch tensor"
        )
    return _decode(fp, src, max_pixels, min_size)


#: Pillow's own decompression-bomb check runs when a header is parsed; this loader
#: applies ``max_pixels`` itself (to the pixels it will decode), so Pillow's is lifted
#: for the moment of ``Image.open`` only, under this lock.
_OPEN_LOCK = threading.Lock()
#: Header pixels beyond which even a reduced JPEG decode is refused (a 200 MP phone
#: photo has 2e8; a JPEG header can claim 65535 x 65535).
MAX_HEADER_PIXELS = 1_000_000_000


def _open_header(fp: Any) -> Image.Image:
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(fp)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decoded_pixels(data: bytes, min_size: int | None = None) -> int:
    """Pixels an encoded image will take once decoded, from its header alone (0 if unreadable).

    JPEGs count at the reduced size draft decoding gives for ``min_size``; nothing is decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            fp = io.BytesIO(data)
            _heif_ready(fp)
            im = _open_header(fp)
            if min_size and im.format == "JPEG":
                im.draft("RGB", (min_size, min_size))
            w, h = im.size
            return int(w) * int(h)
    except Exception:  # noqa: BLE001 - an unreadable upload is reported when it is decoded
        return 0


def _decode(fp: Any, src: Any, max_pixels: int | None, min_size: int | None) -> Image.Image:
    what = _describe(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _heif_ready(fp)
            im = _open_header(fp)
            w, h = im.size
            if w * h > MAX_HEADER_PIXELS:
                raise ImageLoadError(f"image {what} claims {w}x{h} = {w * h:,} pixels, more than any photo "
                                     f"({MAX_HEADER_PIXELS:,}); refusing to decode it")
            if min_size and im.format == "JPEG":
                # Square request: draft keeps both sides >= min_size whatever the EXIF rotation.
                # A JPEG is then decoded at 1/2, 1/4 or 1/8 scale: the limit applies to what
                # is decoded, so a 64 or 200 MP phone photo is read at a few megapixels.
                im.draft("RGB", (min_size, min_size))
            _check_pixels(im.size, max_pixels, src, header=(w, h))
            im.load()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image {what} is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"not an image file (or an unsupported format): {what}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL reports truncated data as OSError("image file is truncated ...") and broken
        # headers as SyntaxError/ValueError depending on the plugin.
        raise ImageLoadError(f"truncated or corrupt image {what}: {exc}") from None
    return _to_rgb(im, src)


def _check_pixels(size: tuple[int, int], max_pixels: int | None, src: Any, header=None) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"image {_describe(src)} is empty ({w}x{h} pixels)")
    if max_pixels is not None and w * h > max_pixels:
        reduced = "" if header is None or tuple(header) == (w, h) else f" even decoded at reduced size from {header[0]}x{header[1]}"
        raise ImageLoadError(
            f"image {_describe(src)} has {w}x{h} = {w * h:,} pixels{reduced}, more than the limit of "
            f"{max_pixels:,} (raise the limit with max_pixels=... or --max-pixels)"
        )


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise good photo
        return im


def _to_rgb(im: Image.Image, src: Any) -> Image.Image:
    im = _exif_transpose(im)
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_rgb(im)
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageLoadError(f"cannot convert image {_describe(src)} of mode {mode!r} to RGB: {exc}") from None


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float grayscale -> 8-bit RGB, keeping the intensity scale."""
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
    elif im.mode != "I" or a.max(initial=0) > 255:
        # 16-bit data (I;16 or 16-bit PNGs that PIL opens as "I"): 65535 is white.
        a = a.astype(np.float64) / 257.0
    a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    return Image.fromarray(a, "L").convert("RGB")


def _is_torch_tensor(obj: Any) -> bool:
    # By module name, so that loading images never imports torch (the ONNX path runs without it).
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _tensor_to_array(t) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.ndim == 3:
        if t.shape[0] not in (1, 3, 4):
            raise ImageLoadError(f"image tensor must be CxHxW with C in (1, 3, 4), got shape {tuple(t.shape)}")
        t = t.permute(1, 2, 0)
    elif t.ndim != 2:
        raise ImageLoadError(f"image tensor must be CxHxW or HxW, got shape {tuple(t.shape)}")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.numpy()


def _check_array_size(a: np.ndarray, max_pixels: int | None) -> None:
    if a.ndim not in (2, 3):
        raise ImageLoadError(f"image array must be HxW or HxWxC, got shape {a.shape}")
    _check_pixels((a.shape[1], a.shape[0]), max_pixels, a)


def _array_to_pil(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] not in (3, 4):
        raise ImageLoadError(f"image array must have 1, 3 or 4 channels (HxWxC), got shape {a.shape}")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.uint16:
        u8 = (a.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageLoadError("image array contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageLoadError(
                f"float image array must be in [0, 1], got values in [{lo:g}, {hi:g}] "
                "(pass uint8 for 0..255 data)"
            )
        u8 = (a * 255.0).round().astype(np.uint8)
    else:
        raise ImageLoadError(f"image array dtype must be uint8, uint16, bool or float in [0, 1], got {a.dtype}")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[u8.shape[2] if u8.ndim == 3 else 2]
    return Image.fromarray(np.ascontiguousarray(u8), mode)


# ---------------------------------------------------------------------------
# preprocessing


@dataclass(frozen=True)
class Preprocess:
    """The input recipe of a model: resize, crop, normalise.

    Parameters
    ----------
    input_size : int
        Side of the square model input.
    resize : {"center_crop", "squash", "pad"}
        ``"center_crop"``: scale the shorter side to ``input_size / crop_pct`` and take
        the central square (the ImageNet evaluation protocol). ``"squash"``: resize the
        whole image to a square, ignoring the aspect ratio. ``"pad"``: fit the longer
        side to ``input_size`` and pad with white.
    mean, std : sequence of 3 floats
        Per-channel normalisation of pixels scaled to [0, 1].
    crop_pct : float
        Fraction of the shorter side kept by ``"center_crop"``.
    interpolation : str
        PIL resampling filter name (``"bilinear"``, ``"bicubic"``, ...).
    max_pixels : int or None
        Passed to :func:`load_image`.

    Examples
    --------
    >>> p = Preprocess(224, "center_crop", mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> p(np.full((300, 400, 3), 255, np.uint8)).shape
    torch.Size([3, 224, 224])
    >>> Preprocess.from_dict(p.to_dict()) == p
    True
    """

    input_size: int = 224
    resize: str = "center_crop"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    max_pixels: int | None = field(default=DEFAULT_MAX_PIXELS)

    def __post_init__(self) -> None:
        # Normalise types so that from_dict(to_dict()) compares equal and JSON stays plain.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, (int, np.integer)) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive int, got {self.input_size!r}")
        object.__setattr__(self, "input_size", int(self.input_size))
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std must have 3 values, got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}")

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict; :meth:`from_dict` restores an equal object."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown Preprocess field(s) {sorted(unknown)}")
        return cls(**d)

    # -- geometry ------------------------------------------------------------
    @property
    def load_size(self) -> int:
        """Smallest image side that still needs no upscaling (used for JPEG draft decoding)."""
        if self.resize == "center_crop":
            return int(math.ceil(self.input_size / self.crop_pct))
        return self.input_size

    def resize_image(self, im: Image.Image) -> Image.Image:
        """RGB PIL image -> RGB PIL image of ``input_size x input_size``."""
        s = self.input_size
        resample = _INTERPOLATIONS[self.interpolation]
        w, h = im.size
        if self.resize == "squash":
            return im.resize((s, s), resample)
        if self.resize == "center_crop":
            # Resizing the crop box directly equals "shorter side to s/crop_pct, then
            # center crop" but resamples once and only the pixels that are kept.
            side = min(w, h) * self.crop_pct
            left, top = (w - side) / 2.0, (h - side) / 2.0
            return im.resize((s, s), resample, box=(left, top, left + side, top + side))
        scale = s / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (s, s), _BACKGROUND)
        canvas.paste(im.resize((nw, nh), resample), ((s - nw) // 2, (s - nh) // 2))
        return canvas

    # -- tensors -------------------------------------------------------------
    def load(self, src: Any) -> Image.Image:
        """:func:`load_image` with this recipe's pixel limit and JPEG draft size, then :meth:`reduce`.

        So an image is held at full resolution only while it is decoded: what comes
        back has at most about :data:`WORKING_PIXELS` pixels, whatever the file had.
        """
        return self.reduce(load_image(src, max_pixels=self.max_pixels, min_size=self.load_size))

    def reduce(self, im: Image.Image) -> Image.Image:
        """A large image shrunk by an integer factor (box filter), both sides kept >= 2 x ``load_size``.

        Images of at most :data:`WORKING_PIXELS` pixels (every ordinary photo) are
        returned as they are, so their answers do not change; a huge PNG or scan is
        reduced before anything else holds it.
        """
        w, h = im.size
        if w * h <= WORKING_PIXELS:
            return im
        most = min(w, h) // (2 * self.load_size)  # the largest factor that keeps both sides >= 2 x load_size
        if most < 2:
            return im
        return im.reduce(min(most, max(2, math.ceil(math.sqrt(w * h / WORKING_PIXELS)))))

    def to_uint8(self, src: Any) -> np.ndarray:
        """Load + resize -> ``(input_size, input_size, 3)`` uint8 array (before normalisation)."""
        return np.asarray(self.resize_image(self.load(src)))

    def normalize(self, pixels):
        """uint8 NHWC/HWC pixels (torch tensor) -> float32 (x / 255 - mean) / std, same layout."""
        import torch

        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32)
        shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32)
        return pixels.to(torch.float32).mul_(scale).sub_(shift)

    def normalize_array(self, pixels: np.ndarray) -> np.ndarray:
        """The numpy twin of :meth:`normalize`: the same float32 operations in the same
        order, so the torch and ONNX paths feed the network identical values."""
        scale = np.array([1.0 / (255.0 * s) for s in self.std], dtype=np.float32)
        shift = np.array([m / s for m, s in zip(self.mean, self.std)], dtype=np.float32)
        out = pixels.astype(np.float32)
        out *= scale
        out -= shift
        return out

    def batch_array(self, images: Iterable[Any] | Sequence[Any]) -> np.ndarray:
        """Images -> float32 ``(N, 3, S, S)`` numpy batch (C-contiguous), without torch.

        Equal to ``self.batch(images).numpy()``; the ONNX Runtime path uses it.
        """
        s = self.input_size
        arrays = [self.to_uint8(src) for src in images]
        if not arrays:
            return np.empty((0, 3, s, s), dtype=np.float32)
        nhwc = self.normalize_array(np.stack(arrays))
        return np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))

    def __call__(self, src: Any):
        """One image -> float32 tensor ``(3, input_size, input_size)``."""
        import torch

        hwc = self.normalize(torch.from_numpy(self.to_uint8(src).copy()))
        return hwc.permute(2, 0, 1)

    def batch(self, images: Iterable[Any] | Sequence[Any]):
        """Images -> float32 batch ``(N, 3, S, S)`` in ``torch.channels_last`` memory format.

        The pixels are written straight into an NHWC buffer and viewed as NCHW, so the
        result feeds a channels_last model without a layout copy.
        """
        import torch

        arrays = [self.to_uint8(src) for src in images]
        if not arrays:
            s = self.input_size
            return torch.empty((0, 3, s, s)).contiguous(memory_format=torch.channels_last)
        nhwc = self.normalize(torch.from_numpy(np.stack(arrays)))
        return nhwc.permute(0, 3, 1, 2)
