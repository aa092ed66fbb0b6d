"""The contributor-level PAC bound (hedging.groups): exact on clustered data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hedged.hedging import Climbing, Darts, LeafGT
from hedged.hedging.groups import group_lower_bounds
from hedged.taxonomy import Taxonomy

TREE4 = Taxonomy.from_edges([("root", "X"), ("root", "Y"), ("X", "a"), ("X", "b"), ("Y", "c"), ("Y", "d")])


def clustered(rng, n_groups: int, size: int, hard: float = 0.3, wrong: float = 0.9):
    """Posteriors with a group random effect: a 'hard' contributor's photos (probability
    ``hard``) mostly show one wrong class, whatever the model believes."""
    probs = 0.9 * rng.dirichlet(np.full(4, 0.4), size=n_groups * size) + 0.025
    g = np.repeat(np.arange(n_groups), size)
    is_hard = rng.random(n_groups) < hard
    y = np.minimum((probs.cumsum(1) < rng.random((len(probs), 1))).sum(1), 3)
    y = np.where(is_hard[g] & (rng.random(len(probs)) < wrong), rng.integers(0, 4, n_groups)[g], y)
    return probs, y, g


def test_photo_bound_fails_on_clustered_data_and_group_bound_holds():
    """Seeded: 150 calibration draws of 40 contributors x 25 photos, target 0.8, delta 0.05.

    The true accuracy of a lambda comes from 200,000 photos of fresh contributors.
    Counting photos as independent fails in about 13% of draws; the group bound
    stays within delta and still answers below the root in every draw.
    """
    rng = np.random.default_rng(7)
    pop = Darts(TREE4, guarantee="expected").fit(*clustered(rng, 8000, 25)[:2]).calibration_

    def true_accuracy(lam):
        return 1.0 if not np.isfinite(lam) else pop.accuracy[np.searchsorted(pop.starts, lam, "right") - 1]

    target, draws = 0.8, 150
    fails = {"photo": 0, "group": 0}
    finite = 0
    for _ in range(draws):
        p, y, g = clustered(rng, 40, 25)
        photo = Darts(TREE4, delta=0.05).fit(p, y).lambda_for(target)
        group = Darts(TREE4, delta=0.05).fit(p, y, groups=g).lambda_for(target)
        fails["photo"] += true_accuracy(photo) < target
        fails["group"] += true_accuracy(group) < target
        finite += np.isfinite(group)
    assert fails["photo"] / draws > 0.08  # well above delta: P(>= 13 of 150 | 5%) < 0.01
    assert fails["group"] / draws <= 0.05
    assert finite == draws


def test_singleton_groups_give_a_valid_photo_bound():
    # One photo per group: the betting bound is below Clopper-Pearson but of the same order.
    rng = np.random.default_rng(0)
    p, y, _ = clustered(rng, 400, 1, hard=0.0)
    photo = Darts(TREE4).fit(p, y)
    group = Darts(TREE4).fit(p, y, groups=np.arange(len(y)))
    assert group.calibration_.unit == "group" and photo.calibration_.unit == "photo"
    np.testing.assert_array_equal(group.calibration_.starts, photo.calibration_.starts)
    assert np.all(group.calibration_.lower <= photo.calibration_.lower + 0.05)
    assert group.calibration_.lower.max() > 0.8


def test_lower_bound_hand_checks():
    # All 10 groups of 2 right: the capital at t grows by (1 + 0.9 * 2(1 - t)/2) per group
    # once the bets reach their cap; certified t is where it reaches 1/delta.
    sizes = np.full(10, 2.0)
    lb = group_lower_bounds(np.full(10, 2.0), sizes, np.zeros(0, int), np.zeros(0, int), np.zeros(0), 1, 0.05)
    t = lb[0]
    assert 0 < t < 1
    assert 10 * np.log1p(0.9 * (1 - t)) <= np.log(20) + 1e-6  # never more than the capped bets allow
    # Half the groups all wrong: nothing above 0.5 is certified.
    lb = group_lower_bounds(np.r_[np.zeros(5), np.full(5, 2.0)], sizes, np.zeros(0, int), np.zeros(0, int),
                            np.zeros(0), 1, 0.05)
    assert lb[0] < 0.5
    with pytest.raises(ValueError, match="max_group_size"):
        group_lower_bounds(np.ones(2), np.array([1.0, 3.0]), np.zeros(0, int), np.zeros(0, int), np.zeros(0), 1,
                           0.05, max_group_size=2)


@pytest.mark.parametrize("cls", [Darts, Climbing, LeafGT])
def test_every_rule_accepts_groups_and_checks_them(cls):
    rng = np.random.default_rng(1)
    p, y, g = clustered(rng, 30, 10)
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
