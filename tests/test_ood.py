"""The out-of-taxonomy detector: calibration, signals, storage, facade and CLI output."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedged.hedging import NotFittedError
from hedged.hedging.ood import InTaxonomyDetector, finite_sample_threshold, taxonomy_signals
from test_facade_helpers import cached_bundle, write_images


# ---------------------------------------------------------------- calibration
def test_threshold_hand_computed():
    scores = [5, 1, 4, 2, 3, 9, 8, 7, 6]  # n = 9
    assert finite_sample_threshold(scores, 0.2) == 2.0  # k = floor(0.2 * 10) = 2: reject below the 2nd smallest
    assert finite_sample_threshold(scores, 0.1) == 1.0  # k = 1
    assert finite_sample_threshold(scores, 0.05) == -math.inf  # k = floor(0.5) = 0: too few scores, reject none
    assert finite_sample_threshold(scores, 0.0) == -math.inf
    # n = 619 calibration photos at 2%: k = floor(0.02 * 620) = 12, at most 12/620 = 1.94% rejected
    s = np.arange(619.0)
    assert finite_sample_threshold(s, 0.02) == 11.0


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5])
def test_threshold_rejects_bad_rate(alpha):
    with pytest.raises(ValueError, match="max_false_rejection"):
        finite_sample_threshold([1.0, 2.0], alpha)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300),
    st.floats(0.0, 0.99),
)
def test_threshold_rejects_at_most_the_finite_sample_share(scores, alpha):
    t = finite_sample_threshold(scores, alpha)
    below = int(np.sum(np.asarray(scores) < t))
    # strictly below the k-th smallest: at most k - 1 of n, and k <= alpha (n + 1)
    assert below <= max(math.floor(alpha * (len(scores) + 1)) - 1, 0)


def test_false_rejection_rate_holds_on_exchangeable_data():
    # 2000 repetitions of (50 calibration scores, 1 new score) from the same distribution
    rng = np.random.default_rng(0)
    alpha, n = 0.1, 50
    data = rng.standard_normal((2000, n + 1))
    rejected = [data[r, -1] < finite_sample_threshold(data[r, :n], alpha) for r in range(len(data))]
    expected = math.floor(alpha * (n + 1)) / (n + 1)  # 5/51 = 0.098
    assert abs(np.mean(rejected) - expected) < 0.02


# ---------------------------------------------------------------- signals
def test_signals_hand_computed():
    logits = np.array([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # 1 image, 2 identical views
    feats = np.array([[[3.0, 4.0], [3.0, 4.0]]])
    w = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # ImageNet logits = (3, 4, 0)
    X = taxonomy_signals(
        logits, feats, imagenet_weight=w, imagenet_bias=np.zeros(3), imagenet_in=[1],
        feature_mean=[1.0, 2.0], feature_precision=np.diag([2.0, 0.5]),
        class_means=[[1.0, 2.0], [3.0, 3.0]],
    )
    energy, max_logit, norm = math.log(4.0), math.log(3.0), 5.0
    imagenet = 4.0 - math.log(math.exp(3) + math.exp(4) + 1.0)  # log p(class 1)
    mahalanobis = -(2.0 * 2**2 + 0.5 * 2**2)  # d = (2, 2)
    # nearest class mean: (3, 3), d = (0, 1) -> 0.5 (the other is the global mean's 10)
    mahalanobis_class = -0.5
    np.testing.assert_allclose(X, [[imagenet, energy, max_logit, norm, mahalanobis, mahalanobis_class]])


def test_signals_average_the_views_and_accept_2d():
    z = np.array([[[1.0, 0.0], [3.0, 0.0]]])
    assert taxonomy_signals(z, signals=["max_logit"])[0, 0] == pytest.approx(2.0)
    assert taxonomy_signals(z[:, 0], signals=["max_logit"])[0, 0] == pytest.approx(1.0)


def test_signals_errors():
    z = np.zeros((2, 1, 3))
    with pytest.raises(ValueError, match="unknown signal"):
        taxonomy_signals(z, signals=["colour"])
    with pytest.raises(ValueError, match="needs the penultimate features"):
        taxonomy_signals(z, signals=["feature_norm"])
    with pytest.raises(ValueError, match="feature_mean"):
        taxonomy_signals(z, np.zeros((2, 1, 4)), signals=["mahalanobis"])
    with pytest.raises(ValueError, match="class_means"):
        taxonomy_signals(z, np.zeros((2, 1, 4)), signals=["mahalanobis_class"])
    with pytest.raises(ValueError, match="agree on"):
        taxonomy_signals(z, np.zeros((2, 2, 4)), signals=["feature_norm"])


# ---------------------------------------------------------------- detector
def _toy(seed=0, n=200):
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(2.0, 1.0, (n, 2)), rng.normal(-2.0, 1.0, (n, 2))]
    return X, np.r_[np.ones(n), np.zeros(n)].astype(int)


def test_detector_fit_calibrate_predict():
    X, y = _toy()
    det = InTaxonomyDetector(["energy", "max_logit"], max_false_rejection=0.05).fit(X, y)
    assert np.all(det.coef_ > 0)  # both signals higher inside
    X_cal, _ = _toy(seed=1)
    det.calibrate(X_cal[:200])
    X_new, y_new = _toy(seed=2)
    inside = det.predict(X_new)
    assert np.mean(~inside[y_new == 1]) <= 0.1
    assert np.mean(~inside[y_new == 0]) >= 0.9
    # the rate is a predict-time choice: a larger one rejects at least as much
    assert np.all(det.predict(X_new, 0.3) <= det.predict(X_new, 0.01))


def test_detector_refuses_before_fit_and_bad_input():
    det = InTaxonomyDetector(["energy"])
    with pytest.raises(NotFittedError, match="fit"):
        det.score(np.zeros((1, 1)))
    X, y = _toy()
    det = InTaxonomyDetector(["energy", "max_logit"]).fit(X, y)
    with pytest.raises(NotFittedError, match="calibrate"):
        det.predict(X)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        det.score(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="both 0"):
        InTaxonomyDetector(["energy"]).fit(np.zeros((3, 1)), [1, 1, 1])


def test_detector_json_round_trip():
    X, y = _toy()
    det = InTaxonomyDetector(["energy", "max_logit"]).fit(X, y).calibrate(X[:200])
    again = InTaxonomyDetector.from_dict(json.loads(json.dumps(det.to_dict())))
    np.testing.assert_array_equal(again.score(X), det.score(X))
    assert again.threshold_for() == det.threshold_for()
    bad = det.to_dict()
    bad["coef"] = [1.0]
    with pytest.raises(ValueError, match="one entry per signal"):
        InTaxonomyDetector.from_dict(bad)
    with pytest.raises(ValueError, match="bad out-of-taxonomy"):
        InTaxonomyDetector.from_dict({"signals": ["energy"]})


# ---------------------------------------------------------------- bundle, facade, CLI
def _energy_detector(calibration_score: float) -> InTaxonomyDetector:
    """Score = energy; every image is rejected when the calibration scores lie above its energy."""
    # delta=None: the average-rate threshold (k = 1 of 60 at 2%); with 95% confidence 60
    # scores could not reject anything, and these tests are about the plumbing
    det = InTaxonomyDetector(["energy"], delta=None)
    det.mean_, det.scale_, det.coef_, det.intercept_ = np.zeros(1), np.ones(1), np.ones(1), 0.0
    det.calibration_scores_ = np.full(60, calibration_score)
    return det


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The tiny 'animal' bundle (energy ~8.7 for every image) with a rejecting and an accepting detector."""
    from hedged.models.bundle import save_detector

    root = tmp_path_factory.mktemp("ood")
    out = {}
    for name, cal in (("reject", 100.0), ("accept", -100.0)):
        path = root / name
        shutil.copytree(cached_bundle(leaves=(0, 1)), path)
        save_detector(path, _energy_detector(cal), info={"metrics": {"note": "test"}})
        out[name] = path
    return out


def test_bundle_stores_and_checks_the_detector(bundles):
    from hedged.models import BundleError, load_bundle

    b = load_bundle(bundles["reject"])
    assert b.detector is not None and b.detector.signals == ("energy",)
    manifest = json.loads((bundles["reject"] / "bundle.json").read_text())
    assert "ood.json" in manifest["files"] and "ood.npz" not in manifest["files"]
    broken = bundles["reject"].parent / "tampered"
    shutil.copytree(bundles["reject"], broken)
    (broken / "ood.json").write_text((broken / "ood.json").read_text().replace('"energy"', '"max_logit"'))
    with pytest.raises(BundleError, match="ood.json"):
        load_bundle(broken)


def test_saving_a_new_model_drops_a_stale_detector(bundles, tmp_path):
    from hedged.models import load_bundle, save_bundle

    path = tmp_path / "b"
    shutil.copytree(bundles["reject"], path)
    b = load_bundle(path)
    save_bundle(path, model=b.model, arch=b.arch, taxonomy=b.taxonomy, preprocess=b.preprocess,
                tta_angles=b.tta_angles, temperature=b.temperature,
                calibration_probs=b.calibration_probs, calibration_labels=b.calibration_labels)
    assert not (path / "ood.json").exists() and load_bundle(path).detector is None


def test_facade_verdicts_and_off_switch(bundles, tmp_path):
    from hedged import HedgedClassifier

    images = write_images(tmp_path, n=2)
    out = HedgedClassifier.from_bundle(bundles["reject"]).predict(images)
    assert all(p.in_taxonomy is False and p.node is None for p in out)
    assert all(p.leaf.name == "animal.cat" and p.taxonomy_score == pytest.approx(8.693, abs=1e-3) for p in out)
    assert "outside the taxonomy" in str(out[0])
    kept = HedgedClassifier.from_bundle(bundles["reject"]).predict(images, check_taxonomy=False)
    assert all(p.in_taxonomy is None and p.node.name == "animal" for p in kept)
    off = HedgedClassifier.from_bundle(bundles["reject"], check_taxonomy=False).predict(images)
    assert [p.node.name for p in off] == ["animal", "animal"]
    inside = HedgedClassifier.from_bundle(bundles["accept"]).predict(images)
    assert all(p.in_taxonomy is True and p.node.name == "animal" for p in inside)


def _cli(capsys, *argv):
    from hedged.cli.predict import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_and_text_for_photos_outside(bundles, tmp_path, capsys):
    img = write_images(tmp_path, n=1)[0]
    code, out, err = _cli(capsys, img, "--model", bundles["reject"], "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["in_taxonomy"] is False and row["node"] is None and row["path"] is None
    assert row["leaf_guess"] == "animal.cat" and isinstance(row["taxonomy_score"], float)
    code, out, err = _cli(capsys, img, "--model", bundles["reject"])
    assert code == 0 and "not things" in out and "Animal" not in out
    code, out, err = _cli(capsys, img, "--model", bundles["reject"], "--json", "--no-taxonomy-check")
    row = json.loads(out)
    assert row["in_taxonomy"] is None and row["node"] == "animal"
    code, out, err = _cli(capsys, img, "--model", bundles["accept"], "--json")
    row = json.loads(out)
    assert row["in_taxonomy"] is True and row["node"] == "animal"


def test_text_answer_outside_the_taxonomy_still_shows_warnings(bundles, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "tiny.png")
    code, out, err = _cli(capsys, tmp_path / "tiny.png", "--model", bundles["reject"])
    assert code == 0, err
    assert "not things" in out
    assert "warning:" in out and "8x8" in out


# ---------------------------------------------------------------- the shipped bundle
REPO = Path(__file__).resolve().parents[1]
NOT_CLOTHING = REPO / "tests" / "fixtures" / "not_clothing" / "eval"


@pytest.fixture(scope="module")
def shipped():
    from hedged import HedgedClassifier

    clf = HedgedClassifier.from_bundle()
    if clf.detector is None:
        pytest.skip("the default bundle has no out-of-taxonomy detector: run bench/ood_detector.py --write (docs/ood.md)")
    return clf


def test_shipped_model_rejects_generated_images(shipped):
    names = ["solid-00.jpg", "wheel-00.jpg", "noise-00.jpg", "noise-02.jpg", "smoothnoise-00.jpg"]  # black, wheel, noise
    preds = shipped.predict([NOT_CLOTHING / n for n in names])
    assert [p.in_taxonomy for p in preds] == [False] * len(names), [(p.source, p.taxonomy_score) for p in preds]
    assert all(p.node is None for p in preds)


def test_shipped_model_accepts_the_example_photos(shipped):
    photos = sorted((REPO / "examples").glob("*.jpg")) + sorted((REPO / "tests" / "fixtures").glob("*.jpg"))
    assert len(photos) >= 8
    preds = shipped.predict(photos)
    assert all(p.in_taxonomy is True and p.node is not None for p in preds), [
        (p.source, p.taxonomy_score) for p in preds if not p.in_taxonomy
    ]


def test_threshold_with_its_own_confidence():
    from hedged.hedging.ood import rejection_rank

    # 619 calibration scores at 2%: 12 in expectation only, 7 with 95% confidence (issue 24)
    assert rejection_rank(619, 0.02) == 12 and rejection_rank(619, 0.02, delta=0.05) == 7
    assert rejection_rank(100, 0.02, delta=0.05) == 0  # too few photos: reject nothing
    # the guarantee by simulation: uniform scores, the rate of the chosen threshold > alpha in <= delta of draws
    rng = np.random.default_rng(0)
    k = rejection_rank(300, 0.05, delta=0.1)
    over = np.mean([np.sort(rng.random(300))[k - 1] > 0.05 for _ in range(4000)])
    assert over <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / 4000)
    with pytest.raises(ValueError, match="delta"):
        rejection_rank(100, 0.02, delta=1.5)
