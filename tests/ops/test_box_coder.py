"""BoxCoder against torchvision's BoxCoder.encode_single / decode_single."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.ops.box_coder import BBOX_XFORM_CLIP, BoxCoder

TOL = {np.float64: 1e-10, np.float32: 1e-5}
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)]


def random_boxes(rng, n, dtype, min_size=1.0):
    xy = rng.uniform(-50, 300, (n, 2))
    wh = rng.uniform(min_size, 120, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def test_clip_constant_is_log_1000_over_16():
    assert BBOX_XFORM_CLIP == math.log(1000.0 / 16)
    assert BoxCoder((1, 1, 1, 1)).bbox_xform_clip == BBOX_XFORM_CLIP


def test_encode_decode_golden():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    reference = np.array([[2.0, 2.0, 22.0, 12.0]])  # target: centre (12, 7), size 20 x 10
    anchor = np.array([[0.0, 0.0, 10.0, 10.0]])     # start:  centre (5, 5),  size 10 x 10
    # dx = (12 - 5) / 10, dy = (7 - 5) / 10, dw = log(20 / 10), dh = log(10 / 10)
    expected = np.array([[0.7, 0.2, math.log(2.0), 0.0]])
    np.testing.assert_allclose(coder.encode(reference, anchor), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(coder.decode(expected, anchor), reference, rtol=0, atol=1e-13)


def test_box_head_weights_golden():
    # weights (10, 10, 5, 5): the same example scaled -> (7, 2, 5 log 2, 0)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    codes = coder.encode(np.array([[2.0, 2.0, 22.0, 12.0]]), np.array([[0.0, 0.0, 10.0, 10.0]]))
    np.testing.assert_allclose(codes, [[7.0, 2.0, 5 * math.log(2.0), 0.0]], rtol=0, atol=1e-14)


def test_decode_clamps_scale_golden():
    # dw = 10 > log(62.5): the width becomes exp(log 62.5) * 10 = 625 (not e^10 * 10), centred on 5
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    out = coder.decode(np.array([[0.0, 0.0, 10.0, 0.0]]), np.array([[0.0, 0.0, 10.0, 10.0]]))
    np.testing.assert_allclose(out, [[5 - 312.5, 0.0, 5 + 312.5, 10.0]], rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_matches_torchvision(torch, torchvision, rng, dtype, weights):
    from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

    gt, proposals = random_boxes(rng, 64, dtype), random_boxes(rng, 64, dtype)
    ours = BoxCoder(weights).encode(gt, proposals)
    theirs = TVBoxCoder(weights).encode_single(torch.from_numpy(gt), torch.from_numpy(proposals)).numpy()
    assert ours.dtype == dtype and ours.shape == (64, 4)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("k", [1, 3])
def test_decode_matches_torchvision(torch, torchvision, rng, dtype, weights, k):
    from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

    boxes = random_boxes(rng, 50, dtype)
    codes = rng.normal(0, 2, (50, 4 * k)).astype(dtype)
    codes[0, 2] = 30.0  # beyond the clip: both must clamp
    ours = BoxCoder(weights).decode(codes, boxes)
    theirs = TVBoxCoder(weights).decode_single(torch.from_numpy(codes), torch.from_numpy(boxes)).numpy()
    assert ours.dtype == dtype and ours.shape == (50, 4 * k)
    # coordinates reach ~1e4 (scale up to 62.5 x 120 px): compare relative to their magnitude
    np.testing.assert_allclose(ours, theirs, rtol=TOL[dtype], atol=TOL[dtype])


def test_decode_casts_boxes_to_codes_dtype():
    out = BoxCoder((1, 1, 1, 1)).decode(np.zeros((2, 4), np.float32), np.array([[0, 0, 4, 4.0]] * 2))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 4, 4]] * 2)


def test_empty_inputs():
    coder = BoxCoder((10, 10, 5, 5))
    assert coder.encode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    assert coder.decode(np.zeros((0, 8)), np.zeros((0, 4))).shape == (0, 8)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(WEIGHTS))
def test_encode_decode_round_trip(seed, weights):
    rng = np.random.default_rng(seed)
    # sides in [5, 120): size ratios stay below 24 < 62.5, so the clip never acts
    gt = random_boxes(rng, 8, np.float64, min_size=5.0)
    anchors = random_boxes(rng, 8, np.float64, min_size=5.0)
    coder = BoxCoder(weights)
    codes = coder.encode(gt, anchors)
    # the round trip is exact up to rounding as long as no log-size ratio reaches the clip
    assert np.all(np.abs(codes[:, 2:] / np.array(weights[2:])) < BBOX_XFORM_CLIP)
    np.testing.assert_allclose(coder.decode(codes, anchors), gt, rtol=0, atol=1e-9)


def test_bad_input_rejected():
    coder = BoxCoder((1, 1, 1, 1))
    good = np.array([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="reference_boxes must be finite"):
        coder.encode(np.array([[0.0, 0.0, np.nan, 1.0]]), good)
    with pytest.raises(ValueError, match="proposals must be finite"):
        coder.encode(good, np.array([[0.0, 0.0, np.inf, 1.0]]))
    with pytest.raises(ValueError, match=r"proposals must have shape \(N, 4\)"):
        coder.encode(good, np.zeros((1, 5)))
    with pytest.raises(ValueError, match="proposals must have as many rows"):
        coder.encode(good, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"rel_codes must have shape \(N, 4k\)"):
        coder.decode(np.zeros((1, 6)), good)
    with pytest.raises(ValueError, match="rel_codes must be finite"):
        coder.decode(np.array([[np.nan, 0, 0, 0]]), good)
    with pytest.raises(ValueError, match="boxes must be finite"):
        coder.decode(np.zeros((1, 4)), np.array([[0.0, 0.0, 1.0, np.inf]]))
    with pytest.raises(ValueError, match="boxes must have as many rows"):
        coder.decode(np.zeros((2, 4)), good)
    with pytest.raises(ValueError, match="weights must be 4 numbers"):
        BoxCoder((1, 1, 1))
    with pytest.raises(ValueError, match="weights must be positive"):
        BoxCoder((1, 1, 0, 1))
