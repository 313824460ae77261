"""RoIAlign (minimaskrcnn.ops.roi_align) against torchvision's kernel and autograd, hand-worked cases,
every edge case of the reference notes, finite differences and properties.

Tolerances: max-abs difference to torchvision <= 1e-10 in float64 and <= 1e-5 in float32 (values are
O(1)); in practice the CPU tiers reproduce torchvision's arithmetic order and agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.nn.gradcheck import numerical_gradient, rel_error
from minimaskrcnn.ops.roi_align import roi_align, roi_align_backward

TOL = {np.float64: 1e-10, np.float32: 1e-5}
CPU_TIERS = ("reference", "numba")


def torchvision_roi_align(torch, torchvision, x, rois, output_size, spatial_scale, sampling_ratio, aligned,
                          dout=None):
    """torchvision's forward, and (if ``dout`` is given) the input gradient from torch autograd."""
    xt = torch.tensor(x, requires_grad=True)
    rt = torch.tensor(rois.astype(x.dtype))
    out = torchvision.ops.roi_align(xt, rt, output_size, spatial_scale, sampling_ratio, aligned)
    if dout is None:
        return out.detach().numpy()
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy()


def check_against_torchvision(torch, torchvision, x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                              aligned=False, backends=CPU_TIERS, seed=0):
    """Forward and backward of each backend against torchvision; returns our numba output."""
    dtype = x.dtype.type
    PH, PW = (output_size, output_size) if isinstance(output_size, int) else output_size
    dout = np.random.default_rng(seed).standard_normal((rois.shape[0], x.shape[1], PH, PW)).astype(dtype)
    want, want_dx = torchvision_roi_align(torch, torchvision, x, rois, output_size, spatial_scale,
                                          sampling_ratio, aligned, dout)
    got = None
    for backend in backends:
        got = roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned, backend=backend)
        dx = roi_align_backward(dout, rois, x.shape, output_size, spatial_scale, sampling_ratio, aligned,
                                backend=backend)
        assert got.dtype == dtype and dx.dtype == dtype
        assert got.shape == want.shape and dx.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype], err_msg=f"forward, {backend}")
        np.testing.assert_allclose(dx, want_dx, rtol=0, atol=TOL[dtype], err_msg=f"backward, {backend}")
    return got


def random_rois(rng, K, N, H, W, dtype, lo=-3.0, spread=None):
    """K RoIs with batch indices in [0, N), corners in roughly [lo, W + 3] (partly outside)."""
    spread = spread if spread is not None else max(H, W) + 3 - lo
    x1y1 = rng.uniform(lo, lo + spread, (K, 2))
    wh = rng.uniform(0, spread / 2, (K, 2))
    b = rng.integers(0, N, (K, 1))
    return np.concatenate([b, x1y1, x1y1 + wh], axis=1).astype(dtype)


def ramp(H, W, dtype=np.float64):
    """A 1×1×H×W map with v(y, x) = 10·y + x: bilinear interpolation reproduces a linear function
    exactly, so a sample at (y, x) inside [0, H−1]×[0, W−1] reads 10·y + x."""
    y, x = np.mgrid[0:H, 0:W]
    return (10.0 * y + x).astype(dtype)[None, None]


# --------------------------------------------------------------------------------------------------
# Hand-worked cases
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_not_aligned(backend):
    # Box (x1, y1, x2, y2) = (0.5, 1, 2.5, 2), 1×2 bins, one sample per bin, aligned=False:
    # roi_w = 2, roi_h = 1 → bin 1×1; the sample is the bin centre:
    #   bin (0,0): y = 1 + 0.5 = 1.5, x = 0.5 + 0.5 = 1.0 → 10·1.5 + 1.0 = 16
    #   bin (0,1): y = 1.5,           x = 0.5 + 1 + 0.5 = 2.0 → 15 + 2 = 17
    out = roi_align(ramp(4, 4), np.array([[0, 0.5, 1, 2.5, 2]]), (1, 2), 1.0, 1, False, backend=backend)
    np.testing.assert_array_equal(out, [[[[16.0, 17.0]]]])


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_aligned_shifts_half_pixel(backend):
    # Same box, aligned=True: every coordinate moves by −0.5 → start (x, y) = (0, 0.5), size 2×1:
    #   bin (0,0): y = 0.5 + 0.5 = 1.0, x = 0 + 0.5 = 0.5 → 10 + 0.5 = 10.5
    #   bin (0,1): y = 1.0,             x = 1.5          → 10 + 1.5 = 11.5
    out = roi_align(ramp(4, 4), np.array([[0, 0.5, 1, 2.5, 2]]), (1, 2), 1.0, 1, True, backend=backend)
    np.testing.assert_array_equal(out, [[[[10.5, 11.5]]]])


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_average_of_grid(backend):
    # Box (0, 0, 2, 2), one bin, sampling_ratio 2 → samples at y, x ∈ {0.5, 1.5}:
    # values 10y + x = 5.5, 6.5, 15.5, 16.5 → mean 11.0.
    out = roi_align(ramp(4, 4), np.array([[0, 0, 0, 2, 2.0]]), 1, 1.0, 2, False, backend=backend)
    np.testing.assert_array_equal(out, [[[[11.0]]]])


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_dropped_samples_still_count(backend):
    # 2×2 map [[1, 2], [3, 4]], box (1, 1, 3, 3), one bin, sampling 2 → samples at 1.5 and 2.5.
    # 2.5 > H = 2: three of the four samples (any coordinate 2.5) are dropped; the one at
    # (1.5, 1.5) is past the last row/column and clamps to pixel (1, 1) = 4. count stays 4:
    # output = 4 / 4 = 1.
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = roi_align(x, np.array([[0, 1, 1, 3, 3.0]]), 1, 1.0, 2, False, backend=backend)
    np.testing.assert_array_equal(out, [[[[1.0]]]])


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_backward(backend):
    # Box (0.5, 1, 2.5, 2) as in the first case, dout = 1 on bin (0,0), 0 on bin (0,1).
    # Its sample (y, x) = (1.5, 1.0): y_low = 1, ly = 0.5; x_low = 1, lx = 0 → weights
    # hy·hx = 0.5 on (1,1), hy·lx = 0 on (1,2), ly·hx = 0.5 on (2,1), ly·lx = 0 on (2,2); count = 1.
    dx = roi_align_backward(np.array([[[[1.0, 0.0]]]]), np.array([[0, 0.5, 1, 2.5, 2]]), (1, 1, 4, 4),
                            (1, 2), 1.0, 1, False, backend=backend)
    want = np.zeros((1, 1, 4, 4))
    want[0, 0, 1, 1] = want[0, 0, 2, 1] = 0.5
    np.testing.assert_array_equal(dx, want)


# --------------------------------------------------------------------------------------------------
# Against torchvision: random cases
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
def test_random_against_torchvision(torch, torchvision, dtype, aligned, sampling_ratio):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    rois = random_rois(rng, 10, 2, 7, 9, dtype)
    check_against_torchvision(torch, torchvision, x, rois, (3, 2), 1.0, sampling_ratio, aligned)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_larger_random_numba(torch, torchvision, dtype):
    # The numba tier on a size where its channel blocks and RoI chunks matter (reference too slow).
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 37, 20, 23)).astype(dtype)
    rois = random_rois(rng, 41, 2, 20, 23, dtype)
    for aligned in (False, True):
        check_against_torchvision(torch, torchvision, x, rois, 5, 0.8, 2, aligned, backends=("numba",))


# --------------------------------------------------------------------------------------------------
# Edge cases from the reference notes, one test each
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_samples_exactly_at_minus_one_and_at_H(torch, torchvision, dtype):
    # One sample per 1×1 bin at the box centre (aligned=False, box 1×1). Map 2×2 [[1, 2], [3, 4]].
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=dtype)
    rois = np.array([
        [0, 0, -1.5, 1, -0.5],    # centre (y, x) = (−1, 0.5): kept, y clamps to 0 → (1 + 2)/2 = 1.5
        [0, 0, 1.5, 1, 2.5],      # centre (2, 0.5): y = H kept, clamps to row 1 → (3 + 4)/2 = 3.5
        [0, -1.5, 0, -0.5, 1],    # centre (0.5, −1): x = −1 kept → column 0 → (1 + 3)/2 = 2.0
        [0, 1.5, 0, 2.5, 1],      # centre (0.5, 2): x = W kept → column 1 → (2 + 4)/2 = 3.0
        [0, 0, -1.75, 1, -0.75],  # centre y = −1.25 < −1: dropped → 0
        [0, 0, 1.75, 1, 2.75],    # centre y = 2.25 > H: dropped → 0
    ], dtype=dtype)
    out = check_against_torchvision(torch, torchvision, x, rois, 1, 1.0, 1, False)
    np.testing.assert_array_equal(out.ravel(), np.array([1.5, 3.5, 2.0, 3.0, 0.0, 0.0], dtype=dtype))


@pytest.mark.parametrize("aligned", [False, True])
def test_boxes_partly_outside(torch, torchvision, aligned):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 6, 6))
    rois = np.array([[0, -4, -3, 3, 2], [0, 3, 4, 10, 12], [0, -2, 2, 8, 3.5]])
    for sr in (-1, 2):
        check_against_torchvision(torch, torchvision, x, rois, (2, 3), 1.0, sr, aligned)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_boxes_wholly_outside(torch, torchvision, aligned, sampling_ratio):
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 5))
    rois = np.array([[0, 20, 20, 30, 30], [0, -30, -30, -10, -10], [0, 7.5, 0, 9, 5]])
    out = check_against_torchvision(torch, torchvision, x, rois, 2, 1.0, sampling_ratio, aligned)
    np.testing.assert_array_equal(out, 0.0)  # every sample is beyond −1 or beyond H/W


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_zero_size_boxes(torch, torchvision, aligned, sampling_ratio):
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6)) + 3.0
    rois = np.array([[0, 2, 2, 2, 2], [0, 1.3, 4.1, 1.3, 4.1], [0, 2, 1, 2, 5], [0, 1, 3, 5, 3]])
    out = check_against_torchvision(torch, torchvision, x, rois, 2, 1.0, sampling_ratio, aligned)
    if aligned and sampling_ratio <= 0:
        # roi_w = 0 → adaptive grid ceil(0 / 2) = 0 → no samples → zeros (a side of zero suffices).
        np.testing.assert_array_equal(out, 0.0)
    else:
        # Not aligned: the box is forced to 1×1. Fixed grid: samples exist even for a point box.
        assert np.all(out != 0.0)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_reversed_boxes(torch, torchvision, aligned, sampling_ratio):
    x = np.random.default_rng(6).standard_normal((1, 2, 8, 8))
    # x2 < x1 and/or y2 < y1. Aligned + adaptive uses reversals small enough that the grid is
    # ceil(negative / bins) = 0 on both sides: torchvision's kernel cannot allocate a grid whose
    # product of sides is negative (one side > 0 bins reversed, the other not) and raises.
    if aligned and sampling_ratio <= 0:
        rois = np.array([[0, 5, 5, 4, 4.2], [0, 3, 3, 2.5, 6], [0, 1, 6, 6, 5.5]])
    else:
        rois = np.array([[0, 6, 6, 2, 1], [0, 3, 3, 1.5, 7], [0, 1, 6.5, 6, 0.5]])
    check_against_torchvision(torch, torchvision, x, rois, (2, 2), 1.0, sampling_ratio, aligned)


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_reversed_aligned_adaptive_negative_grid_is_zero(backend):
    # A box reversed by more than one bin on one side only: grid_h = ceil(−3/1) = −3, grid_w = 1.
    # torchvision raises here (negative grid allocation); we return zeros, like any empty grid.
    x = np.ones((1, 1, 8, 8))
    out = roi_align(x, np.array([[0, 1, 6, 2, 3.0]]), 1, 1.0, -1, True, backend=backend)
    np.testing.assert_array_equal(out, 0.0)
    dx = roi_align_backward(np.ones((1, 1, 1, 1)), np.array([[0, 1, 6, 2, 3.0]]), x.shape, 1, 1.0, -1, True,
                            backend=backend)
    np.testing.assert_array_equal(dx, 0.0)


@pytest.mark.parametrize("backend", CPU_TIERS)
@pytest.mark.parametrize("as_list", [False, True])
def test_empty_box_list(backend, as_list):
    x = np.ones((2, 3, 5, 5), dtype=np.float32)
    boxes = [np.zeros((0, 4)), np.zeros((0, 4))] if as_list else np.zeros((0, 5))
    out = roi_align(x, boxes, (2, 3), backend=backend)
    assert out.shape == (0, 3, 2, 3) and out.dtype == np.float32
    dx = roi_align_backward(np.zeros((0, 3, 2, 3), np.float32), boxes, x.shape, (2, 3), backend=backend)
    assert dx.shape == x.shape and dx.dtype == np.float32 and not dx.any()


def test_batch_index_above_zero(torch, torchvision):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 6, 7))
    rois = np.array([[2, 1, 1, 5, 4], [1, 0, 0, 3, 3], [2, 2, 0, 6, 6]])
    check_against_torchvision(torch, torchvision, x, rois, 2, 1.0, 2, False)
    # Image 0 got no RoI: its gradient is exactly zero.
    dx = roi_align_backward(np.ones((3, 2, 2, 2)), rois, x.shape, 2, 1.0, 2, False)
    assert not dx[0].any() and dx[2].any()


@pytest.mark.parametrize("aligned", [False, True])
def test_spatial_scale(torch, torchvision, aligned):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 8, 8))
    rois = random_rois(rng, 6, 1, 64, 64, np.float64, lo=-8.0)
    for scale in (0.125, 0.3, 2.0):
        check_against_torchvision(torch, torchvision, x, rois, 3, scale, -1, aligned)


def test_batch_index_is_truncated(torch, torchvision):
    x = np.random.default_rng(9).standard_normal((2, 1, 4, 4))
    a = roi_align(x, np.array([[1.7, 0, 0, 3, 3]]), 2)
    b = roi_align(x, np.array([[1.0, 0, 0, 3, 3]]), 2)
    np.testing.assert_array_equal(a, b)
    check_against_torchvision(torch, torchvision, x, np.array([[1.7, 0, 0, 3, 3]]), 2)


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_non_contiguous_input(torch, torchvision, backend):
    rng = np.random.default_rng(10)
    base = rng.standard_normal((2, 6, 9, 4))
    x = base.transpose(0, 1, 3, 2)[:, ::2]  # (2, 3, 4, 9), neither C- nor F-contiguous
    assert not x.flags.c_contiguous
    rois = random_rois(rng, 5, 2, 4, 9, np.float64)
    check_against_torchvision(torch, torchvision, np.ascontiguousarray(x), rois, 2, 1.0, 2, True,
                              backends=(backend,))
    np.testing.assert_array_equal(roi_align(x, rois, 2, 1.0, 2, True, backend=backend),
                                  roi_align(np.ascontiguousarray(x), rois, 2, 1.0, 2, True, backend=backend))
    g = rng.standard_normal((2 * 5, 3, 2, 2))[::2]  # non-contiguous grad_output too
    np.testing.assert_array_equal(roi_align_backward(g, rois, x.shape, 2, 1.0, 2, True, backend=backend),
                                  roi_align_backward(np.ascontiguousarray(g), rois, x.shape, 2, 1.0, 2, True,
                                                     backend=backend))


def test_list_of_boxes_equals_k5(torch, torchvision):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    b0 = rng.uniform(0, 5, (3, 4)).astype(np.float32)
    b1 = rng.uniform(0, 5, (2, 4)).astype(np.float32)
    rois = np.concatenate([np.c_[np.zeros(3), b0], np.c_[np.ones(2), b1]]).astype(np.float32)
    np.testing.assert_array_equal(roi_align(x, [b0, b1], 3), roi_align(x, rois, 3))
    want = torchvision.ops.roi_align(torch.tensor(x), [torch.tensor(b0), torch.tensor(b1)], 3).numpy()
    np.testing.assert_allclose(roi_align(x, [b0, b1], 3), want, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Gradient check and properties
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_gradient_check(aligned, sampling_ratio):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 2, 5, 6))
    rois = random_rois(rng, 4, 2, 5, 6, np.float64)
    dout = rng.standard_normal((4, 2, 2, 3))
    num = numerical_gradient(lambda: roi_align(x, rois, (2, 3), 1.0, sampling_ratio, aligned), x, dout)
    dx = roi_align_backward(dout, rois, x.shape, (2, 3), 1.0, sampling_ratio, aligned)
    assert rel_error(dx, num) < 1e-7


box_inside = st.tuples(st.floats(0, 6), st.floats(0, 6), st.floats(0, 6), st.floats(0, 6)).map(
    lambda t: (min(t[0], t[2]), min(t[1], t[3]), max(t[0], t[2]), max(t[1], t[3])))


@settings(max_examples=40, deadline=None)
@given(value=st.floats(-100, 100), boxes=st.lists(box_inside, min_size=1, max_size=4),
       aligned=st.booleans(), sampling_ratio=st.sampled_from([-1, 1, 2, 3]))
def test_property_constant_map(value, boxes, aligned, sampling_ratio):
    # On an 8×8 map, boxes inside [0, 6]² keep every sample inside [−1, 8]: each reads the constant
    # with weights summing to 1, so every bin is the constant (up to rounding) — unless the grid is
    # empty (aligned zero-size box with adaptive sampling), which gives 0.
    x = np.full((1, 2, 8, 8), value)
    rois = np.array([(0,) + b for b in boxes])
    out = roi_align(x, rois, (2, 2), 1.0, sampling_ratio, aligned)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        # (the kernel's own arithmetic for the aligned size: (x2 − ½) − (x1 − ½))
        empty = aligned and sampling_ratio <= 0 and min((x2 - 0.5) - (x1 - 0.5), (y2 - 0.5) - (y1 - 0.5)) <= 0
        np.testing.assert_allclose(out[k], 0.0 if empty else value, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(boxes=st.lists(box_inside, min_size=1, max_size=4), aligned=st.booleans(),
       sampling_ratio=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16))
def test_property_gradient_sum(boxes, aligned, sampling_ratio, seed):
    # Every sample of a box well inside the map spreads its gradient g/count with weights summing to
    # 1, and each bin has exactly count samples: sum(dx) = sum(dout).
    rng = np.random.default_rng(seed)
    rois = np.array([(0,) + b for b in boxes])
    dout = rng.standard_normal((len(boxes), 2, 3, 3))
    dx = roi_align_backward(dout, rois, (1, 2, 8, 8), 3, 1.0, sampling_ratio, aligned)
    np.testing.assert_allclose(dx.sum(), dout.sum(), rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), aligned=st.booleans(), sampling_ratio=st.sampled_from([-1, 0, 1, 2]),
       dtype=st.sampled_from([np.float32, np.float64]), scale=st.sampled_from([1.0, 0.5, 0.25]))
def test_property_tiers_agree_and_adjoint(seed, aligned, sampling_ratio, dtype, scale):
    # The reference and numba tiers agree exactly (same arithmetic in the same order), and backward
    # is the adjoint of the (linear) forward: <roi_align(x), g> = <x, roi_align_backward(g)>.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 5, 4)).astype(dtype)
    rois = random_rois(rng, 3, 2, int(5 / scale), int(4 / scale), dtype)
    g = rng.standard_normal((3, 2, 2, 2)).astype(dtype)
    outs = [roi_align(x, rois, 2, scale, sampling_ratio, aligned, backend=b) for b in CPU_TIERS]
    dxs = [roi_align_backward(g, rois, x.shape, 2, scale, sampling_ratio, aligned, backend=b)
           for b in CPU_TIERS]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(dxs[0], dxs[1])
    lhs = np.sum(outs[1].astype(np.float64) * g)
    rhs = np.sum(x.astype(np.float64) * dxs[1])
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Bad input: ValueError / TypeError naming the argument, before any kernel runs
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "numba", "cuda"])
@pytest.mark.parametrize("bad_boxes, match", [
    (np.array([[0, 0, 0, np.nan, 1.0]]), "boxes must be finite"),
    (np.array([[0, 0, 0, np.inf, 1.0]]), "boxes must be finite"),
    (np.array([[2, 0, 0, 1, 1.0]]), "boxes: batch index"),
    (np.array([[-1, 0, 0, 1, 1.0]]), "boxes: batch index"),
    (np.array([[0, 0, 1, 1.0]]), r"boxes must have shape \(K, 5\)"),
    (np.zeros((2, 5, 1)), r"boxes must have shape \(K, 5\)"),
    ([np.zeros((1, 5))], r"boxes\[0\] must have shape \(L, 4\)"),
    ([np.zeros((1, 4))] * 3, "boxes is a list of 3"),
])
def test_bad_boxes(backend, bad_boxes, match):
    x = np.ones((2, 1, 4, 4))
    with pytest.raises(ValueError, match=match):
        roi_align(x, bad_boxes, 2, backend=backend)
    with pytest.raises(ValueError, match=match):
        roi_align_backward(np.ones((1, 1, 2, 2)), bad_boxes, x.shape, 2, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "numba", "cuda"])
def test_bad_arguments(backend):
    x = np.ones((1, 1, 4, 4))
    rois = np.array([[0, 0, 0, 2, 2.0]])
    for size in (0, (2, 0), (-1, 2)):
        with pytest.raises(ValueError, match="output_size"):
            roi_align(x, rois, size, backend=backend)
    with pytest.raises(ValueError, match="input must be 4-D"):
        roi_align(np.ones((4, 4)), rois, 2, backend=backend)
    with pytest.raises(ValueError, match="input must be 4-D"):
        roi_align(np.ones((1, 1, 1, 4, 4)), rois, 2, backend=backend)
    with pytest.raises(TypeError, match="input must have dtype"):
        roi_align(np.ones((1, 1, 4, 4), dtype=np.int64), rois, 2, backend=backend)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_align(x, rois, 2, spatial_scale=0.0, backend=backend)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_align(x, rois, 2, spatial_scale=float("nan"), backend=backend)
    with pytest.raises(TypeError, match="sampling_ratio"):
        roi_align(x, rois, 2, sampling_ratio=1.5, backend=backend)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        roi_align_backward(np.ones((1, 1, 3, 3)), rois, x.shape, 2, backend=backend)
    with pytest.raises(ValueError, match="grad_output must be 4-D"):
        roi_align_backward(np.ones((1, 2, 2)), rois, x.shape, 2, backend=backend)
    with pytest.raises(ValueError, match="input_shape"):
        roi_align_backward(np.ones((1, 1, 2, 2)), rois, (1, 1, 4), 2, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        roi_align(x, rois, 2, backend="gpu")
