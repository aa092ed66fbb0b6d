"""Explanations: geometry, the attribution sanity checks of the literature, the facade and predict.py --explain.

The sanity checks run on the bundled clothing model and the photos in examples/ and
tests/fixtures (plus a few test-split photos when ../shared/data is there):

- additivity and completeness of integrated gradients (Sundararajan et al. 2017);
- model randomisation (Adebayo et al. 2018): Grad-CAM must depend on the weights;
- deletion (Petsiuk et al. 2018): removing the most salient pixels must hurt the node
  more than removing as many random ones.

They use one view (no TTA) where the property does not involve the TTA, to stay fast
on a busy 2-core CPU; the TTA path has its own exact test (90-degree views).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hedged.classifier import ExplainUnavailableError, HedgedClassifier
from hedged.cli.predict import main
from hedged.models import ImageLoadError
from hedged.models.explain import (
    gradcam,
    integrated_gradients,
    membership_matrix,
    node_probabilities,
    to_photo_frame,
)
from hedged.models.bundle import DEFAULT_TORCH_BUNDLE
from hedged.models.preprocess import Preprocess
from hedged.models.tta import rotate
from test_facade_helpers import cached_bundle, write_images

REPO = Path(__file__).resolve().parents[1]
PHOTOS = sorted((REPO / "examples").glob("*.jpg")) + sorted((REPO / "tests" / "fixtures").glob("*.jpg"))


@pytest.fixture(scope="module")
def clf():
    return HedgedClassifier.from_bundle(DEFAULT_TORCH_BUNDLE)  # the differentiable model itself


def members(clf, *nodes):
    tax = clf.taxonomy
    return membership_matrix([np.atleast_1d(tax.leaf_index(list(tax.leaves_under(v)))) for v in nodes], tax.n_leaves)


def answer(clf, x):
    """Answered node at 0.95 for a preprocessed image, one view; the most probable child of the root if the root."""
    tax = clf.taxonomy
    probs = node_probabilities(clf.model, x, np.eye(tax.n_leaves, dtype=np.float32), clf.temperature)
    node = clf.predict_from_probs(probs, 0.95)[0].node.name
    if node == tax.root:
        node_p = tax.node_probs(probs)[0]
        node = max(tax.children(node), key=lambda v: node_p[tax.node_index(v)])
    return node


# ---------------------------------------------------------------------------- geometry


def test_to_photo_frame_centre_crop_by_hand():
    # Photo 8 x 4, centre crop keeps x in [2, 6); the 4 x 4 input map holds its column index.
    pre = Preprocess(4, "center_crop", crop_pct=1.0)
    ramp = np.tile(np.arange(4, dtype=np.float32), (1, 4, 1))
    out = to_photo_frame(ramp, pre, (8, 4))
    assert out.shape == (1, 4, 8)
    assert np.isnan(out[:, :, :2]).all() and np.isnan(out[:, :, 6:]).all()
    np.testing.assert_allclose(out[0, :, 2:6], np.tile([0, 1, 2, 3], (4, 1)), atol=1e-6)


def test_to_photo_frame_pad_by_hand():
    # Photo 8 x 4 fitted into a 4 x 4 input: rows 1..2 hold it, scale 1/2; the map holds the row index.
    pre = Preprocess(4, "pad")
    ramp = np.tile(np.arange(4, dtype=np.float32)[:, None], (1, 1, 4))
    out = to_photo_frame(ramp, pre, (8, 4))
    assert not np.isnan(out).any()
    # photo row y -> input row 0.5 * (y + 0.5) + 1, sampled at pixel centres (value = coordinate - 0.5)
    np.testing.assert_allclose(out[0, :, 0], [0.75, 1.25, 1.75, 2.25], atol=1e-6)


def test_to_photo_frame_rejects_wrong_shape():
    with pytest.raises(ValueError, match="input frame"):
        to_photo_frame(np.zeros((1, 5, 5)), Preprocess(4), (8, 4))


# ---------------------------------------------------------------------------- TTA


def test_gradcam_rotates_each_view_back(clf):
    """A 90-degree view's map, rotated back, is the map of the rotated photo rotated back (exact)."""
    x = clf.preprocess.batch([REPO / "tests/fixtures/jeans.jpg"]).float()
    m = members(clf, "body.lower.pants")
    via_tta = gradcam(clf.model, x, m, clf.temperature, angles=(90.0,))
    direct = gradcam(clf.model, rotate(x, 90.0), m, clf.temperature, angles=(0.0,))
    expected = rotate(torch.from_numpy(direct)[None], -90.0)[0].numpy()
    np.testing.assert_allclose(via_tta, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


# ---------------------------------------------------------------------------- integrated gradients


def test_integrated_gradients_are_additive_over_leaves(clf):
    """IG is linear in the target: a node's attribution is the sum of its leaves' (any step
    count, so 2 steps; through the bundle's TTA views, which are part of the function)."""
    tax = clf.taxonomy
    node = "body.upper.short_sleeve"
    leaves = tax.leaves_under(node)
    x = clf.preprocess.batch([REPO / "tests/fixtures/tshirt.jpg"]).float()
    attr = integrated_gradients(clf.model, x, members(clf, node, *leaves), clf.temperature, clf.tta_angles, n_steps=2)
    scale = np.abs(attr[0]).max()
    assert scale > 0
    np.testing.assert_allclose(attr[0], attr[1:].sum(axis=0), atol=1e-4 * scale)


def test_integrated_gradients_complete_with_enough_steps(clf):
    """Attributions sum to f(x) - f(baseline): Captum's convergence delta within 5 %.

    From the mean-grey baseline (the default) the leaf probabilities of this model jump
    within the first ~10 % of the path, where the gradient wiggles (signs flip between
    neighbouring points), so that path needs many steps (docs/explain.md has the
    measured deltas). Completeness holds for any baseline; this test checks it on the
    20 %-contrast photo -> photo path, along which P(Coat or jacket) rises smoothly by
    0.36, where 16 steps leave a delta of 0.007 (one view; the TTA views' interpolated
    rotations need more steps, 16 left 10 %).
    """
    x = clf.preprocess.batch([REPO / "examples/jacket.jpg"]).float()
    m = members(clf, "body.upper.outerwear.outwear")
    baseline = 0.2 * x
    fx = node_probabilities(clf.model, x, m, clf.temperature)[0, 0]
    fb = node_probabilities(clf.model, baseline, m, clf.temperature)[0, 0]
    attr, delta = integrated_gradients(clf.model, x, m, clf.temperature, n_steps=16,
                                       baseline=baseline, return_convergence_delta=True)
    change = abs(fx - fb)
    assert change > 0.1, f"the check needs a baseline that changes the score, got {fx} vs {fb}"
    assert abs(attr.sum() - (fx - fb)) <= 0.05 * change
    assert abs(delta[0]) <= 0.05 * change, f"convergence delta {delta} for a change of {fx - fb}"


# ---------------------------------------------------------------------------- model randomisation


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def _randomised_top(model: torch.nn.Module, n_blocks: int = 6) -> torch.nn.Module:
    """Cascading randomisation from the top: classifier, head and the last ``n_blocks`` blocks."""
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    nets = list(model.members) if hasattr(model, "members") else [model]  # an ensemble: every member
    top = [model._fc] + [part for net in nets for part in (net._conv_head, net._bn1, *net._blocks[-n_blocks:])]
    for part in top:
        for module in part.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return model.eval()


def test_gradcam_depends_on_the_weights(clf):
    """Adebayo et al. 2018: re-initialising the top of the network must change the map.

    Cascading randomisation from the top: classifier, head and the last 6 of 21 blocks
    (the last two stages). Threshold: Spearman rho < 0.5 between the trained and the
    randomised model's signed maps (measured: -0.01, -0.06, -0.30 on the fixtures; with
    only 3 blocks re-initialised jeans.jpg kept 0.63). The control (trained model, one
    view against the TTA mean: the same weights, a small change of the input) must stay
    above 0.9 (measured 0.97-0.99), so the metric does see similar maps as similar: a map
    that ignored the weights would fail the threshold.
    """
    trained = clf.bundle_.model  # unfused, so that BatchNorm is re-initialised too
    random = _randomised_top(trained, n_blocks=6)
    rhos, controls = [], []
    for path in PHOTOS[-3:]:  # the fixtures
        x = clf.preprocess.batch([path]).float()
        m = members(clf, answer(clf, x))
        one = gradcam(trained, x, m, clf.temperature, relu=False)
        tta = gradcam(trained, x, m, clf.temperature, clf.tta_angles, relu=False)
        rnd = gradcam(random, x, m, clf.temperature, relu=False)
        rhos.append(_spearman(one, rnd))
        controls.append(_spearman(one, tta))
    assert max(rhos) < 0.5, f"randomised-model rank correlations {np.round(rhos, 3)}"
    assert min(controls) > 0.9, f"control rank correlations {np.round(controls, 3)}"


# ---------------------------------------------------------------------------- deletion

_FRACTION = 0.2
_TIE = 0.005


def _test_split_photos(n: int = 12) -> list[Path]:
    data = REPO.parent / "shared" / "data" / "clothing"
    split = REPO / "models" / "bundles" / "clothing" / "split.json"
    if not (data / "images").is_dir() or not split.is_file():
        return []
    ids = json.loads(split.read_text())["test"]
    picked = np.random.default_rng(0).choice(len(ids), size=min(n, len(ids)), replace=False)
    return [p for p in (data / "images" / f"{ids[i]}.jpg" for i in sorted(picked)) if p.is_file()]


def test_deleting_salient_pixels_hurts_more_than_random(clf):
    """Greying the most salient 20 % of the pixels (Grad-CAM of the answered node, with
    the TTA) should lower the node's TTA probability more than greying a random 20 % (the
    issue's goal: on >= 80 % of a set of test photos).

    The random 20 % is the salient mask itself moved to a random place (a circular shift
    by at least a quarter of the side, mean of 3 draws): same area, same shape, only the
    place differs. Scattered random pixels or patches would be no fair control: a
    checkerboard of grey squares is far out of distribution and hurts any photo more than
    one blob (tried: salient deletion then "won" on 40 % of these photos).

    A photo where the two deletions leave the probability within 0.005 of each other is a
    tie and not counted: a saturated posterior (Dress at 0.998 either way) says nothing
    about the map. With the data: the 8 example/fixture photos and 60 test-split photos,
    goal 80 % of the untied ones (bench/experiments/deletion.py measured 92 % on those 60
    test photos, 88 % on 80). Without the data only the 8 photos remain, too few for the
    goal: then the test guards >= 60 % (a regression check, not the goal).
    """
    extra = _test_split_photos(60)
    photos = PHOTOS + extra
    rng = np.random.default_rng(0)
    wins, report = [], []
    for path in photos:
        x = clf.preprocess.batch([path]).float()
        s = x.shape[-1]
        node = answer(clf, x)
        m = members(clf, node)
        cam = gradcam(clf.model, x, m, clf.temperature, clf.tta_angles)[0]
        salient = torch.from_numpy(cam >= np.quantile(cam, 1.0 - _FRACTION))
        shifts = [tuple(int(v) for v in rng.integers(s // 4, s - s // 4, size=2)) for _ in range(3)]
        masks = [salient] + [torch.roll(salient, shifts=sh, dims=(0, 1)) for sh in shifts]
        batch = x.repeat(len(masks), 1, 1, 1).contiguous()
        for row, mask in enumerate(masks):
            batch[row, :, mask] = 0.0  # the mean grey of the normalised input
        p = node_probabilities(clf.model, batch, m, clf.temperature, clf.tta_angles)[:, 0]
        if abs(p[0] - p[1:].mean()) >= _TIE:
            wins.append(p[0] < p[1:].mean())
        report.append(f"{path.name[:12]} {node}: salient {p[0]:.3f} random {p[1:].mean():.3f}")
    share = float(np.mean(wins)) if wins else 0.0
    detail = f"salient deletion won on {share:.0%} of {len(wins)} untied photos:\n" + "\n".join(report)
    # enough photos untied for the share to mean something (the ensemble's sharper
    # posteriors tie 18 of the 68: 74% untied)
    assert len(wins) >= 0.7 * len(photos), detail
    assert share >= (0.8 if extra else 0.6), detail


# ---------------------------------------------------------------------------- facade


def test_explain_answer_and_its_two_children(clf):
    path = REPO / "examples" / "jacket.jpg"
    pred = clf.predict(path)[0]
    expl = clf.explain(path)
    tax = clf.taxonomy
    assert expl.node.name == pred.node.name
    assert not expl.node.is_leaf
    assert expl.roles == ("node", "child", "child")
    kids = [n.name for n in expl.nodes[1:]]
    assert set(kids) <= tax.children(pred.node.name)
    node_p = tax.node_probs(clf.predict_proba(path))[0]
    best = sorted(tax.children(pred.node.name), key=lambda v: -node_p[tax.node_index(v)])[:2]
    assert kids == best
    np.testing.assert_allclose(expl.probabilities, [node_p[tax.node_index(v)] for v in [pred.node.name, *kids]])
    # maps on the photo, in its aspect ratio; NaN only outside the centre crop
    w, h = Image.open(path).size
    assert expl.image.shape[:2] == expl.maps.shape[1:]
    assert abs(expl.image.shape[1] / expl.image.shape[0] - w / h) < 0.01
    assert expl.maps.shape[0] == 3 and np.nanmin(expl.maps) >= 0 and np.nanmax(expl.maps) > 0
    assert np.isnan(expl.maps).any() and np.isfinite(expl.maps).mean() > 0.5


def test_explain_leaf_shows_the_runner_up_leaves(clf):
    path = REPO / "examples" / "polo.jpg"
    node = "body.upper.short_sleeve.polo"
    expl = clf.explain(path, node=node)
    assert expl.node.name == node and expl.roles == ("node", "alternative", "alternative")
    assert all(n.is_leaf and n.name != node for n in expl.nodes[1:])
    assert expl.probabilities[1] >= expl.probabilities[2]


def test_explain_bad_input(clf, tmp_path):
    photo = REPO / "examples" / "polo.jpg"
    with pytest.raises(ValueError, match="unknown node"):
        clf.explain(photo, node="no.such.node")
    with pytest.raises(ValueError, match="method must be"):
        clf.explain(photo, method="lime")
    with pytest.raises(ValueError, match="one image"):
        clf.explain([photo, photo])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        clf.explain(bad)


def test_explain_refuses_a_model_without_gradients(clf):
    onnx_like = copy.copy(clf)
    onnx_like.model = object()  # what an ONNX Runtime session looks like to the facade
    with pytest.raises(ExplainUnavailableError, match="torch model bundle"):
        onnx_like.explain(REPO / "examples" / "polo.jpg")


def test_heatmap_rgba_is_the_figures_overlay(tmp_path):
    """The pixels the HTTP API sends (heatmap_rgba) are the overlay the PNG draws; unseen pixels are clear."""
    import dataclasses

    tiny = HedgedClassifier.from_bundle(cached_bundle(leaves=(0, 1)))
    expl = tiny.explain(write_images(tmp_path, n=1)[0])
    # The tiny model's Grad-CAM is flat zero: draw ramps instead (none, x, 2x), the left columns unseen (a crop).
    k_, h, w = expl.maps.shape
    maps = np.linspace(0, 1, w, dtype=np.float32)[None, None, :] * np.arange(k_, dtype=np.float32)[:, None, None]
    maps = np.repeat(maps, h, axis=1)
    maps[:, :, :5] = np.nan
    expl = dataclasses.replace(expl, maps=maps)
    fig = expl.figure()
    for k in range(len(expl.nodes)):
        rgba = expl.heatmap_rgba(k)
        assert rgba.shape == (h, w, 4) and rgba.dtype == np.uint8
        assert (rgba[:, :5, 3] == 0).all() and (rgba[:, 5:, 3] >= round(0.2 * 255)).all()
        # the hottest pixel is scaled to its panel's maximum; a map without evidence is faint everywhere
        hottest = 0.65 if np.nanmax(maps[k]) > 0 else 0.2
        assert rgba[:, 5:, 3].max() == round(hottest * 255)
        # panel k + 1 shows the photo, then the overlay
        drawn = fig.axes[k + 1].images[1].get_array()
        np.testing.assert_allclose(rgba / 255.0, np.asarray(drawn), atol=0.5 / 255)


# ---------------------------------------------------------------------------- predict.py --explain


def test_predict_explain_writes_pngs_in_the_photos_ratio(tmp_path, capsys):
    photos = write_images(tmp_path / "in", n=2, corrupt=True)  # 50 x 40 photos, one corrupt file
    out = tmp_path / "out"
    code = main([*map(str, photos), "--json", "--explain", str(out), "--model", str(cached_bundle(leaves=(0, 1)))])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # the corrupt file
    good = [r for r in lines if "error" not in r]
    assert len(good) == 2 and all("explanation" not in r for r in lines if "error" in r)
    for record in good:
        png = Path(record["explanation"])
        assert png.parent == out and png.is_file()
        w, h = Image.open(png).size
        assert abs(w / h - 50 / 40) < 0.02


def test_predict_explain_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code = main([str(REPO / "examples" / "polo.jpg"), "--explain", str(f)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a directory" in err
