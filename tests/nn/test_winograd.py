"""Winograd F(2×2, 3×3) (``nn._winograd``): its transforms, its three writings, and the conv2d tier.

The conv2d tiers "winograd" and "winograd4" are also in ``CONV_METHODS``, so every conv2d test against
torch (forward and backward, float64 and float32, edge cases and hypothesis shapes) runs them too;
F(4×4, 3×3)'s own tests are in ``test_winograd43``."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.nn import _winograd as W
from minimaskrcnn.nn import _winograd43 as W4
from minimaskrcnn.nn import functional as F
from minimaskrcnn.nn.gradcheck import rel_error


def test_one_dimensional_f23_is_a_correlation():
    # y = Aᵀ[(G g) ⊙ (Bᵀ d)]: the two outputs of a 3-tap correlation of a 4-sample signal.
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(4), rng.standard_normal(3)
        y = W.A_T @ ((W.G @ g) * (W.B_T @ d))
        np.testing.assert_allclose(y, [d[0:3] @ g, d[1:4] @ g], rtol=1e-12, atol=1e-12)


CASES = [((2, 3, 7, 6), (1, 1)), ((1, 2, 5, 5), (0, 0)), ((2, 4, 8, 9), (2, 1)), ((1, 1, 3, 3), (0, 0)),
         ((1, 2, 1, 1), (1, 1)), ((3, 2, 4, 11), (0, 2))]


@pytest.mark.parametrize("shape, padding", CASES)
def test_three_writings_equal_the_naive_convolution(shape, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((3, shape[1], 3, 3))
    b = rng.standard_normal(3)
    ref, _ = F.conv2d_forward(x, w, b, 1, padding, method="naive")
    for fn in (W.winograd_conv3x3, W.winograd_conv3x3_numpy, W._winograd_reference):
        got = fn(x, w, b, padding)
        assert got.shape == ref.shape and got.dtype == x.dtype
        assert rel_error(got, ref) <= 1e-13, fn.__name__


def test_float32_and_empty_batch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 12, 10)).astype(np.float32)
    w = (rng.standard_normal((8, 16, 3, 3)) * 0.1).astype(np.float32)
    ref, _ = F.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, 1, 1, method="naive")
    got = W.winograd_conv3x3(x, w, None, (1, 1))
    assert got.dtype == np.float32 and rel_error(got, ref) <= 1e-6
    out, cache = F.conv2d_forward(np.zeros((0, 16, 12, 10), np.float32), w, None, 1, 1, method="winograd")
    assert out.shape == (0, 8, 12, 10)


@pytest.mark.parametrize("method", ["winograd", "winograd4"])
def test_tier_uses_winograd_only_where_it_applies(method, monkeypatch):

    calls = []
    module, fwd, bwd = (W, "winograd_forward", "winograd_backward") if method == "winograd" else \
        (W4, "winograd43_forward", "winograd43_backward")
    real_fwd, real_bwd = getattr(module, fwd), getattr(module, bwd)
    monkeypatch.setattr(module, fwd, lambda *a, **k: calls.append(("fwd", a[3])) or real_fwd(*a, **k))
    monkeypatch.setattr(module, bwd, lambda *a, **k: calls.append(("bwd", a[3])) or real_bwd(*a, **k))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 9))
    # both gradients by the transforms' adjoints, for any padding
    pad1 = [("fwd", (1, 1)), ("bwd", (1, 1))]
    pad3 = [("fwd", (3, 3)), ("bwd", (3, 3))]
    for w_shape, stride, padding, dilation, expected in (((4, 3, 3, 3), 1, 1, 1, pad1),
                                                         ((4, 3, 3, 3), 2, 1, 1, []),
                                                         ((4, 3, 3, 3), 1, 2, 2, []),
                                                         ((4, 3, 1, 1), 1, 0, 1, []),
                                                         ((4, 3, 3, 3), 1, 3, 1, pad3)):
        calls.clear()
        w = rng.standard_normal(w_shape)
        out, cache = F.conv2d_forward(x, w, None, stride, padding, dilation, method=method)
        ref, ref_cache = F.conv2d_forward(x, w, None, stride, padding, dilation, method="naive")
        dout = rng.standard_normal(out.shape)
        for g, r in zip(F.conv2d_backward(dout, cache), F.conv2d_backward(dout, ref_cache)):
            if r is not None:
                assert rel_error(g, r) <= 1e-12
        assert rel_error(out, ref) <= 1e-12
        assert calls == expected, (w_shape, stride, padding, dilation)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_filter_transform_kernel_equals_the_matrix_formula(dtype):
    w = np.random.default_rng(4).standard_normal((5, 3, 3, 3)).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(W.filter_transform(w), W._filter_transform_reference(w), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape, padding", CASES)
def test_filter_gradient_equals_the_naive_backward(shape, padding):
    # dW by the transforms' adjoints (kernel and loop writings) against the seven-loop backward.
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((3, shape[1], 3, 3))
    out, cache = F.conv2d_forward(x, w, None, 1, padding, method="naive")
    dout = rng.standard_normal(out.shape)
    _, ref, _ = F.conv2d_backward(dout, cache)
    for fn in (W.winograd_filter_grad, W._winograd_filter_grad_reference):
        got = fn(x, dout, padding)
        assert got.shape == w.shape and got.dtype == x.dtype
        assert rel_error(got, ref) <= 1e-13, fn.__name__


def test_filter_gradient_float32():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 16, 13, 10)).astype(np.float32)
    dout = rng.standard_normal((2, 8, 13, 10)).astype(np.float32)
    w = np.zeros((8, 16, 3, 3))
    _, cache = F.conv2d_forward(x.astype(np.float64), w, None, 1, 1, method="naive")
    _, ref, _ = F.conv2d_backward(dout.astype(np.float64), cache)
    got = W.winograd_filter_grad(x, dout, (1, 1))
    assert got.dtype == np.float32 and rel_error(got, ref) <= 1e-6


def test_transform_kernels_equal_the_matrix_formulas():
    # Each Numba transform against its matrix: V = Bᵀ d B, Y = Aᵀ M A, dM = A dY Aᵀ, dg = Gᵀ dU G.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 1, 5, 7))
    th, tw = 2, 3  # tiles of a 3×3 convolution with padding 0 (output 3×5: 2 × 3 blocks, cropped)
    v = np.empty((16, 1, th * tw))
    W._input_transform_kernel(x, v, 0, 0, th, tw)
    xp = np.zeros((2 * th + 2, 2 * tw + 2))
    xp[:5, :7] = x[0, 0]
    m = rng.standard_normal((16, 1, th * tw))
    out = np.empty((1, 1, 3, 5))
    W._output_transform_kernel(m, np.empty(0), out, th, tw)
    dy = rng.standard_normal((1, 1, 3, 5))
    dm = np.empty((16, 1, th * tw))
    W._output_transform_adjoint_kernel(dy, dm, th, tw)
    dyp = np.zeros((2 * th, 2 * tw))
    dyp[:3, :5] = dy[0, 0]
    for i in range(th):
        for j in range(tw):
            p = i * tw + j
            want_v = W.B_T @ xp[2 * i:2 * i + 4, 2 * j:2 * j + 4] @ W.B_T.T
            np.testing.assert_allclose(v[:, 0, p].reshape(4, 4), want_v, rtol=1e-14, atol=1e-14)
            y = W.A_T @ m[:, 0, p].reshape(4, 4) @ W.A_T.T
            np.testing.assert_allclose(out[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2], y[:3 - 2 * i, :5 - 2 * j],
                                       rtol=1e-14, atol=1e-14)
            want_dm = W.A_T.T @ dyp[2 * i:2 * i + 2, 2 * j:2 * j + 2] @ W.A_T
            np.testing.assert_allclose(dm[:, 0, p].reshape(4, 4), want_dm, rtol=1e-14, atol=1e-14)
    # dx = Σ_tiles B dV Bᵀ at each tile's window, the padding (here ph = 1, pw = 2) dropped
    dv = rng.standard_normal((16, 1, th * tw))
    dx = np.empty((1, 1, 2 * th - 1, 2 * tw - 2))
    W._input_transform_adjoint_kernel(dv, dx, 1, 2, th, tw)
    dxp = np.zeros((2 * th + 2, 2 * tw + 2))
    for i in range(th):
        for j in range(tw):
            dxp[2 * i:2 * i + 4, 2 * j:2 * j + 4] += W.B_T.T @ dv[:, 0, i * tw + j].reshape(4, 4) @ W.B_T
    np.testing.assert_allclose(dx[0, 0], dxp[1:2 * th, 2:2 * tw], rtol=1e-14, atol=1e-14)
    du = rng.standard_normal((16, 2, 3))
    dw = np.empty((2, 3, 3, 3))
    W._filter_transform_adjoint_kernel(du, dw)
    want = np.einsum("ai,abkc,bj->kcij", W.G, du.reshape(4, 4, 2, 3), W.G)
    np.testing.assert_allclose(dw, want, rtol=1e-14, atol=1e-14)


def test_auto_takes_the_tier_that_pays_off(monkeypatch):
    # The default method (see ``auto_method``): on many small maps (>= 8, at most 16 wide) from 8×8,
    # F(4×4) for >= 64 channels, or >= 32 channels with >= 128 tiles of 4×4; then F(2×2)
    # from 64 channels on >= 16 maps, F(4×4) for >= 64 channels with P4 >= 150, else F(2×2) from 128
    # channels; F(4×4) on wider maps by tile count P4 = N·T_h·(T_w + 1) and channels; F(2×2) tile
    # rows for >= 256 channels on maps from 12×12; im2col elsewhere. The backward follows the
    # forward's choice.
    cases = (((64, 64, 3, 3), (14, 14), 57, "winograd4"), ((64, 64, 3, 3), (14, 14), 8, "winograd4"),
             ((64, 64, 3, 3), (8, 8), 8, "winograd4"), ((64, 64, 3, 3), (7, 8), 16, "winograd"),
             ((64, 64, 3, 3), (4, 4), 8, "im2col"),  # 4×4 maps: 8 tiles, 64 channels
             ((64, 64, 3, 3), (4, 4), 38, "winograd"),  # 38 tiles of 4×4: F(2×2) from 16 maps
             ((32, 32, 3, 3), (16, 16), 8, "winograd4"),  # 8·4·4 = 128 tiles
             ((32, 32, 3, 3), (8, 8), 8, "im2col"),  # 8·2·2 = 32 tiles
             ((128, 128, 3, 3), (4, 4), 8, "winograd"), ((128, 128, 3, 3), (4, 4), 7, "im2col"),
             ((63, 64, 3, 3), (7, 7), 57, "im2col"),  # many 7×7 maps, but 63 < 64 channels
             ((31, 32, 3, 3), (16, 16), 8, "im2col"),  # 128 tiles, but 31 < 32 channels
             ((31, 32, 3, 3), (14, 14), 57, "im2col"),
             ((64, 64, 3, 3), (64, 64), 2, "winograd4"),  # P4 = 2·16·17 = 544
             ((32, 32, 3, 3), (20, 20), 8, "winograd4"),  # 8·5·6 = 240
             ((32, 32, 3, 3), (20, 20), 7, "im2col"),  # 7·5·6 = 210
             ((31, 32, 3, 3), (32, 32), 8, "im2col"),
             ((128, 128, 3, 3), (50, 76), 1, "winograd4"),  # 13·20 = 260
             ((512, 512, 3, 3), (25, 38), 1, "winograd"),  # P4 = 7·11 = 77: F(2×2) tile rows
             ((256, 256, 3, 3), (12, 19), 1, "winograd"), ((256, 256, 3, 3), (11, 19), 1, "im2col"))
    for w_shape, out_hw, n_maps, want in cases:
        geometry = (1, 1, 1, 1, 1, 1) + out_hw
        assert W.auto_method(w_shape, geometry, n_maps) == want, (w_shape, out_hw, n_maps)
    for geometry in ((2, 2, 1, 1, 1, 1, 64, 64), (1, 1, 2, 2, 2, 2, 64, 64)):  # stride 2, dilation 2
        assert W.auto_method((128, 128, 3, 3), geometry, 64) == "im2col"
    assert W.auto_method((128, 128, 1, 1), (1, 1, 0, 0, 1, 1, 64, 64), 64) == "im2col"
    rng = np.random.default_rng(8)
    for shape, c_out, expected in (((32, 64, 6, 6), 64, "winograd"), ((2, 64, 62, 62), 64, "winograd4"),
                                   ((8, 16, 14, 14), 32, "im2col"), ((9, 64, 10, 10), 64, "winograd4")):
        x = rng.standard_normal(shape)
        w = rng.standard_normal((c_out, shape[1], 3, 3)) * 0.1
        out, cache = F.conv2d_forward(x, w, None, 1, 1)
        assert cache[5] == expected  # the method the forward took
        ref, ref_cache = F.conv2d_forward(x, w, None, 1, 1, method="im2col")  # equal to naive: test_conv
        assert rel_error(out, ref) <= 1e-12
        dout = rng.standard_normal(out.shape)
        for g, r in zip(F.conv2d_backward(dout, cache), F.conv2d_backward(dout, ref_cache)):
            assert rel_error(g, r) <= 1e-12


MANY_MAPS = [((9, 3, 7, 6), (1, 1)), ((8, 2, 5, 5), (0, 0)), ((12, 4, 14, 14), (1, 1)),
             ((8, 2, 4, 11), (0, 2)), ((10, 3, 3, 3), (2, 2)), ((8, 1, 1, 1), (1, 1)),
             ((8, 2, 9, 16), (2, 1))]


@pytest.mark.parametrize("shape, padding", MANY_MAPS)
@pytest.mark.parametrize("inner", [True, False])
def test_both_tile_orders_equal_the_naive_convolution(shape, padding, inner, monkeypatch):
    # Many small maps order the tiles (i, j, n) (``maps_inner``); forced either way, the forward and
    # the filter gradient equal the naive convolution's, in float64 and float32.
    monkeypatch.setattr(W, "maps_inner", lambda n_maps, tw: inner)
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((5, shape[1], 3, 3))
    b = rng.standard_normal(5)
    ref, cache = F.conv2d_forward(x, w, b, 1, padding, method="naive")
    dout = rng.standard_normal(ref.shape)
    dx_ref, dw_ref, _ = F.conv2d_backward(dout, cache)
    got = W.winograd_conv3x3(x, w, b, padding)
    assert got.shape == ref.shape and rel_error(got, ref) <= 1e-13
    assert rel_error(W.winograd_filter_grad(x, dout, padding), dw_ref) <= 1e-13
    # both gradients from one transform of dout, with the forward's V kept or recomputed
    got, v = W.winograd_forward(x, w, b, padding, keep_v=True)
    assert v is not None and rel_error(got, ref) <= 1e-13
    for kept in (v, None):
        dx, dw = W.winograd_backward(x, dout, w, padding, kept)
        assert rel_error(dx, dx_ref) <= 1e-13 and rel_error(dw, dw_ref) <= 1e-13
    assert W.winograd_backward(x, dout, w, padding, v, need_dw=False)[1] is None
    f32 = [a.astype(np.float32) for a in (x, w, b, dout)]
    got32 = W.winograd_conv3x3(f32[0], f32[1], f32[2], padding)
    assert got32.dtype == np.float32 and rel_error(got32, ref) <= 1e-5
    assert rel_error(W.winograd_filter_grad(f32[0], f32[3], padding), dw_ref) <= 1e-5
    dx32, _ = W.winograd_backward(f32[0], f32[3], f32[1], padding, need_dw=False)
    assert dx32.dtype == np.float32 and rel_error(dx32, dx_ref) <= 1e-5


def test_forward_keeps_u_only_up_to_the_budget(monkeypatch):
    # The transformed filters U are kept for the backward's dx when at most KEEP_U_BYTES (and the
    # forward keeps its transforms at all), else transformed again there; the gradients do not
    # depend on which, and a kept U is exactly the filter transform of w.
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    ref = None
    for method, alpha2 in (("winograd", 16), ("winograd4", 36)):
        u_bytes = alpha2 * 4 * 3 * 8  # (α², K, C) float64
        tier = W4 if method == "winograd4" else W
        for budget, keep_transform, kept in ((u_bytes, True, True), (u_bytes - 1, True, False),
                                             (u_bytes, False, False)):
            monkeypatch.setattr(W, "KEEP_U_BYTES", budget)
            out, cache = F.conv2d_forward(x, w, None, 1, 1, method=method, keep_transform=keep_transform)
            assert (cache[6] is not None) == kept, (method, budget, keep_transform)
            if kept:
                np.testing.assert_array_equal(cache[6], tier.filter_transform(w))
            dout = np.random.default_rng(1).standard_normal(out.shape)
            if ref is None:
                ref = F.conv2d_backward(dout, F.conv2d_forward(x, w, None, 1, 1, method="naive")[1])
            for g, r in zip(F.conv2d_backward(dout, cache), ref):
                assert rel_error(g, r) <= 1e-13
    _, cache = F.conv2d_forward(x, w, None, 1, 1, method="im2col")
    assert cache[6] is None


def test_forward_keeps_v_only_up_to_the_budget(monkeypatch):
    # V is kept for the backward when it is at most KEEP_V_BYTES, else recomputed there; the
    # gradients do not depend on which.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    v_bytes = 16 * 3 * 2 * 4 * 4 * 8  # (16, C, N·Th·Tw) float64
    for budget, kept in ((v_bytes, True), (v_bytes - 1, False)):
        monkeypatch.setattr(W, "KEEP_V_BYTES", budget)
        for method in ("winograd", "winograd4"):
            out, cache = F.conv2d_forward(x, w, None, 1, 1, method=method)
            assert (cache[4] is not None) == (kept or method == "winograd4"), (budget, method)
            out, cache = F.conv2d_forward(x, w, None, 1, 1, method=method, keep_transform=False)
            assert cache[4] is None
            dout = rng.standard_normal(out.shape)
            ref = F.conv2d_backward(dout, F.conv2d_forward(x, w, None, 1, 1, method="naive")[1])
            for g, r in zip(F.conv2d_backward(dout, cache), ref):
                assert rel_error(g, r) <= 1e-13


def test_maps_inner_transform_kernels_equal_the_matrix_formulas():
    # The (i, j, n) order: tile (i, j) of map n is column (i·Tw + j)·N + n of V, M and dM.
    rng = np.random.default_rng(10)
    n_maps, th, tw = 8, 2, 3  # 5×7 maps, padding 0: outputs 3×5, 2 × 3 blocks (cropped)
    x = rng.standard_normal((n_maps, 1, 5, 7))
    v = np.empty((16, 1, n_maps * th * tw))
    W._input_transform_maps_inner_kernel(x, v, 0, 0, th, tw)
    m = rng.standard_normal((16, 1, n_maps * th * tw))
    out = np.empty((n_maps, 1, 3, 5))
    W._output_transform_maps_inner_kernel(m, np.array([0.5]), out, th, tw)
    dy = rng.standard_normal((n_maps, 1, 3, 5))
    dm = np.empty((16, 1, n_maps * th * tw))
    W._output_transform_adjoint_maps_inner_kernel(dy, dm, th, tw)
    dv = rng.standard_normal((16, 1, n_maps * th * tw))
    dx = np.empty((n_maps, 1, 2 * th - 1, 2 * tw - 2))  # padding (1, 2) dropped
    W._input_transform_adjoint_maps_inner_kernel(dv, dx, 1, 2, th, tw)
    for n in range(n_maps):
        dxp = np.zeros((2 * th + 2, 2 * tw + 2))
        for i in range(th):
            for j in range(tw):
                dv_tile = dv[:, 0, (i * tw + j) * n_maps + n].reshape(4, 4)
                dxp[2 * i:2 * i + 4, 2 * j:2 * j + 4] += W.B_T.T @ dv_tile @ W.B_T
        np.testing.assert_allclose(dx[n, 0], dxp[1:2 * th, 2:2 * tw], rtol=1e-14, atol=1e-14)
    for n in range(n_maps):
        xp = np.zeros((2 * th + 2, 2 * tw + 2))
        xp[:5, :7] = x[n, 0]
        dyp = np.zeros((2 * th, 2 * tw))
        dyp[:3, :5] = dy[n, 0]
        for i in range(th):
            for j in range(tw):
                p = (i * tw + j) * n_maps + n
                want_v = W.B_T @ xp[2 * i:2 * i + 4, 2 * j:2 * j + 4] @ W.B_T.T
                np.testing.assert_allclose(v[:, 0, p].reshape(4, 4), want_v, rtol=1e-14, atol=1e-14)
                y = W.A_T @ m[:, 0, p].reshape(4, 4) @ W.A_T.T + 0.5
                np.testing.assert_allclose(out[n, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2],
                                           y[:3 - 2 * i, :5 - 2 * j], rtol=1e-14, atol=1e-14)
                want_dm = W.A_T.T @ dyp[2 * i:2 * i + 2, 2 * j:2 * j + 2] @ W.A_T
                np.testing.assert_allclose(dm[:, 0, p].reshape(4, 4), want_dm, rtol=1e-14, atol=1e-14)
