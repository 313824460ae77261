"""RoIPool (minimaskrcnn.ops.roi_pool) against torchvision's kernel and autograd, hand-worked cases,
the edge cases of the reference notes (C rounding of .5, empty bins, ties), finite differences and
properties. Tolerances: 1e-10 (float64) and 1e-5 (float32); in practice the results are identical.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.nn.gradcheck import numerical_gradient, rel_error
from minimaskrcnn.ops.roi_pool import roi_pool, roi_pool_backward, round_half_away

TOL = {np.float64: 1e-10, np.float32: 1e-5}
CPU_TIERS = ("reference", "numba")
FLT_MAX = float(np.finfo(np.float32).max)


def check_against_torchvision(torch, torchvision, x, rois, output_size, spatial_scale=1.0, backends=CPU_TIERS,
                              seed=0):
    """Forward (output and argmax) and backward of each backend against torchvision."""
    dtype = x.dtype.type
    PH, PW = (output_size, output_size) if isinstance(output_size, int) else output_size
    dout = np.random.default_rng(seed).standard_normal((rois.shape[0], x.shape[1], PH, PW)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    rt = torch.tensor(rois.astype(dtype))
    want, want_arg = torch.ops.torchvision.roi_pool(xt.detach(), rt, spatial_scale, PH, PW)
    out_t = torchvision.ops.roi_pool(xt, rt, output_size, spatial_scale)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out_t.detach().numpy(), want.numpy())
    got = None
    for backend in backends:
        got, arg = roi_pool(x, rois, output_size, spatial_scale, return_argmax=True, backend=backend)
        dx = roi_pool_backward(dout, rois, arg, x.shape, backend=backend)
        assert got.dtype == dtype and dx.dtype == dtype and arg.dtype == np.int32
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=TOL[dtype], err_msg=f"forward, {backend}")
        np.testing.assert_array_equal(arg, want_arg.numpy(), err_msg=f"argmax, {backend}")
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=TOL[dtype],
                                   err_msg=f"backward, {backend}")
    return got, arg


def ramp(H, W, dtype=np.float64):
    """1×1×H×W map with v(y, x) = 10·y + x (distinct values, the max of a window is its last pixel)."""
    y, x = np.mgrid[0:H, 0:W]
    return (10.0 * y + x).astype(dtype)[None, None]


# --------------------------------------------------------------------------------------------------
# Hand-worked cases
# --------------------------------------------------------------------------------------------------

def test_round_half_away_from_zero():
    # C round: halves go away from zero; numpy's np.round would give 0, 2, −0, −2.
    assert [round_half_away(v) for v in (0.5, 2.5, -0.5, -2.5, 1.4999999, -1.5)] == [1, 3, -1, -3, 1, -2]
    # 0.49999997 is the float32 just below ½: "floor(v + 0.5)" would round it up to 1.
    assert round_half_away(np.float32(0.49999997)) == 0


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_rounding_of_half_coordinates(backend):
    # Box (0.5, 0.5, 2.5, 2.5) on the 4×4 ramp, one bin: C round gives x1r = y1r = 1 (0.5 → 1) and
    # x2r = y2r = 3 (2.5 → 3): the bin covers rows and columns 1..3 (inclusive, the "+1" of
    # roi_w = 3 − 1 + 1 = 3), so the max is v(3, 3) = 33 at flat index 3·4 + 3 = 15.
    # (numpy's half-to-even rounding would cover 0..2 and give 22.)
    rois = np.array([[0, 0.5, 0.5, 2.5, 2.5]])
    out, arg = roi_pool(ramp(4, 4), rois, 1, return_argmax=True, backend=backend)
    assert out.item() == 33.0 and arg.item() == 15


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_overlapping_bins_and_backward(backend):
    # Map row [5, 9, 7]; box (0, 0, 2, 0) → columns 0..2 (3 wide), 1 row; two bins of width 1.5:
    #   bin 0: columns floor(0)=0 .. ceil(1.5)=2 (exclusive) → {0, 1} → max 9 at index 1
    #   bin 1: columns floor(1.5)=1 .. ceil(3)=3 (exclusive) → {1, 2} → max 9 at index 1
    # Both bins pick pixel 1, so the backward of dout = [1, 2] puts 1 + 2 = 3 there.
    x = np.array([[[[5.0, 9.0, 7.0]]]])
    rois = np.array([[0, 0, 0, 2, 0.0]])
    out, arg = roi_pool(x, rois, (1, 2), return_argmax=True, backend=backend)
    np.testing.assert_array_equal(out, [[[[9.0, 9.0]]]])
    np.testing.assert_array_equal(arg, [[[[1, 1]]]])
    dx = roi_pool_backward(np.array([[[[1.0, 2.0]]]]), rois, arg, x.shape, backend=backend)
    np.testing.assert_array_equal(dx, [[[[0.0, 3.0, 0.0]]]])


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_empty_bin(backend):
    # Box (3, 3, 6, 6) on a 4×4 map, 1×2 bins: roi 4×4 pixels, bin width 2.
    #   bin 0: columns 3 + [0, 2) = 3..4 → clipped to 3..3 (W = 4) → max of rows 3..3 (clipped too)
    #          → v(3, 3) = 33, index 15
    #   bin 1: columns 3 + [2, 4) = 5..6 → clipped to [4, 4): empty → 0 and argmax −1
    rois = np.array([[0, 3, 3, 6, 6.0]])
    out, arg = roi_pool(ramp(4, 4), rois, (1, 2), return_argmax=True, backend=backend)
    np.testing.assert_array_equal(out, [[[[33.0, 0.0]]]])
    np.testing.assert_array_equal(arg, [[[[15, -1]]]])
    dx = roi_pool_backward(np.ones((1, 1, 1, 2)), rois, arg, (1, 1, 4, 4), backend=backend)
    assert dx.sum() == 1.0 and dx[0, 0, 3, 3] == 1.0  # the empty bin sends nothing back


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_golden_ties_first_maximum(backend):
    # All-equal bin rows 1..2, columns 1..2 of a constant map: strict ">" keeps the first maximum in
    # row-major order, pixel (1, 1) = index 1·4 + 1 = 5.
    out, arg = roi_pool(np.full((1, 1, 4, 4), 2.0), np.array([[0, 1, 1, 2, 2.0]]), 1, return_argmax=True,
                        backend=backend)
    assert out.item() == 2.0 and arg.item() == 5


# --------------------------------------------------------------------------------------------------
# Against torchvision
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("output_size", [1, (2, 3), 4])
def test_random_against_torchvision(torch, torchvision, dtype, output_size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    xy = rng.uniform(-3, 10, (12, 2))
    rois = np.concatenate([rng.integers(0, 2, (12, 1)), xy, xy + rng.uniform(0, 7, (12, 2))], 1).astype(dtype)
    check_against_torchvision(torch, torchvision, x, rois, output_size)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_larger_random_numba(torch, torchvision, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 37, 20, 23)).astype(dtype)
    xy = rng.uniform(-5, 25, (41, 2))
    rois = np.concatenate([rng.integers(0, 2, (41, 1)), xy, xy + rng.uniform(0, 15, (41, 2))], 1)
    rois = rois.astype(dtype)
    check_against_torchvision(torch, torchvision, x, rois, (7, 5), 1.0, backends=("numba",))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_half_coordinates_against_torchvision(torch, torchvision, dtype):
    # Every coordinate·scale lands exactly on a .5 (positive and negative), where C round and numpy
    # round disagree.
    x = np.random.default_rng(3).standard_normal((1, 2, 8, 8)).astype(dtype)
    rois = np.array([[0, 0.5, 1.5, 2.5, 3.5], [0, -0.5, -1.5, 4.5, 5.5], [0, 1.5, 0.5, 6.5, 7.5]],
                    dtype=dtype)
    check_against_torchvision(torch, torchvision, x, rois, 2)
    # scale 0.5: 3 → 1.5 → 2, 5 → 2.5 → 3, −1 → −0.5 → −1
    rois2 = np.array([[0, 3, 5, 9, 11], [0, -1, 1, 13, 7]], dtype=dtype)
    check_against_torchvision(torch, torchvision, x, rois2, (2, 3), 0.5)


def test_boxes_partly_and_wholly_outside(torch, torchvision):
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 6))
    rois = np.array([[0, -4, -3, 2, 2], [0, 3, 2, 10, 12], [0, 20, 20, 30, 30], [0, -9, -9, -3, -2]])
    out, arg = check_against_torchvision(torch, torchvision, x, rois, (2, 2))
    np.testing.assert_array_equal(out[2:], 0.0)  # wholly outside: every bin empty
    np.testing.assert_array_equal(arg[2:], -1)


def test_zero_size_and_reversed_boxes(torch, torchvision):
    # Zero size: x1r = x2r → one pixel wide (inclusive). Reversed: roi size forced to 1 pixel.
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6))
    rois = np.array([[0, 2, 2, 2, 2], [0, 1, 4, 1, 4], [0, 5, 5, 1, 2], [0, 4, 1, 2, 5]])
    check_against_torchvision(torch, torchvision, x, rois, (2, 2))


def test_all_minus_infinity_bin_gives_minus_flt_max(torch, torchvision):
    # torchvision starts each max at −FLT_MAX, so a bin holding only −inf keeps −FLT_MAX, argmax −1.
    x = np.full((1, 1, 4, 4), -np.inf)
    x[0, 0, 0, 0] = 1.0
    out, arg = check_against_torchvision(torch, torchvision, x, np.array([[0, 2, 2, 3, 3.0]]), 1)
    assert out.item() == -FLT_MAX and arg.item() == -1


@pytest.mark.parametrize("backend", CPU_TIERS)
@pytest.mark.parametrize("as_list", [False, True])
def test_empty_box_list(backend, as_list):
    x = np.ones((2, 3, 5, 5), dtype=np.float32)
    boxes = [np.zeros((0, 4)), np.zeros((0, 4))] if as_list else np.zeros((0, 5))
    out, arg = roi_pool(x, boxes, (2, 3), return_argmax=True, backend=backend)
    assert out.shape == (0, 3, 2, 3) and arg.shape == (0, 3, 2, 3)
    dx = roi_pool_backward(np.zeros((0, 3, 2, 3), np.float32), boxes, arg, x.shape, backend=backend)
    assert dx.shape == x.shape and dx.dtype == np.float32 and not dx.any()


def test_batch_index_above_zero_and_list_format(torch, torchvision):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 6, 7))
    rois = np.array([[2, 1, 1, 5, 4], [1, 0, 0, 3, 3], [2, 2, 0, 6, 6.0]])
    check_against_torchvision(torch, torchvision, x, rois, 2)
    as_list = [np.zeros((0, 4)), rois[1:2, 1:], rois[[0, 2], 1:]]
    np.testing.assert_array_equal(roi_pool(x, as_list, 2), roi_pool(x, rois[[1, 0, 2]], 2))


@pytest.mark.parametrize("backend", CPU_TIERS)
def test_non_contiguous_input(torch, torchvision, backend):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 9, 4)).transpose(0, 1, 3, 2)[:, ::2]
    assert not x.flags.c_contiguous
    rois = np.array([[0, 1, 0, 7, 3.0], [1, 2, 1, 8, 2.0]])
    check_against_torchvision(torch, torchvision, np.ascontiguousarray(x), rois, 2, backends=(backend,))
    np.testing.assert_array_equal(roi_pool(x, rois, 2, backend=backend),
                                  roi_pool(np.ascontiguousarray(x), rois, 2, backend=backend))


def test_gradient_check():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 2, 6, 5))  # distinct values: no ties, max is locally linear
    rois = np.array([[0, 0, 0, 4, 5], [1, 1, 2, 3, 4], [1, -1, 0, 2, 2.0]])
    dout = rng.standard_normal((3, 2, 2, 2))
    _, arg = roi_pool(x, rois, 2, return_argmax=True)
    num = numerical_gradient(lambda: roi_pool(x, rois, 2), x, dout)
    assert rel_error(roi_pool_backward(dout, rois, arg, x.shape), num) < 1e-7


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([1.0, 0.5, 0.25]), levels=st.sampled_from([3, 1000]))
def test_property_tiers_agree_and_argmax_points_at_max(seed, dtype, scale, levels):
    # The tiers agree exactly; the output is the input at argmax (or 0 where argmax = −1); the
    # backward sends exactly the gradient of the non-empty bins. ``levels`` = 3 forces many ties.
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, (2, 2, 6, 5)).astype(dtype)
    xy = rng.uniform(-3 / scale, 7 / scale, (4, 2))
    rois = np.concatenate([rng.integers(0, 2, (4, 1)), xy, xy + rng.uniform(-1, 5 / scale, (4, 2))], 1)
    res = [roi_pool(x, rois, (2, 3), scale, return_argmax=True, backend=b) for b in CPU_TIERS]
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])
    out, arg = res[1]
    flat = x.reshape(2, 2, -1)
    b = rois[:, 0].astype(int)
    picked = np.take_along_axis(flat[b], np.maximum(arg, 0).reshape(4, 2, -1), axis=2).reshape(out.shape)
    np.testing.assert_array_equal(np.where(arg >= 0, picked, 0.0), out)
    g = rng.standard_normal(out.shape).astype(dtype)
    dxs = [roi_pool_backward(g, rois, arg, x.shape, backend=bk) for bk in CPU_TIERS]
    np.testing.assert_array_equal(dxs[0], dxs[1])
    np.testing.assert_allclose(dxs[1].sum(), g[arg >= 0].sum(), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "numba", "cuda"])
@pytest.mark.parametrize("bad_boxes, match", [
    (np.array([[0, 0, 0, np.nan, 1.0]]), "boxes must be finite"),
    (np.array([[3, 0, 0, 1, 1.0]]), "boxes: batch index"),
    (np.array([[0, 0, 1, 1.0]]), r"boxes must have shape \(K, 5\)"),
    ([np.zeros((1, 3))], r"boxes\[0\] must have shape \(L, 4\)"),
])
def test_bad_boxes(backend, bad_boxes, match):
    with pytest.raises(ValueError, match=match):
        roi_pool(np.ones((2, 1, 4, 4)), bad_boxes, 2, backend=backend)
    with pytest.raises(ValueError, match=match):
        roi_pool_backward(np.ones((1, 1, 2, 2)), bad_boxes, np.zeros((1, 1, 2, 2), np.int64), (2, 1, 4, 4),
                          backend=backend)


@pytest.mark.parametrize("backend", ["reference", "numba", "cuda"])
def test_bad_arguments(backend):
    x = np.ones((1, 1, 4, 4))
    rois = np.array([[0, 0, 0, 2, 2.0]])
    with pytest.raises(ValueError, match="output_size"):
        roi_pool(x, rois, 0, backend=backend)
    with pytest.raises(ValueError, match="input must be 4-D"):
        roi_pool(np.ones((1, 4, 4)), rois, 2, backend=backend)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool(x, rois, 2, -1.0, backend=backend)
    g = np.ones((1, 1, 2, 2))
    with pytest.raises(ValueError, match="argmax entries"):
        roi_pool_backward(g, rois, np.full((1, 1, 2, 2), 16), x.shape, backend=backend)
    with pytest.raises(ValueError, match="argmax must have the shape"):
        roi_pool_backward(g, rois, np.zeros((1, 1, 2, 3), np.int64), x.shape, backend=backend)
    with pytest.raises(TypeError, match="argmax must be an integer"):
        roi_pool_backward(g, rois, np.zeros((1, 1, 2, 2)), x.shape, backend=backend)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        roi_pool_backward(np.ones((2, 1, 2, 2)), rois, np.zeros((2, 1, 2, 2), np.int64), x.shape,
                          backend=backend)
