"""HedgedClassifier as a new user meets it: file objects, bad inputs, pixel limits, tiny images,
phone formats, scikit-learn conventions, and the library errors that must be clear."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from hedged import HedgedClassifier, Taxonomy, TaxonomyError
from hedged.hedging import Darts, metrics
from test_facade_helpers import cached_bundle, synthetic_split

TAX = Taxonomy.from_edges(
    [("root", "animal"), ("root", "car"), ("animal", "cat"), ("animal", "dog")],
    leaves=["cat", "dog", "car"],
    display_names={"animal": "Animal", "cat": "Cat"},
)


@pytest.fixture(scope="module")
def clf():
    return HedgedClassifier.from_bundle(cached_bundle(leaves=(0, 1)))


def _jpeg(size=(60, 50)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, format="JPEG"
    )
    return buf.getvalue()


# ------------------------------------------------------------------ inputs
def test_bytesio_is_one_image_not_lines(clf):
    # it used to be iterated line by line: dozens of error "predictions"
    preds = clf.predict(io.BytesIO(_jpeg()), 0.9, errors="collect")
    assert len(preds) == 1 and preds[0].ok and preds[0].node.name == "animal"


def test_open_file_is_one_image_named_by_its_path(clf, tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg())
    with open(path, "rb") as fh:
        (pred,) = clf.predict(fh, 0.9)
    assert pred.source == str(path)


def test_list_of_file_objects_is_a_batch(clf):
    preds = clf.predict([io.BytesIO(_jpeg()), io.BytesIO(_jpeg((40, 40)))], 0.9)
    assert len(preds) == 2


@pytest.mark.parametrize("bad", [None, 3, 2.5])
def test_non_image_inputs_are_a_clear_type_error(clf, bad):
    with pytest.raises(TypeError, match=f"inputs must be an image .* got {type(bad).__name__}"):
        clf.predict(bad, 0.9)


def test_max_pixels_is_a_real_override(tmp_path):
    bundle = cached_bundle(leaves=(0, 1))
    big = _jpeg((200, 100))  # 20,000 pixels
    with pytest.raises(ValueError, match="max_pixels"):
        HedgedClassifier.from_bundle(bundle, max_pixels=10_000).predict(big, 0.9)
    assert HedgedClassifier.from_bundle(bundle, max_pixels=20_000).predict(big, 0.9)[0].ok


def test_tiny_images_are_answered_with_a_warning(clf):
    tiny, normal = clf.predict([np.zeros((1, 1, 3), np.uint8), np.zeros((40, 32, 3), np.uint8)], 0.9)
    assert tiny.ok and len(tiny.warnings) == 1 and "1x1" in tiny.warnings[0]
    assert tiny.to_dict()["warnings"] == list(tiny.warnings)
    assert normal.warnings == () and normal.to_dict()["warnings"] == []


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_are_read(clf, tmp_path, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    im = Image.new("RGB", (64, 48), (200, 30, 30))
    if fmt == "HEIF":  # written without registering the plugin: reading must register it itself
        pytest.importorskip("pillow_heif").from_pillow(im).save(path)
    else:
        im.save(path, format=fmt)
    (pred,) = clf.predict(path, 0.9)
    assert pred.ok and pred.node.name == "animal"


# ------------------------------------------------------------------ library errors
def test_missing_taxonomy_file_is_a_taxonomy_error(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        Taxonomy.from_yaml(tmp_path / "missing.yaml")


def test_fit_with_no_calibration_samples_fails_at_fit():
    with pytest.raises(ValueError, match="no calibration samples"):
        HedgedClassifier(TAX).fit(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="no calibration samples"):
        Darts(TAX).fit(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_logits_get_a_softmax_hint():
    p, y = synthetic_split(TAX, 50, seed=1)
    logits = np.log(p + 1e-9)
    with pytest.raises(ValueError, match="apply a softmax"):
        HedgedClassifier(TAX).fit(p, y).predict_from_probs(logits, 0.9)
    with pytest.raises(ValueError, match="apply a softmax"):
        Darts(TAX).fit(p * 3, y)


def test_accuracy_one_warns_like_other_uncertifiable_targets():
    p, y = synthetic_split(TAX, 200, seed=2)
    clf = HedgedClassifier(TAX).fit(p, y)
    for target in (1.0, 0.9999):
        with pytest.warns(UserWarning, match="root for every sample"):
            preds = clf.predict_from_probs(p[:3], target)
        assert {q.node.name for q in preds} == {"root"}


def test_weights_refused_by_weights_only_get_one_line_without_unsafe_advice(tmp_path):
    import torch

    from hedged.models.registry import ModelWeightsError, load_state_dict

    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2), "extra": _Custom()}, path)
    with pytest.raises(ModelWeightsError) as err:
        load_state_dict(path)
    text = str(err.value)
    assert "\n" not in text and "weights_only=False" not in text and "refused" in text


class _Custom:
    """A class torch's weights_only unpickler refuses."""


# ------------------------------------------------------------------ scikit-learn conventions
def test_get_set_params_and_clone():
    from sklearn.base import clone

    p, y = synthetic_split(TAX, 200, seed=3)
    clf = HedgedClassifier(TAX, guarantee="expected", delta=0.1, batch_size=4).fit(p, y)
    params = clf.get_params()
    assert params["guarantee"] == "expected" and params["delta"] == 0.1 and params["batch_size"] == 4
    twin = clone(clf)
    assert twin.get_params()["delta"] == 0.1 and not hasattr(twin, "calibration_probs_")  # unfitted copy
    clf.set_params(delta=0.2)
    assert clf.rule("pac").delta == 0.2  # refitted with the new delta
    with pytest.raises(ValueError, match="invalid parameter 'alpha'"):
        clf.set_params(alpha=1)


def test_score_is_hierarchical_accuracy_of_the_answers():
    p, y = synthetic_split(TAX, 300, seed=4)
    clf = HedgedClassifier(TAX).fit(p[:150], y[:150])
    preds = clf.predict_from_probs(p[150:], 0.8)
    expected = metrics.hierarchical_accuracy(TAX, [q.node.name for q in preds], y[150:])
    assert clf.score(p[150:], y[150:], accuracy=0.8) == expected
    assert clf.score(p[150:].tolist(), y[150:], accuracy=0.8) == expected
    # hand check: root answers are always right
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert clf.score(p[150:], y[150:], accuracy=1.0) == 1.0


def test_score_on_images(clf):
    # every image is answered "animal": right for cat (0) and dog (1), wrong for car (2)
    imgs = [np.zeros((40, 40, 3), np.uint8)] * 3
    assert clf.score(imgs, [0, 1, 2], accuracy=0.9) == pytest.approx(2 / 3)


def test_public_hierarchical_metrics_match_the_report_numbers():
    pred = ["cat", "animal", "car", "root"]
    y = [0, 1, 0, 2]
    P, R, F = metrics.hierarchical_precision_recall_f1(TAX, pred, y)
    # by hand (sets without the root): cat{animal,cat} vs {animal,cat}: 2/2; animal{animal} vs
    # {animal,dog}: 1; car{car} vs {animal,cat}: 0; root{} vs {car}: 0  -> hP 3/4, hR 3/7
    assert (P, R) == pytest.approx((3 / 4, 3 / 7))
    assert metrics.hierarchical_precision(TAX, pred, y) == P
    assert metrics.hierarchical_recall(TAX, pred, y) == R
    assert metrics.hierarchical_f1(TAX, pred, y) == pytest.approx(2 * P * R / (P + R)) == F
