"""The contributor-level PAC bound (hedging.groups): valid on clustered data, whatever the ids say."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hedged.hedging import Climbing, Darts, LeafGT
from hedged.hedging import groups as groups_mod
from hedged.hedging.groups import capped_accuracy, check_cap, group_lower_bounds, visiting_order
from hedged.hedging.simulation import (
    DESIGNED_CALIBRATION_SIZES,
    SHIPPED_CALIBRATION_SIZES,
    TREE4,
    Population,
    accuracy_at,
    capped_weights,
    clustered_sample,
    icc,
    weighted_accuracy_curve,
)

NO_EVENTS = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
TARGETS = (0.8, 0.9, 0.95)


def violation_rates(sizes, population, reps, seed, cap, attack=None, id_order=False, delta=0.05):
    """Share of calibration draws whose certified lambda has population accuracy below each target."""
    rng = np.random.default_rng(seed)
    pp, py, pg = clustered_sample(rng, np.tile(np.asarray(sizes), 150), population)
    truth = weighted_accuracy_curve(Darts(TREE4), pp, py, capped_weights(pg, cap))
    fails = np.zeros(len(TARGETS))
    certified = np.zeros(len(TARGETS))
    order = groups_mod.visiting_order
    for _ in range(reps):
        p, y, g = clustered_sample(rng, sizes, population)
        ids = g
        if attack is not None:
            # ids chosen so that sorting them puts the best (or the smallest) contributors first
            key = -np.bincount(g, weights=p.argmax(1) == y) / np.bincount(g) if attack == "best" else np.bincount(g)
            ids = np.argsort(np.argsort(key, kind="stable"), kind="stable")[g]
        if id_order:
            groups_mod.visiting_order = lambda n, seed=0: np.arange(n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rule = Darts(TREE4, delta=delta, group_cap=cap).fit(p, y, ids)
        finally:
            groups_mod.visiting_order = order
        lam, _ = rule.calibration_.select_many(np.array(TARGETS))
        fails += [accuracy_at(truth, t) < a for t, a in zip(lam, TARGETS)]
        certified += np.isfinite(lam)
    return fails / reps, certified / reps


def within(rate, reps, delta=0.05):
    """rate <= delta within three Monte Carlo standard errors (of a rate equal to delta)."""
    return rate <= delta + 3 * math.sqrt(delta * (1 - delta) / reps)


# ---------------------------------------------------------------- validity under clustering


@pytest.mark.slow
@pytest.mark.parametrize("population", [Population(0.08, 1.0, 0.1), Population(0.1, 0.1, 0.1)],
                         ids=["icc~0.05", "icc~0.15"])
def test_seller_bound_holds_on_clustered_contributors(population):
    """Seeded: 150 draws of the designed calibration split's contributor sizes (117 contributors),
    correctness correlated within a contributor (ICC of top-1 correctness 0.05-0.15). The
    default bound (pac-seller) breaks its promise in at most delta of the draws, within three
    Monte Carlo standard errors, at 0.8, 0.9 and 0.95, and still certifies 0.8 and 0.9 in most."""
    rng = np.random.default_rng(1)
    p, y, g = clustered_sample(rng, np.tile(DESIGNED_CALIBRATION_SIZES, 20), population)
    assert 0.04 <= icc(p.argmax(1) == y, g) <= 0.2
    reps = 150
    rate, certified = violation_rates(DESIGNED_CALIBRATION_SIZES, population, reps, seed=2, cap=1)
    assert all(within(r, reps) for r in rate), rate
    assert certified[0] > 0.9 and certified[1] > 0.5


@pytest.mark.slow
def test_photo_bound_is_overstated_and_group_bound_holds_with_the_old_split_sizes():
    """The old calibration split (65 contributors: 115, 88, 43, ... photos): counting photos as
    independent breaks the promise far more often than delta; the capped group bound does not."""
    population, reps = Population(0.1, 0.1, 0.1), 120
    rng = np.random.default_rng(3)
    pp, py, pg = clustered_sample(rng, np.tile(SHIPPED_CALIBRATION_SIZES, 150), population)
    truth = weighted_accuracy_curve(Darts(TREE4), pp, py, capped_weights(pg, None))
    fails = 0
    for _ in range(reps):
        p, y, _ = clustered_sample(rng, SHIPPED_CALIBRATION_SIZES, population)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lam = Darts(TREE4).fit(p, y).lambda_for(0.8)
        fails += accuracy_at(truth, lam) < 0.8
    assert fails / reps > 0.15  # P(>= 19 of 120 | 5%) < 1e-4
    rate, _ = violation_rates(SHIPPED_CALIBRATION_SIZES, population, reps, seed=4, cap=10)
    assert all(within(r, reps) for r in rate), rate


@pytest.mark.slow
def test_rank_id_attack_works_on_id_order_and_not_on_the_seeded_order():
    """Ids that sort the best contributors first: visiting the groups in id order (as before)
    certifies false targets far more often than delta; the seeded order is unaffected."""
    population, reps = Population(0.1, 0.1, 0.1), 120
    before, _ = violation_rates(DESIGNED_CALIBRATION_SIZES, population, reps, seed=5, cap=1, attack="best",
                                id_order=True)
    assert before.max() > 0.3
    now, _ = violation_rates(DESIGNED_CALIBRATION_SIZES, population, reps, seed=5, cap=1, attack="best")
    assert all(within(r, reps) for r in now), now
    small, _ = violation_rates(DESIGNED_CALIBRATION_SIZES, population, reps, seed=6, cap=10, attack="small")
    assert all(within(r, reps) for r in small), small


# ---------------------------------------------------------------- the order, the scale, the cap


def test_visiting_order_is_a_seeded_permutation_independent_of_the_ids():
    a = visiting_order(50)
    np.testing.assert_array_equal(np.sort(a), np.arange(50))
    np.testing.assert_array_equal(a, visiting_order(50))
    assert not np.array_equal(a, np.arange(50))
    assert not np.array_equal(a, visiting_order(50, seed=1))


def test_relabelling_ids_keeps_the_bound_distribution_not_the_id_order():
    # The same groups under ids that sort them in opposite orders: the bounds differ only by the
    # random order's luck, not systematically (both certify about the same target).
    rng = np.random.default_rng(8)
    p, y, g = clustered_sample(rng, DESIGNED_CALIBRATION_SIZES, Population(0.08, 1.0, 0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        up = Darts(TREE4, group_cap=1).fit(p, y, g).lambda_for(0.85)
        down = Darts(TREE4, group_cap=1).fit(p, y, 1000 - g).lambda_for(0.85)
    assert math.isfinite(up) and math.isfinite(down)


def test_lower_bound_hand_checks():
    # 10 groups of 2 photos, all right, cap 2: X_g = 1 - t for every group. The bets reach their
    # cap 0.9 once the running variance is small, so the capital never exceeds (1 + 0.9 (1 - t))^10.
    sizes = np.full(10, 2.0)
    lb = group_lower_bounds(np.full(10, 2.0), sizes, *NO_EVENTS, 1, 0.05, cap=2)[0]
    assert 0 < lb < 1
    assert 10 * np.log1p(0.9 * (1 - lb)) >= np.log(20) - 1e-6
    # Half the groups all wrong: nothing above 0.5 is certified.
    lb = group_lower_bounds(np.r_[np.zeros(5), np.full(5, 2.0)], sizes, *NO_EVENTS, 1, 0.05, cap=2)[0]
    assert lb < 0.5
    # A group larger than the cap weighs as the cap: one group of 100 right photos and 9 single
    # wrong photos with cap 1 is 1 right contributor of 10 (accuracy 0.1): nothing above 0.1.
    lb = group_lower_bounds(np.r_[100.0, np.zeros(9)], np.r_[100.0, np.ones(9)], *NO_EVENTS, 1, 0.05, cap=1)[0]
    assert lb <= 0.1


@pytest.mark.parametrize("cap", [0, -1, 1.5, True, "3"])
def test_bad_caps_are_refused(cap):
    with pytest.raises(ValueError, match="group_cap must be a positive integer"):
        check_cap(cap)
    with pytest.raises(ValueError, match="group_cap"):
        Darts(TREE4, group_cap=cap).fit(np.full((2, 4), 0.25), [0, 1], [0, 1])


def test_capped_accuracy_by_hand():
    # contributor a: 3 of 3 right; b: 0 of 1.
    assert capped_accuracy([1, 1, 1, 0], ["a", "a", "a", "b"], cap=1) == 0.5
    assert capped_accuracy([1, 1, 1, 0], ["a", "a", "a", "b"], cap=2) == pytest.approx(2 / 3)
    assert capped_accuracy([1, 1, 1, 0], ["a", "a", "a", "b"], cap=100) == 0.75


def test_singleton_groups_give_a_bound_close_to_the_photo_bound():
    # One photo per group: the betting bound is below Clopper-Pearson but of the same order.
    rng = np.random.default_rng(0)
    p, y, _ = clustered_sample(rng, np.ones(400, int), Population(0.0))
    photo = Darts(TREE4).fit(p, y)
    group = Darts(TREE4, group_cap=1).fit(p, y, groups=np.arange(len(y)))
    assert group.calibration_.unit == "group" and photo.calibration_.unit == "photo"
    np.testing.assert_array_equal(group.calibration_.starts, photo.calibration_.starts)
    assert np.all(group.calibration_.lower <= photo.calibration_.lower + 0.05)
    assert group.calibration_.lower.max() > 0.8


def test_root_warning_counts_groups_not_photos():
    rng = np.random.default_rng(2)
    p, y, g = clustered_sample(rng, [30, 30, 30], Population(0.3, 1.0))
    with pytest.warns(UserWarning, match=r"on 3 calibration groups"):
        Darts(TREE4, group_cap=1).fit(p, y, g).lambda_for(0.99)


@pytest.mark.parametrize("cls", [Darts, Climbing, LeafGT])
def test_every_rule_accepts_groups_and_checks_them(cls):
    rng = np.random.default_rng(1)
    p, y, g = clustered_sample(rng, np.full(30, 10), Population(0.1, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rule = cls(TREE4).fit(p, y, groups=[f"sender{i}" for i in g])
        assert rule.n_groups_ == 30
        # "expected" ignores groups: same as without.
        a = cls(TREE4, guarantee="expected").fit(p, y, groups=g).predict_index(p, 0.8)
        b = cls(TREE4, guarantee="expected").fit(p, y).predict_index(p, 0.8)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="groups must have shape"):
        cls(TREE4).fit(p, y, groups=g[:-1])
    # The group bound is the stricter one here: never a less hedged answer.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_photo = cls(TREE4).fit(p, y)._parameter_for(0.7)
        t_group = rule._parameter_for(0.7)
    assert t_group >= t_photo


# ---------------------------------------------------------------- many targets at once


def test_simultaneous_targets_split_delta():
    rng = np.random.default_rng(4)
    p, y, g = clustered_sample(rng, DESIGNED_CALIBRATION_SIZES, Population(0.05, 1.0, 0.1))
    for groups in (None, g):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rule = Darts(TREE4, group_cap=1).fit(p, y, groups)
            one = rule.calibration_
            three = rule.simultaneous(3)
            assert three.delta == pytest.approx(0.05 / 3)
            # a smaller delta never certifies more: lower bounds below the single-target ones
            assert np.all(three.lower <= one.lower + 1e-12)
            single = rule.predict_index(p, [0.8, 0.9, 0.95])
            joint = rule.predict_index(p, [0.8, 0.9, 0.95], simultaneous=True)
            lam_single = one.select_many(np.array([0.8, 0.9, 0.95]))[0]
            lam_joint = three.select_many(np.array([0.8, 0.9, 0.95]))[0]
        assert np.all(lam_joint >= lam_single)
        # the simultaneous answers are the single-target answers at the larger lambdas
        np.testing.assert_array_equal(joint, np.stack([rule.decide_index(p, t) for t in lam_joint], axis=1))
        assert single.shape == joint.shape == (len(y), 3)
    with pytest.raises(ValueError, match="n_targets"):
        rule.simultaneous(0)


# ---------------------------------------------------------------- what users see


def test_rejected_photos_count_as_misses_at_every_lambda():
    # Three photos, all right at lambda = 0 (confident and correct); one is turned away by the
    # detector: the calibration accuracy is 2/3 everywhere, and the root cannot rescue it.
    p = np.array([[0.97, 0.01, 0.01, 0.01], [0.01, 0.97, 0.01, 0.01], [0.01, 0.01, 0.97, 0.01]])
    y = np.array([0, 1, 2])
    rule = Darts(TREE4, guarantee="expected").fit(p, y, rejected=[False, True, False])
    curve = rule.calibration_curve()
    np.testing.assert_allclose(curve["accuracy"], 2 / 3)
    assert rule.n_rejected_ == 1
    with pytest.warns(UserWarning, match="no lambda reaches calibration accuracy 0.9"):
        assert rule.lambda_for(0.9) == math.inf
    assert rule.lambda_for(0.6) == 0.0
    with pytest.raises(ValueError, match="rejected must have shape"):
        Darts(TREE4).fit(p, y, rejected=[True])
