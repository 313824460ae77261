"""Winograd F(4×4, 3×3) (``nn._winograd43``): its matrices, transforms, writings and the "winograd4" tier.

"winograd4" is in ``CONV_METHODS``, so the conv2d tests against torch (forward, backward, float64 and
float32, edge cases, hypothesis shapes) run it too."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.nn import _winograd43 as W4
from minimaskrcnn.nn import functional as F
from minimaskrcnn.nn.gradcheck import rel_error


def test_one_dimensional_f43_is_a_correlation():
    # y = Aᵀ[(G g) ⊙ (Bᵀ d)]: the four outputs of a 3-tap correlation of a 6-sample signal.
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        y = W4.A_T @ ((W4.G @ g) * (W4.B_T @ d))
        np.testing.assert_allclose(y, [d[i:i + 3] @ g for i in range(4)], rtol=1e-12, atol=1e-12)


# odd sizes, partial last tiles in both directions, paddings 0-3, a 1×1 map, maps narrower than a tile
CASES = [((2, 3, 7, 6), (1, 1)), ((1, 2, 5, 5), (0, 0)), ((2, 4, 8, 9), (2, 1)), ((1, 1, 3, 3), (0, 0)),
         ((1, 2, 1, 1), (1, 1)), ((3, 2, 4, 11), (0, 2)), ((2, 3, 13, 17), (1, 1)), ((1, 2, 10, 10), (3, 0)),
         ((1, 2, 16, 9), (1, 1))]


@pytest.mark.parametrize("shape, padding", CASES)
def test_forward_and_filter_gradient_equal_the_naive_convolution(shape, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((3, shape[1], 3, 3))
    b = rng.standard_normal(3)
    ref, cache = F.conv2d_forward(x, w, b, 1, padding, method="naive")
    dout = rng.standard_normal(ref.shape)
    dx_ref, dw_ref, _ = F.conv2d_backward(dout, cache)
    for fn in (W4.winograd43_conv3x3, W4._winograd43_reference):
        got = fn(x, w, b, padding)
        assert got.shape == ref.shape and got.dtype == x.dtype
        assert rel_error(got, ref) <= 1e-13, fn.__name__
    for fn in (W4.winograd43_filter_grad, W4._winograd43_filter_grad_reference):
        got = fn(x, dout, padding)
        assert got.shape == w.shape and got.dtype == x.dtype
        assert rel_error(got, dw_ref) <= 1e-13, fn.__name__
    # both gradients from one transform of dout, V kept from the forward or recomputed
    got, v = W4.winograd43_forward(x, w, b, padding, keep_v=True)
    assert v is not None and rel_error(got, ref) <= 1e-13
    for kept in (v, None):
        dx, dw = W4.winograd43_backward(x, dout, w, padding, kept)
        assert dx.shape == x.shape and rel_error(dx, dx_ref) <= 1e-13
        assert rel_error(dw, dw_ref) <= 1e-13


def test_float32_rounding_stays_small():
    # The points ±2 scale values by up to 8 before they cancel: a few times F(2×2)'s rounding, still
    # ~1e-6 relative to float64 on unit-variance inputs.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 32, 21, 18))
    w = rng.standard_normal((16, 32, 3, 3)) * 0.1
    dout = rng.standard_normal((2, 16, 21, 18))
    ref, cache = F.conv2d_forward(x, w, None, 1, 1, method="naive")
    _, dw_ref, _ = F.conv2d_backward(dout, cache)
    got = W4.winograd43_conv3x3(x.astype(np.float32), w.astype(np.float32), None, (1, 1))
    assert got.dtype == np.float32 and rel_error(got, ref) <= 1e-5
    dw = W4.winograd43_filter_grad(x.astype(np.float32), dout.astype(np.float32), (1, 1))
    assert dw.dtype == np.float32 and rel_error(dw, dw_ref) <= 1e-5
    dx_ref = F.conv2d_backward(dout, cache)[0]
    dx, _ = W4.winograd43_backward(x.astype(np.float32), dout.astype(np.float32), w.astype(np.float32),
                                   (1, 1), need_dw=False)
    assert dx.dtype == np.float32 and rel_error(dx, dx_ref) <= 1e-5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_filter_transform_and_its_adjoint_equal_the_matrix_formulas(dtype):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(W4.filter_transform(w), W4._filter_transform_reference(w), rtol=tol, atol=tol)
    du = rng.standard_normal((36, 2, 3)).astype(dtype)
    dw = np.empty((2, 3, 3, 3), dtype)
    W4._filter_transform_adjoint_kernel(du, dw)
    want = np.einsum("ai,abkc,bj->kcij", W4.G, du.reshape(6, 6, 2, 3).astype(np.float64), W4.G)
    np.testing.assert_allclose(dw, want, rtol=tol, atol=tol)


def test_transform_kernels_equal_the_matrix_formulas():
    # Tile (i, j) of map n is column n·T_h·S + i·S + j of V, M and dM (S = T_w + 1; j = T_w is junk):
    # V = Bᵀ d B, Y = Aᵀ M A + bias (cropped), dM = A dY Aᵀ (zero on the junk tiles).
    rng = np.random.default_rng(4)
    n_maps, h, w = 2, 9, 11
    hout, wout, th, tw = W4.tile_grid(h, w, (0, 0))  # outputs 7×9: 2 × 3 blocks, both cropped
    s = W4.tile_stride(tw)
    x = rng.standard_normal((n_maps, 1, h, w))
    v = np.full((36, 1, n_maps * th * s), np.nan)
    W4._input_transform_kernel(x, v, 0, 0, th, tw)
    m = rng.standard_normal((36, 1, n_maps * th * s))
    out = np.empty((n_maps, 1, hout, wout))
    W4._output_transform_kernel(m, np.array([0.5]), out, th, tw)
    dy = rng.standard_normal((n_maps, 1, hout, wout))
    dm = np.full((36, 1, n_maps * th * s), np.nan)
    W4._output_transform_adjoint_kernel(dy, dm, th, tw)
    for n in range(n_maps):
        xp = np.zeros((4 * th + 2, 4 * tw + 2))
        xp[:h, :w] = x[n, 0]
        dyp = np.zeros((4 * th, 4 * tw))
        dyp[:hout, :wout] = dy[n, 0]
        for i in range(th):
            np.testing.assert_array_equal(dm[:, 0, (n * th + i) * s + tw], 0.0)  # junk tile
            for j in range(tw):
                p = (n * th + i) * s + j
                want_v = W4.B_T @ xp[4 * i:4 * i + 6, 4 * j:4 * j + 6] @ W4.B_T.T
                np.testing.assert_allclose(v[:, 0, p].reshape(6, 6), want_v, rtol=1e-13, atol=1e-13)
                y = W4.A_T @ m[:, 0, p].reshape(6, 6) @ W4.A_T.T + 0.5
                np.testing.assert_allclose(out[n, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4],
                                           y[:hout - 4 * i, :wout - 4 * j], rtol=1e-13, atol=1e-13)
                want_dm = W4.A_T.T @ dyp[4 * i:4 * i + 4, 4 * j:4 * j + 4] @ W4.A_T
                np.testing.assert_allclose(dm[:, 0, p].reshape(6, 6), want_dm, rtol=1e-13, atol=1e-13)


def test_input_transform_adjoint_equals_the_matrix_formula():
    # dx = Σ_tiles B dV Bᵀ, each 6×6 block added at its tile's window, less the padding (here (1, 2));
    # the junk tiles' dV is zero (Uᵀ dM with dM zero there).
    rng = np.random.default_rng(6)
    n_maps, th, tw = 2, 2, 3
    s = W4.tile_stride(tw)
    dv = rng.standard_normal((36, 1, n_maps * th * s))
    dv.reshape(36, 1, n_maps * th, s)[..., tw] = 0.0
    h, w = 4 * th + 2 - 2, 4 * tw + 2 - 4  # input size whose padded tiles are these
    dx = np.full((n_maps, 1, h, w), np.nan)
    W4._input_transform_adjoint_kernel(dv, dx, 1, 2, th, tw)
    for n in range(n_maps):
        dxp = np.zeros((4 * th + 2, 4 * tw + 2))
        for i in range(th):
            for j in range(tw):
                tile = dv[:, 0, (n * th + i) * s + j].reshape(6, 6)
                dxp[4 * i:4 * i + 6, 4 * j:4 * j + 6] += W4.B_T.T @ tile @ W4.B_T
        np.testing.assert_allclose(dx[n, 0], dxp[1:1 + h, 2:2 + w], rtol=1e-13, atol=1e-12)


def test_inner_transform_kernels_equal_the_matrix_formulas():
    # With the tiles ordered (i, j, n) (many small maps), tile (i, j) of map n is column
    # (i·T_w + j)·N + n of V, M and dM (no junk tiles): V = Bᵀ d B, Y = Aᵀ M A + bias (cropped),
    # dM = A dY Aᵀ, and dx = Σ_tiles B dV Bᵀ at every tile's window, less the padding.
    rng = np.random.default_rng(7)
    n_maps, h, w, ph, pw = 3, 9, 11, 1, 0
    hout, wout, th, tw = W4.tile_grid(h, w, (ph, pw))  # outputs 9×9: 3 × 3 blocks, cropped
    p_all = th * tw * n_maps
    x = rng.standard_normal((n_maps, 1, h, w))
    v = np.full((36, 1, p_all), np.nan)
    W4._input_transform_inner_kernel(x, v, ph, pw, th, tw)
    m = rng.standard_normal((36, 1, p_all))
    out = np.empty((n_maps, 1, hout, wout))
    W4._output_transform_inner_kernel(m, np.array([0.5]), out, th, tw)
    dy = rng.standard_normal((n_maps, 1, hout, wout))
    dm = np.full((36, 1, p_all), np.nan)
    W4._output_transform_adjoint_inner_kernel(dy, dm, th, tw)
    dx = np.full((n_maps, 1, h, w), np.nan)
    W4._input_transform_adjoint_inner_kernel(m, dx, ph, pw, th, tw)
    for n in range(n_maps):
        xp = np.zeros((4 * th + 2, 4 * tw + 2))
        xp[ph:ph + h, pw:pw + w] = x[n, 0]
        dyp = np.zeros((4 * th, 4 * tw))
        dyp[:hout, :wout] = dy[n, 0]
        dxp = np.zeros((4 * th + 2, 4 * tw + 2))
        for i in range(th):
            for j in range(tw):
                p = (i * tw + j) * n_maps + n
                want_v = W4.B_T @ xp[4 * i:4 * i + 6, 4 * j:4 * j + 6] @ W4.B_T.T
                np.testing.assert_allclose(v[:, 0, p].reshape(6, 6), want_v, rtol=1e-13, atol=1e-13)
                y = W4.A_T @ m[:, 0, p].reshape(6, 6) @ W4.A_T.T + 0.5
                np.testing.assert_allclose(out[n, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4],
                                           y[:hout - 4 * i, :wout - 4 * j], rtol=1e-13, atol=1e-13)
                want_dm = W4.A_T.T @ dyp[4 * i:4 * i + 4, 4 * j:4 * j + 4] @ W4.A_T
                np.testing.assert_allclose(dm[:, 0, p].reshape(6, 6), want_dm, rtol=1e-13, atol=1e-13)
                dxp[4 * i:4 * i + 6, 4 * j:4 * j + 6] += W4.B_T.T @ m[:, 0, p].reshape(6, 6) @ W4.B_T
        np.testing.assert_allclose(dx[n, 0], dxp[ph:ph + h, pw:pw + w], rtol=1e-13, atol=1e-12)


MANY_MAPS = [((9, 3, 7, 6), (1, 1)), ((8, 2, 5, 5), (0, 0)), ((12, 4, 14, 14), (1, 1)),
             ((8, 2, 4, 11), (0, 2)), ((10, 3, 3, 3), (2, 2)), ((8, 1, 1, 1), (1, 1)),
             ((8, 2, 9, 16), (2, 1)), ((2, 3, 18, 5), (1, 1))]


@pytest.mark.parametrize("shape, padding", MANY_MAPS)
@pytest.mark.parametrize("inner", [True, False])
def test_both_tile_orders_equal_the_naive_convolution(shape, padding, inner, monkeypatch):
    # The tiles ordered (i, j, n) (``maps_inner``) or along each map's tile rows, forced either way:
    # the forward and both gradients equal the naive convolution's, in float64 (V kept or not).
    monkeypatch.setattr(W4, "maps_inner", lambda n_maps, tw: inner)
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((5, shape[1], 3, 3))
    b = rng.standard_normal(5)
    ref, cache = F.conv2d_forward(x, w, b, 1, padding, method="naive")
    dout = rng.standard_normal(ref.shape)
    dx_ref, dw_ref, _ = F.conv2d_backward(dout, cache)
    got, v = W4.winograd43_forward(x, w, b, padding, keep_v=True)
    assert got.shape == ref.shape and rel_error(got, ref) <= 1e-12
    assert rel_error(W4.winograd43_filter_grad(x, dout, padding), dw_ref) <= 1e-12
    for kept in (v, None):
        dx, dw = W4.winograd43_backward(x, dout, w, padding, kept)
        assert rel_error(dx, dx_ref) <= 1e-12 and rel_error(dw, dw_ref) <= 1e-12


def test_tier_computes_all_three_gradients_like_torch(torch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 19, 23))
    w = rng.standard_normal((6, 8, 3, 3))
    b = rng.standard_normal(6)
    for padding in (0, 1, 2, 3):
        out, cache = F.conv2d_forward(x, w, b, 1, padding, method="winograd4")
        dout = rng.standard_normal(out.shape)
        dx, dw, db = F.conv2d_backward(dout, cache)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch.nn.functional.conv2d(tx, tw, tb, 1, padding)
        ty.backward(torch.tensor(dout))
        for ours, theirs in ((out, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
            assert rel_error(ours, theirs.detach().numpy()) <= 1e-12
