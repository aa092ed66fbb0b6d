import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hedged.hedging import Climbing, Darts, FlatClassifier, LeafGT, NotFittedError
from hedged.hedging._base import samples_needed
from test_hedging_helpers import calibrated_sample, random_taxonomy
from hedged.taxonomy import Taxonomy

LOG3 = math.log2(3)


@pytest.fixture
def tree3():
    # root -> a, B; B -> b, c
    return Taxonomy.from_edges([("root", "a"), ("root", "B"), ("B", "b"), ("B", "c")])


@pytest.fixture
def tree4():
    # root -> X, Y; X -> a, b; Y -> c, d   (rewards: leaves 2 bits, X/Y 1 bit)
    return Taxonomy.from_edges([("root", "X"), ("root", "Y"), ("X", "a"), ("X", "b"), ("Y", "c"), ("Y", "d")])


# ----------------------------------------------------------------- hand computed


def test_decide_hand_computed_tree4(tree4):
    rule = Darts(tree4)
    p = np.array([[0.5, 0.3, 0.1, 0.1]])
    # scores (2+l)p for leaves, (1+l)p for X (0.8) and Y, l for the root
    # l=0: a 1.0, X 0.8 -> a.  a vs X: (2+l)0.5 = (1+l)0.8 -> l = 2/3
    # (before a vs root at l = 2).  X vs root: (1+l)0.8 = l -> l = 4.
    assert rule.decide(p, 0.0).tolist() == ["a"]
    assert rule.decide(p, 0.66).tolist() == ["a"]
    assert rule.decide(p, 0.67).tolist() == ["X"]
    assert rule.decide(p, 3.9).tolist() == ["X"]
    assert rule.decide(p, 4.1).tolist() == ["root"]
    assert rule.decide(p, math.inf).tolist() == ["root"]


def test_breakpoints_hand_computed_tree3(tree3):
    # Envelope a -> B -> root for p = (0.35, 0.325, 0.325): r_a = log2 3, r_B = log2 3 - 1.
    p = np.array([[0.35, 0.325, 0.325]])
    rule = Darts(tree3, guarantee="expected").fit(p, ["a"])
    l1 = (LOG3 * 0.35 - (LOG3 - 1) * 0.65) / (0.65 - 0.35)
    l2 = (LOG3 - 1) * 0.65 / (1 - 0.65)
    curve = rule.calibration_curve()
    np.testing.assert_allclose(curve["lambda"], [0.0, l1, l2])
    # Correct (a), wrong (B does not contain a), correct (root): the empirical
    # accuracy of DARTS is NOT monotone in lambda; only the chosen node's
    # probability is.
    np.testing.assert_array_equal(curve["accuracy"], [1.0, 0.0, 1.0])
    assert rule.decide(p, (l1 + l2) / 2).tolist() == ["B"]


def test_breakpoint_ties_prefer_general(tree4):
    # At lambda exactly 2/3 the scores of a and X tie: the more probable X wins.
    rule = Darts(tree4, guarantee="expected")
    p = np.array([[0.5, 0.3, 0.1, 0.1]])
    rule.fit(p, ["b"])  # a wrong, X right: a correctness change at 2/3
    lam = rule.calibration_curve()["lambda"][1]
    assert lam == pytest.approx(2 / 3)
    assert rule.decide(p, lam).tolist() == ["X"]


def test_dag_node_probability_counts_each_leaf_once():
    # "m" has two parents; leaf "x" sits under both "P" and "Q" via "m".
    t = Taxonomy.from_edges([("root", "P"), ("root", "Q"), ("P", "m"), ("Q", "m"), ("m", "x"), ("P", "y"), ("Q", "z")])
    rule = Darts(t)
    p = np.array([[0.5, 0.25, 0.25]])  # x, y, z
    # r = log2 3 - log2 |leaves|: x,y,z 1.585, m 1.585 (one leaf), P,Q 0.585
    # l=0 ties x and m (same leaf set, same score); m has the single child x,
    # so the answer users see is x.
    assert rule.decide(p, 0.0).tolist() == ["x"]
    # m vs P (0.75): (1.585+l)0.5 = (0.585+l)0.75 -> l = (0.7925-0.4387)/0.25
    lam = (LOG3 * 0.5 - (LOG3 - 1) * 0.75) / 0.25
    assert rule.decide(p, lam * 0.99).tolist() == ["x"]
    assert rule.decide(p, lam * 1.01).tolist() in (["P"], ["Q"])
    assert rule.decide(p, lam * 1.01).tolist() == ["P"]  # equal p: lower node index


def test_f0_is_max_expected_gain_not_flat_argmax():
    # 8 leaves: B = {b, c}; six more leaves under the root. r_leaf = 3, r_B = 2.
    leaves = ["b", "c"] + [f"o{i}" for i in range(6)]
    t = Taxonomy.from_edges([("root", "B"), ("B", "b"), ("B", "c")] + [("root", f"o{i}") for i in range(6)], leaves=leaves)
    p = np.array([[0.3, 0.3] + [0.4 / 6] * 6])
    # b: 3 * 0.3 = 0.9 < B: 2 * 0.6 = 1.2, so f_0 hedges already.
    assert Darts(t).decide(p, 0.0).tolist() == ["B"]
    assert FlatClassifier(t).fit(p, ["b"]).predict(p).tolist() == ["b"]


def test_target_met_by_f0_gives_lambda_zero(tree4):
    rng = np.random.default_rng(0)
    probs, labels = calibrated_sample(rng, 400, 4, concentration=0.2)
    for guarantee in ("pac", "expected"):
        rule = Darts(tree4, guarantee=guarantee).fit(probs, labels)
        assert rule.lambda_for(0.3) == 0.0
        np.testing.assert_array_equal(rule.predict_index(probs, 0.3), rule.decide_index(probs, 0.0))


def test_target_one_gives_root(tree4):
    rng = np.random.default_rng(1)
    probs, labels = calibrated_sample(rng, 200, 4)
    for guarantee in ("pac", "expected"):
        for rule in (Darts(tree4, guarantee=guarantee), Climbing(tree4, guarantee=guarantee), LeafGT(tree4, guarantee=guarantee)):
            rule.fit(probs, labels)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert (rule.predict(probs, accuracy=1.0) == "root").all()


def test_too_few_samples_warns_and_gives_root(tree4):
    rng = np.random.default_rng(2)
    probs, labels = calibrated_sample(rng, 20, 4)
    need = samples_needed(0.99, 0.05)
    assert need == math.ceil(math.log(0.05) / math.log(0.99)) == 299
    for cls in (Darts, Climbing, LeafGT):
        rule = cls(tree4).fit(probs, labels)
        with pytest.warns(UserWarning, match=f"20 calibration samples.*at least {need}"):
            pred = rule.predict(probs, accuracy=0.99)
        assert (pred == "root").all()


def test_samples_needed_is_tight(tree4):
    # n samples all correct (probability mass 1 on the true leaf): the PAC
    # bound delta**(1/n) certifies the target exactly from n = need.
    need = samples_needed(0.9, 0.05)
    probs = np.tile(np.eye(4)[0], (need, 1))
    labels = np.zeros(need, dtype=int)
    assert Darts(tree4).fit(probs, labels).lambda_for(0.9) == 0.0
    with pytest.warns(UserWarning):
        assert Darts(tree4).fit(probs[:-1], labels[:-1]).lambda_for(0.9) == math.inf


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "probs, match",
    [
        ([[np.nan, 0.5, 0.25, 0.25]], "NaN"),
        ([[np.inf, 0.5, 0.25, 0.25]], "NaN or infinite"),
        ([[-0.1, 0.6, 0.25, 0.25]], "negative"),
        ([[0.5, 0.5, 0.25, 0.25]], "sum to 1"),
        ([[0.5, 0.5, 0.0]], r"shape \(n_samples, 4\).*\(1, 3\)"),
        ([0.25, 0.25, 0.25, 0.25], r"shape \(n_samples, 4\).*\(4,\)"),
    ],
)
def test_bad_probs_raise(tree4, probs, match):
    good = np.full((3, 4), 0.25)
    rule = Darts(tree4, guarantee="expected").fit(good, [0, 1, 2])
    with pytest.raises(ValueError, match=match):
        rule.predict(probs, accuracy=0.5)
    with pytest.raises(ValueError, match=match):
        Darts(tree4).fit(probs, [0] * np.atleast_2d(probs).shape[0])


def test_row_sum_tolerance_accepts_rounding(tree4):
    p = np.array([[0.2502, 0.25, 0.25, 0.25]], dtype=np.float32)
    Darts(tree4, guarantee="expected").fit(p, [0]).predict(p, 0.5)


def test_label_shape_mismatch(tree4):
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\).*\(2,\)"):
        Darts(tree4).fit(np.full((3, 4), 0.25), [0, 1])


def test_labels_by_name_and_index_agree(tree4):
    rng = np.random.default_rng(3)
    probs, labels = calibrated_sample(rng, 100, 4)
    names = np.asarray(tree4.leaves)[labels]
    a = Darts(tree4, guarantee="expected").fit(probs, labels)
    b = Darts(tree4, guarantee="expected").fit(probs, names)
    assert a.lambda_for(0.8) == b.lambda_for(0.8)
    with pytest.raises(ValueError, match="unknown label"):
        Darts(tree4).fit(probs[:1], ["nope"])


@pytest.mark.parametrize("accuracy", [0.0, -0.1, 1.01, float("nan"), "0.9", None])
def test_bad_accuracy(tree4, accuracy):
    rule = Darts(tree4, guarantee="expected").fit(np.full((2, 4), 0.25), [0, 1])
    with pytest.raises(ValueError, match="accuracy must be"):
        rule.predict(np.full((2, 4), 0.25), accuracy=accuracy)


def test_bad_params(tree4):
    p = np.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="guarantee"):
        Darts(tree4, guarantee="sure").fit(p, [0, 1])
    with pytest.raises(ValueError, match="delta"):
        Darts(tree4, delta=1.5).fit(p, [0, 1])
    with pytest.raises(ValueError, match="lam must be >= 0"):
        Darts(tree4).decide(p, -1.0)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        Climbing(tree4).decide(p, float("nan"))


@pytest.mark.parametrize("cls", [Darts, Climbing, LeafGT, FlatClassifier])
def test_predict_before_fit(tree4, cls):
    with pytest.raises(NotFittedError, match="not fitted"):
        cls(tree4).predict(np.full((1, 4), 0.25), accuracy=0.9)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_fit_returns_self_and_names(tree4):
    rng = np.random.default_rng(4)
    probs, labels = calibrated_sample(rng, 300, 4)
    for cls in (Darts, Climbing, LeafGT, FlatClassifier):
        rule = cls(tree4, guarantee="expected")
        assert rule.fit(probs, labels) is rule
        pred = rule.predict(probs, accuracy=0.9)
        assert pred.dtype.kind == "U" and pred.shape == (300,)
        assert set(pred) <= set(tree4.nodes)
        np.testing.assert_array_equal(tree4.node_index(pred), rule.predict_index(probs, accuracy=0.9))


# ----------------------------------------------------------------- threshold rules


def test_leafgt_hand_computed(tree4):
    rule = LeafGT(tree4)
    p = np.array([[0.5, 0.3, 0.1, 0.1], [0.9, 0.1, 0.0, 0.0]])
    assert rule.decide(p, 0.6).tolist() == ["root", "a"]
    assert rule.decide(p, 0.5).tolist() == ["a", "a"]
    assert rule.decide(p, 0.0).tolist() == ["a", "a"]


def test_climbing_hand_computed_dag():
    # x has parents P (x, y) and Q (x, z); z is likelier than y, so climbing from
    # x goes to Q.
    t = Taxonomy.from_edges([("root", "P"), ("root", "Q"), ("P", "x"), ("Q", "x"), ("P", "y"), ("Q", "z")])
    rule = Climbing(t)
    p = np.array([[0.5, 0.1, 0.4]])  # x, y, z
    assert rule.decide(p, 0.5).tolist() == ["x"]
    assert rule.decide(p, 0.6).tolist() == ["Q"]
    assert rule.decide(p, 0.95).tolist() == ["root"]
    # Calibration: true leaf y -> x wrong (0.5), Q wrong (0.9): correct iff theta > 0.9.
    rule = Climbing(t, guarantee="expected").fit(p, ["y"])
    assert rule.threshold_for(1.0) == math.inf
    # The segment (0.9, 1]: its midpoint, strictly above the breakpoint 0.9.
    assert rule.threshold_for(0.5) == pytest.approx(0.95)


def test_flat_ignores_target(tree4):
    rng = np.random.default_rng(5)
    probs, labels = calibrated_sample(rng, 50, 4)
    rule = FlatClassifier(tree4).fit(probs, labels)
    np.testing.assert_array_equal(rule.predict(probs, 0.5), rule.predict(probs, 0.999))
    assert rule.calibration_accuracy_ == pytest.approx(np.mean(probs.argmax(1) == labels))


# ----------------------------------------------------------------- properties

taxonomies = st.builds(
    lambda seed, n, extra: (seed, random_taxonomy(np.random.default_rng(seed), n, extra)),
    st.integers(0, 2**32 - 1),
    st.integers(2, 12),
    st.integers(0, 4),
)
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(taxonomies, st.floats(0.05, 3.0))
def test_step_function_matches_brute_force(seeded, conc):
    seed, tax = seeded
    rng = np.random.default_rng(seed)
    probs, labels = calibrated_sample(rng, 60, tax.n_leaves, conc)
    rule = Darts(tax, guarantee="expected").fit(probs, labels)
    curve = rule.calibration_curve()
    starts = curve["lambda"]
    assert np.all(np.diff(starts) > 0) and starts[0] == 0.0
    hi = starts[-1] * 1.5 + 1.0
    for lam in np.r_[rng.uniform(0, hi, 15), starts[1:] * (1 + 1e-6)]:
        j = np.searchsorted(starts, lam, side="right") - 1
        assume(np.all(np.abs(starts - lam) > 1e-9 * max(lam, 1)))
        acc = tax.is_correct(rule.decide_index(probs, lam), labels).mean()
        assert acc == pytest.approx(curve["accuracy"][j])


@PROPS
@given(taxonomies)
def test_darts_properties(seeded):
    seed, tax = seeded
    rng = np.random.default_rng(seed)
    probs, _ = calibrated_sample(rng, 40, tax.n_leaves, 0.5)
    probs = np.clip(probs, 1e-6, None)
    probs /= probs.sum(1, keepdims=True)
    rule = Darts(tax)
    node_p = tax.node_probs(probs)
    r = tax.rewards()
    rows = np.arange(len(probs))
    # lambda = 0 maximises the expected information gain r_v p_v.
    f0 = rule.decide_index(probs, 0.0)
    assert np.all((r * node_p)[rows, f0] >= (r * node_p).max(1) - 1e-12)
    # The chosen node's probability never decreases with lambda.
    prev = node_p[rows, f0]
    for lam in np.sort(rng.exponential(3.0, 10)):
        cur = node_p[rows, rule.decide_index(probs, lam)]
        assert np.all(cur >= prev - 1e-12)
        prev = cur
    # A large enough lambda gives the root (every non-root node has p < 1 here).
    root = tax.node_index(tax.root)
    non_root = node_p[:, np.arange(tax.n_nodes) != root]
    below = non_root < 1 - 1e-9
    big = 10 * np.max(np.where(below, (r[np.arange(tax.n_nodes) != root] * non_root) / (1 - np.where(below, non_root, 0)), 0)) + 1
    if below.all():
        assert np.all(rule.decide_index(probs, big) == root)
    # The root is always correct.
    assert tax.is_correct(np.full(len(probs), root), np.arange(len(probs)) % tax.n_leaves).all()


@PROPS
@given(taxonomies, st.sampled_from([Climbing, LeafGT]))
def test_threshold_rules_monotone_and_exact(seeded, cls):
    seed, tax = seeded
    rng = np.random.default_rng(seed)
    probs, labels = calibrated_sample(rng, 60, tax.n_leaves, 0.5)
    rule = cls(tax, guarantee="expected").fit(probs, labels)
    curve = rule.calibration_curve()
    assert np.all(np.diff(curve["accuracy"]) >= 0)  # more hedging, never less accurate
    for theta in np.r_[rng.uniform(0, 1, 10), curve["threshold"]]:
        j = np.searchsorted(curve["threshold"], theta, side="right") - 1
        acc = tax.is_correct(rule.decide_index(probs, theta), labels).mean()
        assert acc == pytest.approx(curve["accuracy"][j])


@PROPS
@given(taxonomies, st.sampled_from([Darts, Climbing, LeafGT]), st.floats(0.3, 0.99))
def test_expected_meets_calibration_target_with_smallest_parameter(seeded, cls, target):
    seed, tax = seeded
    rng = np.random.default_rng(seed)
    probs, labels = calibrated_sample(rng, 80, tax.n_leaves, 0.5)
    rule = cls(tax, guarantee="expected").fit(probs, labels)
    t = rule._parameter_for(target)
    pred = rule.predict_index(probs, accuracy=target)
    assert tax.is_correct(pred, labels).mean() >= target
    curve = rule.calibration_curve()
    starts = next(iter(curve.values()))
    # t lies inside the first segment that meets the target: every segment that
    # starts below t's segment misses the target on the calibration data.
    j = int(np.searchsorted(starts, t, side="right")) - 1
    assert curve["accuracy"][j] >= target
    assert np.all(curve["accuracy"][:j] < target)


# ----------------------------------------------------------------- the PAC guarantee


def test_pac_guarantee_holds_statistically():
    """Over 200 calibration draws, test accuracy < target in at most ~delta of them.

    Posteriors are Dirichlet draws and labels are drawn from them, so they are
    calibrated and the true accuracy of a decision is the mean probability of
    the chosen node, estimated on a large fixed test set.
    """
    rng = np.random.default_rng(12345)
    tax = random_taxonomy(rng, 10, extra_edges=2)
    target, delta, n_cal, draws = 0.85, 0.1, 300, 200
    test_probs, _ = calibrated_sample(rng, 5000, 10, 0.3)
    test_node_p = tax.node_probs(test_probs)
    rows = np.arange(len(test_probs))
    fails = {"pac": 0, "expected": 0}
    for _ in range(draws):
        probs, labels = calibrated_sample(rng, n_cal, 10, 0.3)
        for guarantee in fails:
            rule = Darts(tax, guarantee=guarantee, delta=delta).fit(probs, labels)
            acc = test_node_p[rows, rule.predict_index(test_probs, accuracy=target)].mean()
            fails[guarantee] += acc < target
    assert fails["pac"] / draws <= delta + 0.03
    # The calibration-only criterion fails far more often: the test can fail.
    assert fails["expected"] / draws > 0.25


# ----------------------------------------------------------------- ties and many targets


def test_tied_breakpoints_calibrate_exactly():
    # Two breakpoints equal mathematically (2.5 - log2 3) differ by 2 ulp.
    tax = Taxonomy.from_edges(
        [("R", "n0"), ("R", "n1"), ("n0", "l0"), ("n1", "l1"), ("n0", "l2")], leaves=["l0", "l1", "l2"]
    )
    P = np.array([[0.25, 0.375, 0.375], [0.4, 0.0, 0.6], [1.0, 0.0, 0.0]])
    y = np.array([1, 0, 2])
    rule = Darts(tax, guarantee="expected").fit(P, y)
    assert tax.is_correct(rule.predict(P, accuracy=2 / 3), y).mean() >= 2 / 3
    # The segment starts at the tied breakpoint 0.9749 (2.5 - log2 3) and is the
    # last one: lambda is twice its start, off the breakpoint.
    lam = rule.calibration_curve()["lambda"]
    j = int(np.searchsorted(lam, rule.lambda_for(2 / 3), side="right")) - 1
    assert lam[j] == pytest.approx(0.9749, abs=1e-4) and j == len(lam) - 1
    assert rule.lambda_for(2 / 3) == pytest.approx(2 * lam[j])
    # The step function has no spurious segment between the two tied events.
    assert np.all(np.diff(lam) > 1e-9 * lam[1:])


tied_posteriors = st.builds(
    lambda seed, n, extra, grid: (seed, random_taxonomy(np.random.default_rng(seed), n, extra), grid),
    st.integers(0, 2**32 - 1),
    st.integers(2, 8),
    st.integers(0, 3),
    st.sampled_from([2, 3, 4, 8, 10]),
)


def grid_sample(rng, n, n_leaves, grid):
    """Posteriors on a grid (vote fractions of a forest of ``grid`` trees): many exact ties."""
    votes = rng.multinomial(grid, rng.dirichlet(np.full(n_leaves, 0.5)), size=n)
    return votes / grid, rng.integers(0, n_leaves, n)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tied_posteriors, st.floats(0.05, 1.0), st.sampled_from(["expected", "pac"]))
def test_decide_at_calibrated_lambda_meets_target_on_calibration_data(seeded, target, guarantee):
    seed, tax, grid = seeded
    rng = np.random.default_rng(seed)
    probs, labels = grid_sample(rng, 40, tax.n_leaves, grid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rule = Darts(tax, guarantee=guarantee).fit(probs, labels)
        lam = rule.lambda_for(target)
    curve = rule.calibration_curve()
    acc = tax.is_correct(rule.decide_index(probs, lam), labels).mean()
    if math.isfinite(lam):
        # lambda lies strictly inside its segment (or at 0, the domain's end), and
        # the decisions there are exactly what calibration counted.
        j = int(np.searchsorted(curve["lambda"], lam, side="right")) - 1
        assert lam == 0.0 or curve["lambda"][j] < lam
        assert j + 1 == len(curve["lambda"]) or lam < curve["lambda"][j + 1]
        assert acc == curve["accuracy"][j]
        # Posteriors that round differently (a float32 copy) decide the same at lambda.
        p32 = probs.astype(np.float32).astype(np.float64)
        p32 /= p32.sum(axis=1, keepdims=True)
        assert tax.is_correct(rule.decide_index(p32, lam), labels).mean() == acc
    if guarantee == "expected":
        assert acc >= target


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tied_posteriors, st.sampled_from([Darts, Climbing, LeafGT, FlatClassifier]))
def test_many_targets_are_the_columns_of_single_targets(seeded, cls):
    seed, tax, grid = seeded
    rng = np.random.default_rng(seed)
    probs, labels = grid_sample(rng, 50, tax.n_leaves, grid)
    targets = [0.2, 0.5, 0.7, 0.9, 0.97, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rule = cls(tax, guarantee="expected").fit(probs, labels)
        many = rule.predict_index(probs, accuracy=targets)
        assert many.shape == (len(probs), len(targets))
        for j, t in enumerate(targets):
            np.testing.assert_array_equal(many[:, j], rule.predict_index(probs, accuracy=t))
        assert rule.predict(probs, accuracy=np.array(targets)).shape == many.shape


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(taxonomies, st.sampled_from(["expected", "pac"]))
def test_answer_paths_give_predict_at_every_target(seeded, guarantee):
    seed, tax = seeded
    rng = np.random.default_rng(seed)
    probs, labels = calibrated_sample(rng, 80, tax.n_leaves, 0.5)
    rule = Darts(tax, guarantee=guarantee).fit(probs, labels)
    indptr, mt, node = rule.answer_paths(probs[:30])
    targets = np.r_[rng.uniform(0.01, 1.0, 20), np.unique(mt[mt < 1]), 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cols = rule.predict_index(probs[:30], accuracy=targets)
    root = tax.node_index(tax.root)
    for i in range(30):
        steps_t, steps_v = mt[indptr[i] : indptr[i + 1]], node[indptr[i] : indptr[i + 1]]
        assert steps_t[-1] == 1.0 and steps_v[-1] == root
        assert np.all(np.diff(steps_t) > 0) and np.all(steps_v[1:] != steps_v[:-1])
        for j, t in enumerate(targets):
            assert steps_v[np.argmax(t <= steps_t)] == cols[i, j]
    leaf_at = rule.leaf_at_target(probs[:30])
    is_leaf = np.isin(node[indptr[:-1]], tax.node_index(list(tax.leaves)))
    np.testing.assert_array_equal(np.isnan(leaf_at), ~is_leaf)


def test_one_warning_for_many_failing_targets(tree4):
    rng = np.random.default_rng(0)
    probs, labels = calibrated_sample(rng, 10, 4, 0.5)
    rule = Darts(tree4, guarantee="pac").fit(probs, labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rule.predict_index(probs, accuracy=np.linspace(0.8, 0.99, 50))
    assert len(caught) == 1 and "and 47 more" in str(caught[0].message)

