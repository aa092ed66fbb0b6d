import numpy as np
import pytest
from scipy import stats

from hedged.hedging import Climbing, Darts, FlatClassifier
from hedged.hedging.metrics import (
    accuracy_specificity_curve,
    clopper_pearson,
    depth_shares,
    hierarchical_accuracy,
    hierarchical_precision_recall_f1,
    information_gain,
    leaf_share,
)
from test_hedging_helpers import calibrated_sample
from hedged.taxonomy import Taxonomy


@pytest.fixture
def tree4():
    return Taxonomy.from_edges([("root", "X"), ("root", "Y"), ("X", "a"), ("X", "b"), ("Y", "c"), ("Y", "d")])


PRED = ["a", "X", "root", "c"]
TRUE = ["a", "b", "a", "d"]


def test_hierarchical_accuracy(tree4):
    assert hierarchical_accuracy(tree4, PRED, TRUE) == 0.75
    # indices work too
    assert hierarchical_accuracy(tree4, tree4.node_index(PRED), tree4.leaf_index(TRUE)) == 0.75


def test_information_gain(tree4):
    np.testing.assert_allclose(information_gain(tree4, PRED, TRUE), [2.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(information_gain(tree4, PRED, TRUE, normalize=True), [1.0, 0.5, 0.0, 0.0])


def test_depth_and_leaf_shares(tree4):
    np.testing.assert_allclose(depth_shares(tree4, PRED), [0.25, 0.25, 0.5])
    assert leaf_share(tree4, PRED) == 0.5


def test_hierarchical_precision_recall_f1_hand_computed(tree4):
    # Ancestor sets without the root: |P & T| = 2+1+0+1, |P| = 2+1+0+2, |T| = 2+2+2+2
    p, r, f = hierarchical_precision_recall_f1(tree4, PRED, TRUE)
    assert p == pytest.approx(4 / 5)
    assert r == pytest.approx(4 / 8)
    assert f == pytest.approx(2 * 0.8 * 0.5 / 1.3)


def test_hierarchical_f1_dag_and_root_only():
    t = Taxonomy.from_edges([("root", "P"), ("root", "Q"), ("P", "x"), ("Q", "x"), ("P", "y"), ("Q", "z")])
    assert hierarchical_precision_recall_f1(t, ["x"], ["x"]) == (1.0, 1.0, 1.0)
    # Predicting P for truth z: P = {P}, T = {Q, z}.
    assert hierarchical_precision_recall_f1(t, ["P"], ["z"]) == (0.0, 0.0, 0.0)
    # Predicting Q for truth x: P = {Q}, T = {P, Q, x}.
    p, r, _ = hierarchical_precision_recall_f1(t, ["Q"], ["x"])
    assert (p, r) == (1.0, pytest.approx(1 / 3))
    assert hierarchical_precision_recall_f1(t, ["root", "root"], ["x", "y"]) == (0.0, 0.0, 0.0)


def test_metrics_shape_mismatch(tree4):
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        hierarchical_accuracy(tree4, PRED, TRUE[:3])


def test_clopper_pearson():
    lo, hi = clopper_pearson(10, 10, 0.1)
    assert lo == pytest.approx(0.05 ** (1 / 10)) and hi == 1.0
    lo, hi = clopper_pearson(0, 20, 0.05)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))
    ref = stats.binomtest(37, 50).proportion_ci(0.95, method="exact")
    assert clopper_pearson(37, 50, 0.05) == pytest.approx((ref.low, ref.high))
    lo, hi = clopper_pearson(np.array([0, 5, 10]), 10)
    assert lo.shape == (3,) and np.all(lo <= hi)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(11, 10)


def test_accuracy_specificity_curve(tree4):
    rng = np.random.default_rng(0)
    cal, y_cal = calibrated_sample(rng, 2000, 4, 0.5)
    test, y_test = calibrated_sample(rng, 2000, 4, 0.5)
    targets = [0.6, 0.8, 0.9, 1.0]
    for rule in (Darts(tree4), Climbing(tree4)):
        curve = accuracy_specificity_curve(rule.fit(cal, y_cal), test, y_test, targets)
        assert set(curve) == {"target", "accuracy", "ci_low", "ci_high", "info_gain", "info_gain_correct", "info_gain_bits", "leaf_share", "root_share"}
        assert all(v.shape == (4,) for v in curve.values())
        assert np.all(curve["ci_low"] <= curve["accuracy"]) and np.all(curve["accuracy"] <= curve["ci_high"])
        # target 1.0: the root for all, certainly right, no information
        assert curve["accuracy"][-1] == 1.0 and curve["root_share"][-1] == 1.0 and curve["info_gain"][-1] == 0.0
        # more demanding targets never give more specific answers here
        assert np.all(np.diff(curve["info_gain"]) <= 1e-12)
        assert np.all(curve["accuracy"][:-1] >= np.array(targets[:-1]) - 0.03)
    flat = accuracy_specificity_curve(FlatClassifier(tree4).fit(cal, y_cal), test, y_test, targets)
    assert np.all(flat["accuracy"] == flat["accuracy"][0]) and np.all(flat["leaf_share"] == 1.0)
