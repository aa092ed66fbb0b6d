"""load_image / Preprocess: every upload oddity we know of, and the exact tensor values."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hedged.models import DEFAULT_MAX_PIXELS, ImageLoadError, Preprocess, load_image
from hedged.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

HALF = Preprocess(8, "squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def rgb_at(im: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    assert im.mode == "RGB"
    return im.getpixel(xy)


# ---------------------------------------------------------------------------
# image modes: each converted to RGB with a hand-checkable pixel value


def _palette_with_transparency() -> Image.Image:
    im = Image.new("P", (3, 2), 0)
    im.putpalette([255, 0, 0] + [0, 0, 255] * 255)  # index 0 red, the rest blue
    im.info["transparency"] = 0  # ...and red is the transparent one
    return im


def _palette_opaque() -> Image.Image:
    im = Image.new("P", (3, 2), 1)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    return im


MODE_CASES = {
    "1 white": (lambda: Image.new("1", (3, 2), 1), (255, 255, 255)),
    "L gray": (lambda: Image.new("L", (3, 2), 100), (100, 100, 100)),
    "LA transparent": (lambda: Image.new("LA", (3, 2), (0, 0)), (255, 255, 255)),
    "LA opaque": (lambda: Image.new("LA", (3, 2), (40, 255)), (40, 40, 40)),
    "RGBA transparent": (lambda: Image.new("RGBA", (3, 2), (255, 0, 0, 0)), (255, 255, 255)),
    "RGBA half black": (lambda: Image.new("RGBA", (3, 2), (0, 0, 0, 128)), (127, 127, 127)),
    "RGBA opaque": (lambda: Image.new("RGBA", (3, 2), (10, 20, 30, 255)), (10, 20, 30)),
    "P opaque": (_palette_opaque, (0, 0, 255)),
    "P transparent": (_palette_with_transparency, (255, 255, 255)),
    "CMYK white": (lambda: Image.new("CMYK", (3, 2), (0, 0, 0, 0)), (255, 255, 255)),
    "CMYK black": (lambda: Image.new("CMYK", (3, 2), (0, 0, 0, 255)), (0, 0, 0)),
    "I;16 white": (lambda: Image.new("I;16", (3, 2), 65535), (255, 255, 255)),
    "I;16 mid": (lambda: Image.new("I;16", (3, 2), 32896), (128, 128, 128)),  # 32896 / 257 = 128
    "I 16-bit data": (lambda: Image.new("I", (3, 2), 40000), (156, 156, 156)),  # 40000 / 257 = 155.6
    "I 8-bit data": (lambda: Image.new("I", (3, 2), 200), (200, 200, 200)),
    "F in [0,1]": (lambda: Image.new("F", (3, 2), 0.5), (128, 128, 128)),
    "YCbCr": (lambda: Image.new("YCbCr", (3, 2), (255, 128, 128)), (255, 255, 255)),
    "RGB": (lambda: Image.new("RGB", (3, 2), (1, 2, 3)), (1, 2, 3)),
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_every_mode_becomes_rgb_with_expected_pixel(case):
    make, expected = MODE_CASES[case]
    out = load_image(make())
    assert out.mode == "RGB" and out.size == (3, 2)
    assert rgb_at(out) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize("case", ["LA transparent", "RGBA half black", "P transparent", "I;16 mid", "L gray"])
def test_modes_survive_a_png_round_trip(case, tmp_path):
    make, expected = MODE_CASES[case]
    path = tmp_path / "x.png"
    make().save(path)
    assert rgb_at(load_image(path)) == pytest.approx(expected, abs=1)


def test_cmyk_jpeg_file(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(path)
    assert rgb_at(load_image(path), (8, 8)) == pytest.approx((255, 255, 255), abs=2)


def test_exif_orientation_is_applied(tmp_path):
    # 40x20, left half red, right half blue; orientation 6 = "rotate 90 degrees clockwise to view".
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    assert rgb_at(out, (10, 5))[0] > 200  # the red half is now on top
    assert rgb_at(out, (10, 35))[2] > 200


def test_tiny_1x1_image_fills_the_input():
    out = HALF(Image.new("RGB", (1, 1), (255, 0, 255)))
    assert out.shape == (3, 8, 8)
    assert torch.allclose(out[0], torch.ones(8, 8)) and torch.allclose(out[1], -torch.ones(8, 8))


# ---------------------------------------------------------------------------
# error paths: always ImageLoadError (a ValueError), naming the source


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match="not found.*nope.jpg"):
        load_image(path)
    assert issubclass(ImageLoadError, ValueError)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a JPEG\n")
    with pytest.raises(ImageLoadError, match="not an image file.*notes.jpg"):
        load_image(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.png"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(path)


def test_corrupt_jpeg_body(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    data[200:] = b"\x00" * (len(data) - 200)  # valid header, garbage scan data
    with pytest.raises(ImageLoadError):
        load_image(bytes(data))


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("1", (2000, 1000)).save(path)  # 2 MP, tiny file
    with pytest.raises(ImageLoadError, match=r"2000x1000 = 2,000,000 pixels.*limit of 1,000,000"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path, max_pixels=None).size == (2000, 1000)


def test_default_limit_raises_our_error_not_pils_warning(tmp_path):
    # 8000x8000 = 64 MP: above our 50 MP default, below PIL's own error threshold.
    path = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(path)
    assert 8000 * 8000 > DEFAULT_MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        with pytest.raises(ImageLoadError, match="more than the limit"):
            load_image(path)


def test_pillows_bomb_check_is_replaced_by_ours(tmp_path, monkeypatch):
    """Pillow refuses headers over 179 MP with its own text; the loader applies its limit itself,
    so a user may raise it past Pillow's (issue 20), and Pillow's setting is left as it was."""
    from hedged.models import preprocess

    path = tmp_path / "bomb.png"
    Image.new("1", (15000, 15000)).save(path)  # 225 MP, over Pillow's own limit
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match="15000x15000 = 225,000,000 pixels, more than the limit of 200,000,000"):
        load_image(path, max_pixels=200_000_000)
    monkeypatch.setattr(preprocess, "MAX_HEADER_PIXELS", 100_000_000)
    with pytest.raises(ImageLoadError, match="claims 15000x15000"):
        load_image(path, max_pixels=None)
    assert Image.MAX_IMAGE_PIXELS == before


def test_pixel_limit_applies_to_arrays_and_pil_images():
    with pytest.raises(ImageLoadError, match="limit"):
        load_image(np.zeros((100, 100), np.uint8), max_pixels=9_999)
    with pytest.raises(ImageLoadError, match="limit"):
        load_image(Image.new("L", (100, 100)), max_pixels=9_999)


def test_unsupported_source_type():
    with pytest.raises(ImageLoadError, match="cannot load an image from int"):
        load_image(42)


# ---------------------------------------------------------------------------
# other sources: bytes, file objects, arrays, tensors


def test_bytes_and_file_objects():
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), (0, 255, 0)).save(buf, "PNG")
    assert rgb_at(load_image(buf.getvalue())) == (0, 255, 0)
    buf.seek(0)
    assert load_image(buf).size == (5, 4)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((4, 5), 7, np.uint8), (7, 7, 7)),
        (np.full((4, 5, 1), 7, np.uint8), (7, 7, 7)),
        (np.tile(np.array([1, 2, 3], np.uint8), (4, 5, 1)), (1, 2, 3)),
        (np.tile(np.array([0, 0, 0, 0], np.uint8), (4, 5, 1)), (255, 255, 255)),  # transparent -> white
        (np.full((4, 5, 3), 0.5, np.float32), (128, 128, 128)),
        (np.full((4, 5), 1.0, np.float64), (255, 255, 255)),
        (np.full((4, 5), 65535, np.uint16), (255, 255, 255)),
        (np.ones((4, 5), bool), (255, 255, 255)),
    ],
)
def test_numpy_arrays(array, expected):
    out = load_image(array)
    assert out.size == (5, 4)
    assert rgb_at(out) == expected


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((4, 5, 3), 1.5, np.float32), r"in \[0, 1\]"),
        (np.full((4, 5, 3), -0.1, np.float32), r"in \[0, 1\]"),
        (np.full((4, 5, 3), np.nan, np.float32), "NaN"),
        (np.zeros((4, 5, 2), np.uint8), "1, 3 or 4 channels"),
        (np.zeros((2, 4, 5, 3), np.uint8), "HxW or HxWxC"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 5, 3), np.int64), "dtype"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(array)


def test_torch_tensors_are_chw():
    t = torch.zeros(3, 4, 5)
    t[0] = 1.0  # red
    out = load_image(t)
    assert out.size == (5, 4) and rgb_at(out) == (255, 0, 0)
    assert rgb_at(load_image(torch.full((1, 4, 5), 9, dtype=torch.uint8))) == (9, 9, 9)
    assert rgb_at(load_image(torch.full((4, 5), 0.0, dtype=torch.float16))) == (0, 0, 0)
    with pytest.raises(ImageLoadError, match="CxHxW"):
        load_image(torch.zeros(5, 4, 3))  # an HxWxC tensor: channels must come first


# ---------------------------------------------------------------------------
# Preprocess


def test_round_trip_through_json():
    p = Preprocess(240, "pad", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), crop_pct=0.9, interpolation="bicubic",
                   max_pixels=None)
    d = json.loads(json.dumps(p.to_dict()))
    assert Preprocess.from_dict(d) == p
    assert d["input_size"] == 240 and d["mean"] == [0.1, 0.2, 0.3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resize": "stretch"}, "resize must be one of"),
        ({"input_size": 0}, "input_size"),
        ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
        ({"mean": (0.5, 0.5)}, "3 values"),
        ({"crop_pct": 1.5}, "crop_pct"),
        ({"interpolation": "cubic-ish"}, "interpolation"),
    ],
)
def test_invalid_preprocess(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocess(**kwargs)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown Preprocess field.*size"):
        Preprocess.from_dict({"size": 224})


def test_constant_gray_maps_to_known_values():
    gray = np.full((30, 40, 3), 128, np.uint8)
    # TF/Inception: (128/255 - 127/255) / (128/255) = 1/128
    tf = Preprocess(16, "center_crop", mean=(127 / 255,) * 3, std=(128 / 255,) * 3)(gray)
    assert tf.dtype == torch.float32 and tf.shape == (3, 16, 16)
    assert torch.allclose(tf, torch.full_like(tf, 1 / 128), atol=1e-6)
    # ImageNet: (128/255 - mean_c) / std_c per channel
    inet = Preprocess(16, "squash", mean=IMAGENET_MEAN, std=IMAGENET_STD)(gray)
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert inet[:, 5, 5].tolist() == pytest.approx(expected, abs=1e-5)


def _bands(w: int, h: int) -> np.ndarray:
    """Left quarter red, middle half green, right quarter blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4, 0] = 255
    a[:, w // 4 : 3 * w // 4, 1] = 255
    a[:, 3 * w // 4 :, 2] = 255
    return a


def _unit(p: Preprocess, img) -> np.ndarray:
    """Preprocess, then undo the (0.5, 0.5) normalisation -> HxWx3 in 0..1."""
    return ((p(img) + 1) / 2).permute(1, 2, 0).numpy()


def test_center_crop_keeps_the_middle_of_a_wide_image():
    # 400x100 image, crop_pct 1: the central 100x100 square is all green.
    p = Preprocess(10, "center_crop", mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    out = _unit(p, _bands(400, 100))
    assert np.allclose(out, [0, 1, 0], atol=1e-6)


def test_squash_keeps_all_bands():
    p = Preprocess(8, "squash", mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="nearest")
    out = _unit(p, _bands(400, 100))
    assert np.allclose(out[:, 0], [1, 0, 0]) and np.allclose(out[:, 4], [0, 1, 0]) and np.allclose(out[:, -1], [0, 0, 1])


def test_pad_letterboxes_with_white():
    p = Preprocess(8, "pad", mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="nearest")
    out = _unit(p, np.zeros((50, 200, 3), np.uint8))  # 4:1 black strip -> 8x2 in the middle
    assert np.allclose(out[:3], 1.0) and np.allclose(out[5:], 1.0)
    assert np.allclose(out[3:5], 0.0)


def test_batch_is_channels_last_and_matches_single_calls():
    imgs = [np.full((20, 30, 3), v, np.uint8) for v in (0, 100, 255)]
    batch = HALF.batch(imgs)
    assert batch.shape == (3, 3, 8, 8) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)
    for i, img in enumerate(imgs):
        assert torch.equal(batch[i], HALF(img))
    assert HALF.batch([]).shape == (0, 3, 8, 8)


def test_large_jpeg_is_draft_decoded_but_never_below_the_needed_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2400, 1600), (200, 10, 10)).save(path)
    p = Preprocess(224, "center_crop", crop_pct=0.875)  # needs a 256-px shorter side
    loaded = p.load(path)
    assert min(loaded.size) >= p.load_size == 256
    assert loaded.size == (600, 400)  # decoded at 1/4 scale
    assert load_image(path).size == (2400, 1600)  # without min_size: full resolution


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    channels=st.sampled_from([None, 1, 3, 4]),
    resize=st.sampled_from(["center_crop", "squash", "pad"]),
    seed=st.integers(0, 2**16),
)
def test_any_small_array_gives_a_finite_tensor_in_range(h, w, channels, resize, seed):
    shape = (h, w) if channels is None else (h, w, channels)
    a = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    p = Preprocess(12, resize, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = p(a)
    assert out.shape == (3, 12, 12) and torch.isfinite(out).all()
    lo = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1, 1)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()
