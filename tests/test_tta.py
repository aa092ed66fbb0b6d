import numpy as np
import pytest
import torch

from hedged.models.tta import average_view_probs, rotate, rotate_views, split_views


def test_angle_zero_is_identity():
    x = torch.randn(3, 3, 10, 10)
    assert torch.equal(rotate_views(x, [0]), x)


def test_four_right_angles_are_exact_rot90_and_angle_major():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    v = rotate_views(x, [0, 90, 180, 270])
    assert v.shape == (8, 1, 3, 3)
    # rows j*B..(j+1)*B are the batch rotated by angles[j]; 90 = counter-clockwise.
    assert torch.equal(v[2:4], torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(v[4:6], x.flip(-1).flip(-2))
    # the top-right pixel moves to the top-left under a counter-clockwise quarter turn
    assert v[2, 0, 0, 0] == x[0, 0, 0, 2]
    # four quarter turns compose to the identity
    assert torch.equal(rotate(v[6:8], 90), x)


def test_small_angle_keeps_shape_fills_corners_with_zero():
    x = torch.ones(1, 3, 32, 32)
    r = rotate(x, 30)
    assert r.shape == x.shape
    assert r[0, :, 0, 0].abs().max() == 0  # corner uncovered -> mean colour (0 after normalising)
    assert torch.allclose(r[0, :, 16, 16], torch.ones(3))


def test_split_views_inverts_stacking():
    x = torch.randn(5, 3, 8, 8)
    out = rotate_views(x, [0, 90, 180])
    per = split_views(out, 3)
    assert per.shape == (5, 3, 3, 8, 8)
    assert torch.equal(per[:, 0], x)
    assert torch.equal(per[:, 1], torch.rot90(x, 1, dims=(-2, -1)))


def test_average_view_probs_hand_computed():
    z = np.log(np.array([[[1.0, 3.0], [1.0, 1.0]]]))  # views: (0.25, 0.75) and (0.5, 0.5)
    np.testing.assert_allclose(average_view_probs(z), [[0.375, 0.625]])
    # temperature 2 on the first view: softmax(log([1, 3]) / 2) = (1, sqrt 3) / (1 + sqrt 3)
    s = np.sqrt(3.0)
    np.testing.assert_allclose(average_view_probs(z[:, :1], 2.0), [[1 / (1 + s), s / (1 + s)]])


@pytest.mark.parametrize("bad", [[], "0,90", [float("nan")]])
def test_bad_angles_refused(bad):
    with pytest.raises(ValueError, match="angles"):
        rotate_views(torch.zeros(1, 3, 4, 4), bad)


def test_bad_batch_shape_refused():
    with pytest.raises(ValueError, match="batch"):
        rotate_views(torch.zeros(3, 4, 4), [0])


@pytest.mark.parametrize("angle", [15.0, -15.0, 7.5, 30.0, 200.0, 90.0])
@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (1, 3, 20, 28), (2, 4, 9, 9)])
def test_rotation_is_bit_equal_to_torchvision(angle, shape):
    # the torch-only rotation must give the calibration posteriors' exact pixels
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    from hedged.models.tta import _rotate_bilinear

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ref = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    assert torch.equal(_rotate_bilinear(x, angle), ref)
