"""Winograd's F(4×4, 3×3) for stride-1 3×3 convolutions on wide maps (Lavin & Gray, 2015).

The same algorithm as F(2×2, 3×3) (``_winograd``, whose docstring explains it), with larger tiles: a
4×4 block of outputs from the 6×6 input tile that covers it, by 36 multiplications instead of 16·9 =
144, in the basis of the interpolation points 0, ±1, ±2 and ∞:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,     d (6, 6), g (3, 3), Y (4, 4),

         ⎡4  0 −5  0  1  0⎤          ⎡ ¼     0     0 ⎤
         ⎢0 −4 −4  1  1  0⎥          ⎢−⅙    −⅙    −⅙ ⎥          ⎡1  1  1  1  1  0⎤
    Bᵀ = ⎢0  4 −4 −1  1  0⎥      G = ⎢−⅙     ⅙    −⅙ ⎥     Aᵀ = ⎢0  1 −1  2 −2  0⎥
         ⎢0 −2 −1  2  1  0⎥          ⎢1/24  1/12  ⅙ ⎥          ⎢0  1  1  4  4  0⎥
         ⎢0  2 −1 −2  1  0⎥          ⎢1/24 −1/12  ⅙ ⎥          ⎣0  1 −1  8 −8  1⎦
         ⎣0  4  0 −5  0  1⎦          ⎣ 0     0     1 ⎦

For a layer, with U = G g Gᵀ per (output, input) channel pair and V = Bᵀ d B per (input channel, tile),
M[ξ, ν] (K, P) = U[ξ, ν] (K, C) @ V[ξ, ν] (C, P) for the 36 positions of a tile.

Why a second tile size: per output pixel F(2×2, 3×3) multiplies 16/4 = 4 times per channel pair and
F(4×4, 3×3) 36/16 = 2.25 times (direct convolution: 9); and its operands V and M hold 36/16 = 2.25
values per pixel instead of 4, so the transforms also move 44% less memory, which is what limits
F(2×2, 3×3) on channel counts of 64 and below. The price: the transforms add and scale (by 2, 4, 5, 8
and the filter transform's sixths) instead of only adding, and a float32 result carries a few times
more rounding than F(2×2, 3×3)'s (the points ±2 scale values by up to 8 before they cancel). On
wide maps the transforms run along the tile rows of a map; on many small maps (a 14×14 RoI has 4×4
tiles, the last ones computing 2 cropped rows and columns) they order the tiles (i, j, n) and run
over the maps instead, as ``_winograd``'s do (``maps_inner``).

``winograd43_forward(x, w, b, padding)`` is the forward pass (``winograd43_conv3x3`` its output alone),
``winograd43_backward`` both gradients by the transforms' adjoints, sharing dM = A dY Aᵀ: the input
gradient dV = Uᵀ dM, dx = Σ_tiles B dV Bᵀ; the filter gradient dU = dM Vᵀ, dW = Gᵀ dU G (V kept from
the forward where it is small enough). The readable version beside the Numba kernels:
``_winograd43_reference`` and ``_winograd43_filter_grad_reference``, the formulas tile by tile (the
input gradient's reference is the naive convolution's backward, in the tests).

The transform kernels work on all tiles of a map at once, every step one unit-stride loop over them
(which vectorizes): the map is split into its 16 phase planes (row and column positions mod 4), and
each tile row carries one junk tile so that moving a tile's window by a tile row or column is moving
an index (see the comment above the transforms). The transform constants are cast to the data's
dtype: a float32 loop multiplying by the literal 4.0 computes in float64, at half the vector width.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minimaskrcnn.nn import _winograd
from minimaskrcnn.nn._launch import serial_twin, sized
from minimaskrcnn.nn._stacked import stacked_matmul

B_T = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
               dtype=np.float64)


def tile_grid(h: int, w: int, padding) -> tuple[int, int, int, int]:
    """(H', W', T_h, T_w) of a stride-1 3×3 convolution of an h × w map: T_h = ceil(H' / 4) blocks."""
    return _winograd.tile_grid(h, w, padding, 4)


# ---- the filter transform and its adjoint ------------------------------------------------------------


@njit(cache=True, inline="always")
def _g_column(g0, g1, g2):
    """G (g0, g1, g2)ᵀ: the six values G's rows give, (¼, 0, 0), (−⅙, −⅙, −⅙), (−⅙, ⅙, −⅙),
    (1/24, 1/12, ⅙), (1/24, −1/12, ⅙), (0, 0, 1)."""
    even, odd = g0 + g2, g1
    sixth, g4 = 1.0 / 6.0, g0 * (1.0 / 24.0) + g2 * (1.0 / 6.0)
    return (0.25 * g0, -(even + odd) * sixth, (odd - even) * sixth,
            g4 + odd * (1.0 / 12.0), g4 - odd * (1.0 / 12.0), g2)


@njit(cache=True, inline="always")
def _g_t_column(u0, u1, u2, u3, u4, u5):
    """Gᵀ (u0, .., u5)ᵀ: the three values Gᵀ's rows give (the adjoint of ``_g_column``)."""
    sixth = 1.0 / 6.0
    return (0.25 * u0 - (u1 + u2) * sixth + (u3 + u4) * (1.0 / 24.0),
            (u2 - u1) * sixth + (u3 - u4) * (1.0 / 12.0),
            (u3 + u4 - u1 - u2) * sixth + u5)


@njit(cache=True, parallel=True)
def _filter_transform_kernel(w, u):
    """u[6ξ + ν, k, c] = (G g Gᵀ)[ξ, ν] for g = w[k, c]: G along the filters' columns, then their rows,
    every loop running over the input channels c (so that it vectorizes)."""
    k_out, c_in = w.shape[:2]
    for k in prange(k_out):
        t = np.empty((6, 3, c_in), w.dtype)
        for q in range(3):  # t = G g
            for c in range(c_in):
                t[0, q, c], t[1, q, c], t[2, q, c], t[3, q, c], t[4, q, c], t[5, q, c] = _g_column(
                    w[k, c, 0, q], w[k, c, 1, q], w[k, c, 2, q])
        for a in range(6):  # U = t Gᵀ
            for c in range(c_in):
                (u[6 * a, k, c], u[6 * a + 1, k, c], u[6 * a + 2, k, c], u[6 * a + 3, k, c],
                 u[6 * a + 4, k, c], u[6 * a + 5, k, c]) = _g_column(t[a, 0, c], t[a, 1, c], t[a, 2, c])


def filter_transform(w: np.ndarray) -> np.ndarray:
    """U = G g Gᵀ for every filter: (K, C, 3, 3) -> (36, K, C), position 6ξ + ν first."""
    u = np.empty((36,) + w.shape[:2], w.dtype)
    sized(_filter_transform_kernel, u.size)(np.ascontiguousarray(w), u)
    return u


def _filter_transform_reference(w: np.ndarray) -> np.ndarray:
    """``filter_transform`` as the matrix formula: G g Gᵀ for every (k, c)."""
    return _winograd._filter_transform_reference(w, G)


@njit(cache=True, parallel=True)
def _filter_transform_adjoint_kernel(du, dw):
    """dg = Gᵀ dU G for every (k, c): du (36, K, C) -> dw (K, C, 3, 3), the adjoint of U = G g Gᵀ,
    every loop running over the input channels c."""
    k_out, c_in = dw.shape[:2]
    for k in prange(k_out):
        t = np.empty((3, 6, c_in), dw.dtype)
        for nu in range(6):  # t = Gᵀ dU (over ξ)
            for c in range(c_in):
                t[0, nu, c], t[1, nu, c], t[2, nu, c] = _g_t_column(
                    du[nu, k, c], du[6 + nu, k, c], du[12 + nu, k, c], du[18 + nu, k, c],
                    du[24 + nu, k, c], du[30 + nu, k, c])
        for i in range(3):  # dg = t G (over ν)
            for c in range(c_in):
                dw[k, c, i, 0], dw[k, c, i, 1], dw[k, c, i, 2] = _g_t_column(
                    t[i, 0, c], t[i, 1, c], t[i, 2, c], t[i, 3, c], t[i, 4, c], t[i, 5, c])


# ---- the 1-D steps, each for a row of tiles at once (inlined into the kernels) -----------------------


@njit(cache=True, inline="always")
def _b_t_step6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5):
    """Bᵀ along one axis: o = Bᵀ d for the six values d0 .. d5 of each tile (arrays over the tiles):
    o0 = 4d0 − 5d2 + d4, o1 = d3 + d4 − 4(d1 + d2), o2 = d4 − d3 + 4(d1 − d2),
    o3 = d4 − d2 + 2(d3 − d1), o4 = d4 − d2 − 2(d3 − d1), o5 = 4d1 − 5d3 + d5."""
    two, four, five = o0.dtype.type(2.0), o0.dtype.type(4.0), o0.dtype.type(5.0)  # float32 stays float32
    for q in range(o0.shape[0]):
        o0[q] = four * d0[q] - five * d2[q] + d4[q]
    for q in range(o0.shape[0]):
        o1[q] = d3[q] + d4[q] - four * (d1[q] + d2[q])
    for q in range(o0.shape[0]):
        o2[q] = d4[q] - d3[q] + four * (d1[q] - d2[q])
    for q in range(o0.shape[0]):
        o3[q] = d4[q] - d2[q] + two * (d3[q] - d1[q])
    for q in range(o0.shape[0]):
        o4[q] = d4[q] - d2[q] - two * (d3[q] - d1[q])
    for q in range(o0.shape[0]):
        o5[q] = four * d1[q] - five * d3[q] + d5[q]


@njit(cache=True, inline="always")
def _a_t_step6(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3, bias):
    """Aᵀ along one axis, plus ``bias``: y0 = m0 + (m1 + m2) + (m3 + m4), y1 = (m1 − m2) + 2(m3 − m4),
    y2 = (m1 + m2) + 4(m3 + m4), y3 = (m1 − m2) + 8(m3 − m4) + m5."""
    two, four, eight = y0.dtype.type(2.0), y0.dtype.type(4.0), y0.dtype.type(8.0)
    for q in range(y0.shape[0]):
        y0[q] = m0[q] + (m1[q] + m2[q]) + (m3[q] + m4[q]) + bias
    for q in range(y0.shape[0]):
        y1[q] = (m1[q] - m2[q]) + two * (m3[q] - m4[q]) + bias
    for q in range(y0.shape[0]):
        y2[q] = (m1[q] + m2[q]) + four * (m3[q] + m4[q]) + bias
    for q in range(y0.shape[0]):
        y3[q] = (m1[q] - m2[q]) + eight * (m3[q] - m4[q]) + m5[q] + bias


@njit(cache=True, inline="always")
def _a_step6(y0, y1, y2, y3, f0, f1, f2, f3, f4, f5):
    """A along one axis (the adjoint of Aᵀ): f = A y, A's rows (1, 0, 0, 0), (1, 1, 1, 1),
    (1, −1, 1, −1), (1, 2, 4, 8), (1, −2, 4, −8), (0, 0, 0, 1)."""
    two, four, eight = f0.dtype.type(2.0), f0.dtype.type(4.0), f0.dtype.type(8.0)
    for q in range(y0.shape[0]):
        f0[q] = y0[q]
    for q in range(y0.shape[0]):
        f1[q] = (y0[q] + y2[q]) + (y1[q] + y3[q])
    for q in range(y0.shape[0]):
        f2[q] = (y0[q] + y2[q]) - (y1[q] + y3[q])
    for q in range(y0.shape[0]):
        f3[q] = (y0[q] + four * y2[q]) + (two * y1[q] + eight * y3[q])
    for q in range(y0.shape[0]):
        f4[q] = (y0[q] + four * y2[q]) - (two * y1[q] + eight * y3[q])
    for q in range(y0.shape[0]):
        f5[q] = y3[q]


@njit(cache=True, inline="always")
def _b_step6_add(v0, v1, v2, v3, v4, v5, o0, o1, o2, o3, o4, o5):
    """B along one axis (the adjoint of Bᵀ), added into o: o_t += Σ_ξ Bᵀ[ξ, t]·v_ξ, i.e.
    o0 += 4v0, o1 += 4(v2 − v1 + v5) + 2(v4 − v3), o2 += −5v0 − 4(v1 + v2) − (v3 + v4),
    o3 += (v1 − v2) + 2(v3 − v4) − 5v5, o4 += v0 + v1 + v2 + v3 + v4, o5 += v5. One loop per output,
    so the outputs may be overlapping views (shifted windows of one plane)."""
    two, four, five = o0.dtype.type(2.0), o0.dtype.type(4.0), o0.dtype.type(5.0)
    for q in range(o0.shape[0]):
        o0[q] += four * v0[q]
    for q in range(o0.shape[0]):
        o1[q] += four * (v2[q] - v1[q] + v5[q]) + two * (v4[q] - v3[q])
    for q in range(o0.shape[0]):
        o2[q] -= five * v0[q] + four * (v1[q] + v2[q]) + (v3[q] + v4[q])
    for q in range(o0.shape[0]):
        o3[q] += (v1[q] - v2[q]) + two * (v3[q] - v4[q]) - five * v5[q]
    for q in range(o0.shape[0]):
        o4[q] += v0[q] + v1[q] + v2[q] + v3[q] + v4[q]
    for q in range(o0.shape[0]):
        o5[q] += v5[q]


# ---- a map's rows split into and merged from its phase planes (column phase s = column mod 4) ----------
#
# One loop over the groups of four columns moves all four phases at once (four values side by side
# in the row, one into each plane), which the compiler vectorizes; a loop per phase reads the row
# with a stride of 4 and stays scalar. Measured on 8 × 64 maps of 32 × 32 (float32, 2 threads, calls
# alternated with the per-phase loops): the input transform 1.07 → 0.71 ms, the output transform's
# adjoint 0.72 → 0.45 ms; the two kernels that merge (the output transform and the input transform's
# adjoint) gained little, as their stores interleave. Only the groups cut by the row's ends go value
# by value.


@njit(cache=True, inline="always")
def _split_row(src, n, c, y, width, pw, planes, r, base, s_row):
    """planes[r, s, base + b] = src[n, c, y, 4b + s − pw] for every b < s_row and phase s whose column
    lies in the row (0 ≤ 4b + s − pw < width); the others are left as they are (the zero padding)."""
    b0 = (pw + 3) // 4  # the first group whose four columns all lie in the row
    b1 = max(b0, min(s_row, (width + pw - 4) // 4 + 1))  # past the last one
    for b in range(b0, b1):
        col = 4 * b - pw
        planes[r, 0, base + b] = src[n, c, y, col]
        planes[r, 1, base + b] = src[n, c, y, col + 1]
        planes[r, 2, base + b] = src[n, c, y, col + 2]
        planes[r, 3, base + b] = src[n, c, y, col + 3]
    for b in range(min(b0, s_row)):
        for s in range(4):
            col = 4 * b + s - pw
            if 0 <= col < width:
                planes[r, s, base + b] = src[n, c, y, col]
    for b in range(b1, s_row):
        for s in range(4):
            col = 4 * b + s - pw
            if 0 <= col < width:
                planes[r, s, base + b] = src[n, c, y, col]


@njit(cache=True, inline="always")
def _merge_row(planes, r, base, s_row, dst, n, c, y, width, pw):
    """dst[n, c, y, col] = planes[r, s, base + b] for every column col = 4b + s − pw of the row (the
    adjoint of ``_split_row``, less the padding)."""
    b0 = (pw + 3) // 4
    b1 = max(b0, min(s_row, (width + pw - 4) // 4 + 1))
    for b in range(b0, b1):
        col = 4 * b - pw
        dst[n, c, y, col] = planes[r, 0, base + b]
        dst[n, c, y, col + 1] = planes[r, 1, base + b]
        dst[n, c, y, col + 2] = planes[r, 2, base + b]
        dst[n, c, y, col + 3] = planes[r, 3, base + b]
    for b in range(min(b0, s_row)):
        for s in range(4):
            col = 4 * b + s - pw
            if 0 <= col < width:
                dst[n, c, y, col] = planes[r, s, base + b]
    for b in range(b1, s_row):
        for s in range(4):
            col = 4 * b + s - pw
            if 0 <= col < width:
                dst[n, c, y, col] = planes[r, s, base + b]


# ---- the three transforms, one task per (map, channel), all tiles of the map at once -------------------
#
# A map's tiles are numbered p = i·S + j with S = T_w + 1: each tile row carries one junk tile
# (j = T_w), so that shifting a tile's window by one tile row or column is shifting an index by S or
# 1, and every step below is one loop over all T_h·S tiles of the map instead of T_h short loops
# over a tile row (a 64-pixel row has 16 tiles: one vector register, all loop overhead). V, M and dM
# keep the junk columns (1/S more work in the products); the output transform skips them and the
# filter gradient's dM is zero there. The map's padded input is first split into its 16 phase planes
# X_rs[a·S + b] = X_pad[4a + r, 4b + s]: tile p's pixel (u, t) is X_{u mod 4, t mod 4}[p + (u div 4)·S
# + t div 4], a unit-stride slice for every (u, t).


def tile_stride(tw: int) -> int:
    """S, the index distance of two tile rows: T_w tiles and one junk tile."""
    return tw + 1


@njit(cache=True, parallel=True)
def _input_transform_kernel(x, v, ph, pw, th, tw):
    """V[(ξ, ν), c, n·T_h·S + p] = (Bᵀ d B)[ξ, ν] for the 6×6 tile d at (4i − ph, 4j − pw) of x[n, c],
    p = i·S + j (j = T_w: junk); reads outside x are the zero padding; v (36, C, N·T_h·S).

    1. x[n, c], zero padded, split into its 16 phase planes (row phase r, column phase s);
    2. d B along the columns, for each row phase r and every tile (and the tile row below the last):
       e[r, ν], from the six column slices t = 0 .. 5 of the phase planes of row phase r;
    3. Bᵀ (d B) along the rows: rows u = 0 .. 5 of the tiles are e[u mod 4] shifted by (u div 4)·S."""
    n_batch, c_in, height, width = x.shape
    s_row = tw + 1
    n_tiles = th * s_row
    for task in prange(n_batch * c_in):
        n, c = task // c_in, task % c_in
        planes = np.zeros((4, 4, (th + 2) * s_row), x.dtype)
        e = np.empty((4, 6, n_tiles + s_row), x.dtype)
        for y in range(height):  # 1. padded column 4b + s is x column 4b + s − pw
            yy = y + ph
            _split_row(x, n, c, y, width, pw, planes, yy % 4, (yy // 4) * s_row, s_row)
        span = n_tiles + s_row
        for r in range(4):  # 2. tile p's column t is plane (r, t mod 4) at p + t div 4
            q = planes[r]
            _b_t_step6(q[0, :span], q[1, :span], q[2, :span], q[3, :span],
                       q[0, 1:span + 1], q[1, 1:span + 1],
                       e[r, 0], e[r, 1], e[r, 2], e[r, 3], e[r, 4], e[r, 5])
        p0 = n * n_tiles
        for nu in range(6):  # 3.
            _b_t_step6(e[0, nu, :n_tiles], e[1, nu, :n_tiles], e[2, nu, :n_tiles], e[3, nu, :n_tiles],
                       e[0, nu, s_row:], e[1, nu, s_row:],
                       v[nu, c, p0:p0 + n_tiles], v[6 + nu, c, p0:p0 + n_tiles],
                       v[12 + nu, c, p0:p0 + n_tiles], v[18 + nu, c, p0:p0 + n_tiles],
                       v[24 + nu, c, p0:p0 + n_tiles], v[30 + nu, c, p0:p0 + n_tiles])


@njit(cache=True, parallel=True)
def _input_transform_adjoint_kernel(dv, dx, ph, pw, th, tw):
    """The adjoint of ``_input_transform_kernel``, for the input gradient: dx[n, c] = Σ_tiles B dV Bᵀ,
    each 6×6 block added at its tile's window (4i − ph, 4j − pw), the padding's share dropped; dv
    (36, C, N·T_h·S) (zero at the junk tiles, as Uᵀ dM is). The forward's steps in reverse:

    3. B along the rows: row u of every tile adds into e[u mod 4] shifted by (u div 4)·S;
    2. B along the columns, for each row phase r: column t adds into the phase plane (r, t mod 4)
       shifted by t div 4 (overlapping windows sum);
    1. the phase planes, less the padding, interleaved into dx[n, c]."""
    n_batch, c_in, height, width = dx.shape
    s_row = tw + 1
    n_tiles = th * s_row
    span = n_tiles + s_row
    for task in prange(n_batch * c_in):
        n, c = task // c_in, task % c_in
        planes = np.zeros((4, 4, (th + 2) * s_row), dv.dtype)
        e = np.zeros((4, 6, span), dv.dtype)
        p0 = n * n_tiles
        for nu in range(6):  # 3.
            _b_step6_add(dv[nu, c, p0:p0 + n_tiles], dv[6 + nu, c, p0:p0 + n_tiles],
                         dv[12 + nu, c, p0:p0 + n_tiles], dv[18 + nu, c, p0:p0 + n_tiles],
                         dv[24 + nu, c, p0:p0 + n_tiles], dv[30 + nu, c, p0:p0 + n_tiles],
                         e[0, nu, :n_tiles], e[1, nu, :n_tiles], e[2, nu, :n_tiles], e[3, nu, :n_tiles],
                         e[0, nu, s_row:], e[1, nu, s_row:])
        for r in range(4):  # 2.
            q = planes[r]
            _b_step6_add(e[r, 0], e[r, 1], e[r, 2], e[r, 3], e[r, 4], e[r, 5],
                         q[0, :span], q[1, :span], q[2, :span], q[3, :span],
                         q[0, 1:span + 1], q[1, 1:span + 1])
        for y in range(height):  # 1.
            yy = y + ph
            _merge_row(planes, yy % 4, (yy // 4) * s_row, s_row, dx, n, c, y, width, pw)


@njit(cache=True, parallel=True)
def _output_transform_kernel(m, bias, out, th, tw):
    """out[n, k, 4i:4i+4, 4j:4j+4] = (Aᵀ M A) + bias[k] for M = m[:, k, n·T_h·S + i·S + j] reshaped
    (6, 6), cropped to out's size; bias (K,) or empty.

    1. Aᵀ M along the rows, for every tile: r[u, ν], u = 0 .. 3;
    2. (Aᵀ M) A along the columns, plus the bias: y[u, q], output pixel (4i + u, 4j + q) of every tile;
    3. y's 16 phase planes interleaved into the output (junk tiles and pixels past the edge skipped)."""
    n_batch, k_out, hout, wout = out.shape
    s_row = tw + 1
    n_tiles = th * s_row
    for task in prange(n_batch * k_out):
        n, k = task // k_out, task % k_out
        r = np.empty((4, 6, n_tiles), m.dtype)
        y = np.empty((4, 4, n_tiles), m.dtype)
        bk = m.dtype.type(bias[k] if bias.size else 0.0)  # in m's dtype (no float64 promotion)
        p0 = n * n_tiles
        for nu in range(6):  # 1.
            _a_t_step6(m[nu, k, p0:p0 + n_tiles], m[6 + nu, k, p0:p0 + n_tiles],
                       m[12 + nu, k, p0:p0 + n_tiles], m[18 + nu, k, p0:p0 + n_tiles],
                       m[24 + nu, k, p0:p0 + n_tiles], m[30 + nu, k, p0:p0 + n_tiles],
                       r[0, nu], r[1, nu], r[2, nu], r[3, nu], m.dtype.type(0.0))
        for u in range(4):  # 2.
            _a_t_step6(r[u, 0], r[u, 1], r[u, 2], r[u, 3], r[u, 4], r[u, 5],
                       y[u, 0], y[u, 1], y[u, 2], y[u, 3], bk)
        for row_index in range(hout):  # 3. (the junk tile j = T_w lies past the row: skipped)
            _merge_row(y, row_index % 4, (row_index // 4) * s_row, s_row, out, n, k, row_index, wout, 0)


@njit(cache=True, parallel=True)
def _output_transform_adjoint_kernel(dout, dm, th, tw):
    """dM = A dY Aᵀ for the 4×4 block dY = dout[n, k, 4i:4i+4, 4j:4j+4] of every tile (zeros beyond
    the output, and for the junk tiles), into dm (36, K, N·T_h·S).

    1. dout[n, k] split into its 16 phase planes g[u, q] (tile p's pixel (u, q), zeros elsewhere);
    2. along the columns: f[u, ν] = (A dY_u)[ν] for each row u, every tile;
    3. along the rows: dM[ξ, ν] = (A f[:, ν])[ξ], written into dm."""
    n_batch, k_out, hout, wout = dout.shape
    s_row = tw + 1
    n_tiles = th * s_row
    for task in prange(n_batch * k_out):
        n, k = task // k_out, task % k_out
        g = np.zeros((4, 4, n_tiles), dout.dtype)
        f = np.empty((4, 6, n_tiles), dout.dtype)
        for row_index in range(hout):  # 1.
            _split_row(dout, n, k, row_index, wout, 0, g, row_index % 4, (row_index // 4) * s_row, s_row)
        for u in range(4):  # 2.
            _a_step6(g[u, 0], g[u, 1], g[u, 2], g[u, 3],
                     f[u, 0], f[u, 1], f[u, 2], f[u, 3], f[u, 4], f[u, 5])
        p0 = n * n_tiles
        for nu in range(6):  # 3.
            _a_step6(f[0, nu], f[1, nu], f[2, nu], f[3, nu],
                     dm[nu, k, p0:p0 + n_tiles], dm[6 + nu, k, p0:p0 + n_tiles],
                     dm[12 + nu, k, p0:p0 + n_tiles], dm[18 + nu, k, p0:p0 + n_tiles],
                     dm[24 + nu, k, p0:p0 + n_tiles], dm[30 + nu, k, p0:p0 + n_tiles])


# ---- the same transforms with the tiles ordered (i, j, n): for many small maps ---------------------------
#
# A 14×14 RoI has 4×4 tiles of F(4×4, 3×3), 20 per map with the junk tiles above: every loop of the
# kernels above would run over 20 tiles. With many small maps (RoIs, the small FPN levels of a batch)
# these kernels order the P = T_h·T_w·N tiles as p = (i·T_w + j)·N + n (no junk tiles) and run every
# loop over the N maps, as ``_winograd``'s maps-inner F(2×2) kernels do: each task (a channel) first
# copies its N planes into a zero-padded (rows, columns, N) buffer, so that the N values of one pixel
# lie side by side. Per tile the same 1-D steps as above in the same order (the scalar forms
# ``_bt6`` etc. of ``_b_t_step6`` etc.), through a (6, 6, N) scratch between the two axes. On 57 RoIs
# × 64 channels of 14×14 (a shapes mask head, float32, 2 threads) a layer's forward + backward took
# 13.0 ms against F(2×2)'s 14.8 (the 36 products (64, 64) @ (64, 912) run 27 % fewer FLOPs than F(2×2)'s
# 16 of (64, 64) @ (64, 2793)); on 8 maps of 64 × 16² 4.7 ms against 6.1 (im2col) and 6.2 (the tile
# rows above); see ``_winograd.auto_method``.


def maps_inner(n_maps: int, tw: int) -> bool:
    """Whether the tiles are ordered (i, j, n) (``_*_inner_kernel``): at least 8 maps, at most 16
    pixels wide (T_w ≤ 4 tiles)."""
    return tw <= 4 and n_maps >= 8


@njit(cache=True, inline="always")
def _bt6(d0, d1, d2, d3, d4, d5, two, four, five):
    """``_b_t_step6`` for one tile's six values: Bᵀ d."""
    return (four * d0 - five * d2 + d4, d3 + d4 - four * (d1 + d2), d4 - d3 + four * (d1 - d2),
            d4 - d2 + two * (d3 - d1), d4 - d2 - two * (d3 - d1), four * d1 - five * d3 + d5)


@njit(cache=True, inline="always")
def _at6(m0, m1, m2, m3, m4, m5, bias, two, four, eight):
    """``_a_t_step6`` for one tile's six values: Aᵀ m + bias."""
    return (m0 + (m1 + m2) + (m3 + m4) + bias, (m1 - m2) + two * (m3 - m4) + bias,
            (m1 + m2) + four * (m3 + m4) + bias, (m1 - m2) + eight * (m3 - m4) + m5 + bias)


@njit(cache=True, inline="always")
def _a6(y0, y1, y2, y3, two, four, eight):
    """``_a_step6`` for one tile's four values: A y."""
    return (y0, (y0 + y2) + (y1 + y3), (y0 + y2) - (y1 + y3), (y0 + four * y2) + (two * y1 + eight * y3),
            (y0 + four * y2) - (two * y1 + eight * y3), y3)


@njit(cache=True, inline="always")
def _b6(v0, v1, v2, v3, v4, v5, two, four, five):
    """B v for one tile's six values (the adjoint of ``_bt6``; ``_b_step6_add``'s increments)."""
    return (four * v0, four * (v2 - v1 + v5) + two * (v4 - v3),
            -(five * v0 + four * (v1 + v2) + (v3 + v4)), (v1 - v2) + two * (v3 - v4) - five * v5,
            v0 + v1 + v2 + v3 + v4, v5)


@njit(cache=True, parallel=True)
def _input_transform_inner_kernel(x, v, ph, pw, th, tw):
    """V[(ξ, ν), c, (i·T_w + j)·N + n] = (Bᵀ d B)[ξ, ν] for the 6×6 tile d at (4i − ph, 4j − pw) of
    x[n, c]; v (36, C, T_h·T_w·N). One task per channel c:

    1. x[:, c] into a zero-padded (4·T_h + 2, 4·T_w + 2, N) buffer (pixel-major, maps innermost);
    2. for each tile, d B along its six rows u: e[u, ν], every loop over the N maps;
    3. Bᵀ (d B) along its six columns ν, into v."""
    n_batch, c_in, height, width = x.shape
    two, four, five = x.dtype.type(2.0), x.dtype.type(4.0), x.dtype.type(5.0)
    for c in prange(c_in):
        buf = np.zeros((4 * th + 2, 4 * tw + 2, n_batch), x.dtype)
        _winograd._maps_to_buffer(x, c, ph, pw, buf)  # 1.
        e = np.empty((6, 6, n_batch), x.dtype)
        for i in range(th):
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                y0, x0 = 4 * i, 4 * j
                for u in range(6):  # 2.
                    for n in range(n_batch):
                        e[u, 0, n], e[u, 1, n], e[u, 2, n], e[u, 3, n], e[u, 4, n], e[u, 5, n] = _bt6(
                            buf[y0 + u, x0, n], buf[y0 + u, x0 + 1, n], buf[y0 + u, x0 + 2, n],
                            buf[y0 + u, x0 + 3, n], buf[y0 + u, x0 + 4, n], buf[y0 + u, x0 + 5, n],
                            two, four, five)
                for nu in range(6):  # 3.
                    for n in range(n_batch):
                        q = p0 + n
                        (v[nu, c, q], v[6 + nu, c, q], v[12 + nu, c, q], v[18 + nu, c, q],
                         v[24 + nu, c, q], v[30 + nu, c, q]) = _bt6(
                            e[0, nu, n], e[1, nu, n], e[2, nu, n], e[3, nu, n], e[4, nu, n], e[5, nu, n],
                            two, four, five)


@njit(cache=True, parallel=True)
def _output_transform_inner_kernel(m, bias, out, th, tw):
    """out[n, k, 4i:4i+4, 4j:4j+4] = (Aᵀ M A) + bias[k] for M = m[:, k, (i·T_w + j)·N + n] reshaped
    (6, 6), cropped to out's size; bias (K,) or empty. One task per output channel k:

    1. for each tile, Aᵀ M along its six columns ν: r[u, ν], u = 0 .. 3 (plus a float zero, as
       ``_output_transform_kernel``), every loop over the N maps;
    2. (Aᵀ M) A along its four rows, plus the bias, into a (4·T_h, 4·T_w, N) buffer;
    3. the buffer, cropped to H' × W', copied into out[:, k]."""
    n_batch, k_out, hout, wout = out.shape
    two, four, eight = m.dtype.type(2.0), m.dtype.type(4.0), m.dtype.type(8.0)
    zero = m.dtype.type(0.0)
    for k in prange(k_out):
        buf = np.empty((4 * th, 4 * tw, n_batch), m.dtype)
        r = np.empty((4, 6, n_batch), m.dtype)
        bk = m.dtype.type(bias[k] if bias.size else 0.0)  # in m's dtype (no float64 promotion)
        for i in range(th):
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                for nu in range(6):  # 1.
                    for n in range(n_batch):
                        q = p0 + n
                        r[0, nu, n], r[1, nu, n], r[2, nu, n], r[3, nu, n] = _at6(
                            m[nu, k, q], m[6 + nu, k, q], m[12 + nu, k, q], m[18 + nu, k, q],
                            m[24 + nu, k, q], m[30 + nu, k, q], zero, two, four, eight)
                y0, x0 = 4 * i, 4 * j
                for u in range(4):  # 2.
                    for n in range(n_batch):
                        (buf[y0 + u, x0, n], buf[y0 + u, x0 + 1, n], buf[y0 + u, x0 + 2, n],
                         buf[y0 + u, x0 + 3, n]) = _at6(r[u, 0, n], r[u, 1, n], r[u, 2, n], r[u, 3, n],
                                                        r[u, 4, n], r[u, 5, n], bk, two, four, eight)
        _winograd._buffer_to_maps(buf, out, k)  # 3.


@njit(cache=True, parallel=True)
def _output_transform_adjoint_inner_kernel(dout, dm, th, tw):
    """dM = A dY Aᵀ for the 4×4 block dY = dout[n, k, 4i:4i+4, 4j:4j+4] of every tile (zeros beyond
    the output), into dm (36, K, T_h·T_w·N) with the tiles ordered (i, j, n). One task per output
    channel k:

    1. dout[:, k] into a zero-padded (4·T_h, 4·T_w, N) buffer;
    2. for each tile, A along its four rows u: f[u, ν], every loop over the N maps;
    3. A along its six columns ν, into dm."""
    n_batch, k_out, hout, wout = dout.shape
    two, four, eight = dout.dtype.type(2.0), dout.dtype.type(4.0), dout.dtype.type(8.0)
    for k in prange(k_out):
        buf = np.zeros((4 * th, 4 * tw, n_batch), dout.dtype)
        _winograd._maps_to_buffer(dout, k, 0, 0, buf)  # 1.
        f = np.empty((4, 6, n_batch), dout.dtype)
        for i in range(th):
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                y0, x0 = 4 * i, 4 * j
                for u in range(4):  # 2.
                    for n in range(n_batch):
                        f[u, 0, n], f[u, 1, n], f[u, 2, n], f[u, 3, n], f[u, 4, n], f[u, 5, n] = _a6(
                            buf[y0 + u, x0, n], buf[y0 + u, x0 + 1, n], buf[y0 + u, x0 + 2, n],
                            buf[y0 + u, x0 + 3, n], two, four, eight)
                for nu in range(6):  # 3.
                    for n in range(n_batch):
                        q = p0 + n
                        (dm[nu, k, q], dm[6 + nu, k, q], dm[12 + nu, k, q], dm[18 + nu, k, q],
                         dm[24 + nu, k, q], dm[30 + nu, k, q]) = _a6(f[0, nu, n], f[1, nu, n], f[2, nu, n],
                                                                     f[3, nu, n], two, four, eight)


@njit(cache=True, parallel=True)
def _input_transform_adjoint_inner_kernel(dv, dx, ph, pw, th, tw):
    """dx[n, c] = Σ_tiles B dV Bᵀ, each 6×6 block added at its tile's window (4i − ph, 4j − pw), the
    padding's share dropped; dv (36, C, T_h·T_w·N) with the tiles ordered (i, j, n). One task per
    input channel c:

    1. for each tile, B along its six columns ν: g[u, ν], every loop over the N maps;
    2. B along its six rows u: the tile's block, into t[i, j] (tiles apart: no overlap yet);
    3. each pixel of x's (padded) map sums the blocks of the (up to 2×2) tiles whose 6×6 windows
       cover it (``_winograd._sum_tile_blocks``);
    4. those sums copied into dx[:, c]."""
    n_batch, c_in, height, width = dx.shape
    two, four, five = dv.dtype.type(2.0), dv.dtype.type(4.0), dv.dtype.type(5.0)
    for c in prange(c_in):
        t = np.empty((th, tw, 6, 6, n_batch), dv.dtype)
        g = np.empty((6, 6, n_batch), dv.dtype)
        acc = np.empty((height, width, n_batch), dv.dtype)
        for i in range(th):
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                for nu in range(6):  # 1.
                    for n in range(n_batch):
                        q = p0 + n
                        g[0, nu, n], g[1, nu, n], g[2, nu, n], g[3, nu, n], g[4, nu, n], g[5, nu, n] = _b6(
                            dv[nu, c, q], dv[6 + nu, c, q], dv[12 + nu, c, q], dv[18 + nu, c, q],
                            dv[24 + nu, c, q], dv[30 + nu, c, q], two, four, five)
                for u in range(6):  # 2.
                    for n in range(n_batch):
                        (t[i, j, u, 0, n], t[i, j, u, 1, n], t[i, j, u, 2, n], t[i, j, u, 3, n],
                         t[i, j, u, 4, n], t[i, j, u, 5, n]) = _b6(g[u, 0, n], g[u, 1, n], g[u, 2, n],
                                                                   g[u, 3, n], g[u, 4, n], g[u, 5, n],
                                                                   two, four, five)
        _winograd._sum_tile_blocks(t, 4, ph, pw, acc)  # 3.
        _winograd._buffer_to_maps(acc, dx, c)  # 4.


# ---- the forward and the filter gradient ------------------------------------------------------------


def _n_tiles(n: int, th: int, tw: int) -> int:
    """P, the columns of V, M and dM: N·T_h·T_w tiles in the (i, j, n) order (``maps_inner``), else
    N·T_h·S (with the junk tiles)."""
    return n * th * (tw if maps_inner(n, tw) else tile_stride(tw))


def _transformed_input(x: np.ndarray, ph: int, pw: int, th: int, tw: int, keep: bool = False) -> np.ndarray:
    """V = Bᵀ d B for every tile and channel of x (contiguous): (36, C, P), the tiles in the order
    ``maps_inner`` says; a fresh array if ``keep``, else a reused scratch buffer (no page faults;
    overwritten by the next call)."""
    from minimaskrcnn.nn._conv import _workspace  # scratch reused across calls (no page faults)

    shape = (36, x.shape[1], _n_tiles(x.shape[0], th, tw))
    v = np.empty(shape, x.dtype) if keep else _workspace("winograd_v", shape, x.dtype)
    kernel = _input_transform_inner_kernel if maps_inner(x.shape[0], tw) else _input_transform_kernel
    sized(kernel, v.size)(x, v, ph, pw, th, tw)
    return v


def winograd43_forward(x: np.ndarray, w: np.ndarray, b, padding, keep_v: bool = False, u=None):
    """Stride-1 3×3 cross-correlation by F(4×4, 3×3), as ``conv2d_forward``.

    x (N, C, H, W), w (K, C, 3, 3), b (K,) or None, padding (ph, pw) -> (out, v): out (N, K, H + 2ph − 2,
    W + 2pw − 2); v the transformed input for ``winograd43_backward`` when ``keep_v`` and it is at most
    ``_winograd.KEEP_V_BYTES``, else None; ``u`` the transformed filters when the caller has them.

    1. U = G g Gᵀ for every filter, (36, K, C) (unless given);
    2. V = Bᵀ d B for every 6×6 tile (stride 4) and channel, (36, C, P) with P = N·T_h·S tiles
       (N·T_h·T_w ordered (i, j, n) on many small maps, ``maps_inner``);
    3. M = U @ V: 36 matrix products (K, C) @ (C, P);
    4. out = Aᵀ M A + b per tile, cropped to the output."""
    from minimaskrcnn.nn._conv import _workspace

    n, c, h, wd = x.shape
    k = w.shape[0]
    ph, pw = padding
    hout, wout, th, tw = tile_grid(h, wd, padding)
    x = np.ascontiguousarray(x)
    keep = keep_v and 36 * c * _n_tiles(n, th, tw) * x.itemsize <= _winograd.KEEP_V_BYTES
    u = filter_transform(w) if u is None else u  # 1.
    v = _transformed_input(x, ph, pw, th, tw, keep)  # 2.
    m = _workspace("winograd_m", (36, k, v.shape[2]), x.dtype)
    stacked_matmul(u, v, out=m)  # 3.
    out = np.empty((n, k, hout, wout), x.dtype)
    bias = b if b is not None else np.empty(0, x.dtype)
    kernel = _output_transform_inner_kernel if maps_inner(n, tw) else _output_transform_kernel
    sized(kernel, m.size)(m, bias, out, th, tw)  # 4.
    return out, (v if keep else None)


def winograd43_conv3x3(x: np.ndarray, w: np.ndarray, b, padding) -> np.ndarray:
    """``winograd43_forward``'s output alone."""
    return winograd43_forward(x, w, b, padding)[0]


def winograd43_backward(x: np.ndarray, dout: np.ndarray, w: np.ndarray, padding, v=None,
                        need_dx: bool = True, need_dw: bool = True, u=None):
    """(dx or None, dW or None) of a stride-1 3×3 convolution by F(4×4, 3×3), for x (N, C, H, W),
    dout (N, K, H', W'), w (K, C, 3, 3) (only read for dx), v the forward's transformed input and u its
    transformed filters (None: recomputed).
    Each step's adjoint in reverse, both gradients sharing dM (as ``_winograd.winograd_backward``):

    1. dM = A dY Aᵀ for every tile and output channel, (36, K, P) (zero for the junk tiles);
    2. dV = Uᵀ @ dM: 36 matrix products (C, K) @ (K, P);
    3. dx = Σ_tiles B dV Bᵀ at every tile's window (the input transform's adjoint);
    4. V = Bᵀ d B for every tile and channel, unless given;
    5. dU = dM @ Vᵀ: 36 matrix products (K, P) @ (P, C);
    6. dW = Gᵀ dU G for every (k, c)."""
    from minimaskrcnn.nn._conv import _workspace

    n, c, h, wd = x.shape
    k = dout.shape[1]
    ph, pw = padding
    hout, wout, th, tw = tile_grid(h, wd, padding)
    x = np.ascontiguousarray(x)
    inner = maps_inner(n, tw)  # the tile order; V, dV and dM must agree with the forward's
    p = _n_tiles(n, th, tw)
    dm = _workspace("winograd_m", (36, k, p), x.dtype)
    adjoint = _output_transform_adjoint_inner_kernel if inner else _output_transform_adjoint_kernel
    sized(adjoint, dm.size)(np.ascontiguousarray(dout), dm, th, tw)  # 1.
    dx = dw = None
    if need_dx:
        dv = _workspace("winograd_v", (36, c, p), x.dtype)
        u = filter_transform(w) if u is None else u
        stacked_matmul(u.transpose(0, 2, 1), dm, out=dv)  # 2.
        dx = np.empty_like(x)
        adjoint = _input_transform_adjoint_inner_kernel if inner else _input_transform_adjoint_kernel
        sized(adjoint, dv.size)(dv, dx, ph, pw, th, tw)  # 3.
    if need_dw:
        if v is None:
            v = _transformed_input(x, ph, pw, th, tw)  # 4.
        du = _workspace("winograd_du", (36, k, c), x.dtype)
        stacked_matmul(dm, v.transpose(0, 2, 1), out=du)  # 5.
        dw = np.empty((k, c, 3, 3), x.dtype)
        sized(_filter_transform_adjoint_kernel, du.size)(du, dw)  # 6.
    return dx, dw


def winograd43_filter_grad(x: np.ndarray, dout: np.ndarray, padding) -> np.ndarray:
    """The filter gradient alone (``winograd43_backward``'s dW, V recomputed): dW (K, C, 3, 3) for
    x (N, C, H, W) and dout (N, K, H', W')."""
    return winograd43_backward(x, dout, None, padding, need_dx=False)[1]


# ---- the readable references: the formulas, tile by tile --------------------------------------------


def _padded_tiles(a: np.ndarray, padding, th: int, tw: int, size: int) -> np.ndarray:
    """a (N, C, H, W) zero padded by ``padding`` on the top / left and up to (4·Th + size − 4,
    4·Tw + size − 4) on the bottom / right, in float64."""
    ph, pw = padding
    n, c, h, wd = a.shape
    out = np.zeros((n, c, 4 * th + size - 4, 4 * tw + size - 4))
    out[:, :, ph:ph + h, pw:pw + wd] = a
    return out


def _winograd43_reference(x: np.ndarray, w: np.ndarray, b, padding) -> np.ndarray:
    """``winograd43_conv3x3`` as the formula, in loops: every output block Y = Σ_c Aᵀ[(G g Gᵀ) ⊙
    (Bᵀ d B)]A (+ b), with d the 6×6 tile at (4i, 4j) of the padded input."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    hout, wout, th, tw = tile_grid(h, wd, padding)
    xp = _padded_tiles(x, padding, th, tw, 6)
    y = np.zeros((n, k, 4 * th, 4 * tw))
    for img in range(n):
        for o in range(k):
            for ci in range(c):
                u = G @ w[o, ci] @ G.T
                for i in range(th):
                    for j in range(tw):
                        d = xp[img, ci, 4 * i:4 * i + 6, 4 * j:4 * j + 6]
                        y[img, o, 4 * i:4 * i + 4, 4 * j:4 * j + 4] += A_T @ (u * (B_T @ d @ B_T.T)) @ A_T.T
            if b is not None:
                y[img, o] += b[o]
    return y[:, :, :hout, :wout].astype(x.dtype)


def _winograd43_filter_grad_reference(x: np.ndarray, dout: np.ndarray, padding) -> np.ndarray:
    """``winograd43_filter_grad`` as the formulas, in loops: dW[k, c] = Gᵀ [Σ_tiles (A dY Aᵀ) ⊙
    (Bᵀ d B)] G with dY the tile's 4×4 block of dout (zeros past the output's edge)."""
    return _winograd._winograd_filter_grad_reference(x, dout, padding, A_T, B_T, G)


# Serial twins for small work (``minimaskrcnn.nn._launch.sized`` picks between the two).
_filter_transform_kernel_serial = serial_twin(_filter_transform_kernel)
_filter_transform_adjoint_kernel_serial = serial_twin(_filter_transform_adjoint_kernel)
_input_transform_kernel_serial = serial_twin(_input_transform_kernel)
_input_transform_adjoint_kernel_serial = serial_twin(_input_transform_adjoint_kernel)
_output_transform_kernel_serial = serial_twin(_output_transform_kernel)
_output_transform_adjoint_kernel_serial = serial_twin(_output_transform_adjoint_kernel)
_input_transform_inner_kernel_serial = serial_twin(_input_transform_inner_kernel)
_input_transform_adjoint_inner_kernel_serial = serial_twin(_input_transform_adjoint_inner_kernel)
_output_transform_inner_kernel_serial = serial_twin(_output_transform_inner_kernel)
_output_transform_adjoint_inner_kernel_serial = serial_twin(_output_transform_adjoint_inner_kernel)
