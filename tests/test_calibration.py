import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedged.models.calibration import accuracy, expected_calibration_error, fit_temperature, nll
from hedged.models.tta import average_view_probs


def _sample(rng, logits, t):
    p = np.exp(logits / t - (logits / t).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_recovers_known_temperature(true_t):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6000, 6)) * 3.0
    y = _sample(rng, z, true_t)
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.1)


def test_view_logits_fit_the_view_averaged_posterior():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3000, 3, 4)) * 3.0
    y = _sample(rng, z.mean(axis=1), 1.5)
    t = fit_temperature(z, y)
    assert 0.1 < t < 10  # interior optimum, so both neighbours below are inside the bounds
    best = nll(average_view_probs(z, t), y)
    for other in (t * 0.8, t * 1.25):
        assert best <= nll(average_view_probs(z, other), y) + 1e-9


def test_metrics_hand_computed():
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    y = np.array([0, 0, 1])
    assert accuracy(p, y) == pytest.approx(1 / 3)
    assert nll(p, y) == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.3)) / 3)
    # bins (15): 0.9 -> bin 13 (correct), 0.6 -> bin 9 (wrong), 0.7 -> bin 10 (wrong)
    assert expected_calibration_error(p, y) == pytest.approx((0.1 + 0.6 + 0.7) / 3)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(2, 6), st.integers(0, 10_000))
def test_ece_in_unit_interval(n, k, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k), size=n)
    y = rng.integers(0, k, size=n)
    assert 0.0 <= expected_calibration_error(p, y) <= 1.0


@pytest.mark.parametrize(
    "z, y, match",
    [
        (np.zeros((0, 3)), np.zeros(0, int), "N > 0"),
        (np.zeros((2, 3)), np.array([0, 3]), "labels"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "integer"),
        (np.full((2, 3), np.nan), np.array([0, 1]), "NaN"),
        (np.zeros(3), np.array([0]), "shape"),
    ],
)
def test_bad_inputs_refused(z, y, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(z, y)
