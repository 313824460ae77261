"""Winograd's minimal filtering F(2×2, 3×3) for stride-1 3×3 convolutions (Lavin & Gray, 2015).

A 3×3 convolution computes every output pixel from its own 3×3 window: 9 multiplications per pixel,
per input and output channel. Winograd's algorithm computes a 2×2 block of outputs from the 4×4 input
tile that covers it with 16 multiplications instead of 4·9 = 36, by moving to a basis in which the
convolution is an element-wise product:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

    d  (4, 4) input tile, g (3, 3) filter, Y (2, 2) output block, ⊙ the element-wise product, with

         ⎡1  0 −1  0⎤         ⎡ 1    0    0 ⎤         ⎡1  1  1  0⎤
    Bᵀ = ⎢0  1  1  0⎥     G = ⎢ ½    ½    ½ ⎥    Aᵀ = ⎣0  1 −1 −1⎦
         ⎢0 −1  1  0⎥         ⎢ ½   −½    ½ ⎥
         ⎣0  1  0 −1⎦         ⎣ 0    0    1 ⎦

In one dimension F(2, 3) gives y0 = d0·g0 + d1·g1 + d2·g2 and y1 = d1·g0 + d2·g1 + d3·g2 from four
products m1 = (d0 − d2)·g0, m2 = (d1 + d2)·(g0 + g1 + g2)/2, m3 = (d2 − d1)·(g0 − g1 + g2)/2,
m4 = (d1 − d3)·g2 as y0 = m1 + m2 + m3, y1 = m2 − m3 − m4 (expand them to check); the 2-D form nests
the 1-D one along rows and columns.

For a whole layer the element-wise product becomes a sum over input channels, so with
U = G g Gᵀ for every (output, input) channel pair and V = Bᵀ d B for every (input channel, tile):

    M[ξ, ν] (K, P) = U[ξ, ν] (K, C) @ V[ξ, ν] (C, P)     for each of the 16 positions (ξ, ν) of a tile,

16 matrix products of 16/36 the size of im2col's one; the filter transform is done once per call
and the input and output transforms are additions (Bᵀ and Aᵀ hold only 0 and ±1). The price is the
transforms' memory traffic, and a little precision: the transformed values are sums of up to 16
inputs, so float32 results differ from a direct convolution by a few units in the last place more.

``winograd_forward(x, w, b, padding)`` is the forward pass (Numba transforms around 16 BLAS products;
``winograd_conv3x3`` its output alone). The readable versions beside it: ``winograd_conv3x3_numpy``
(the same steps with NumPy array operations) and ``_winograd_reference`` (the formula above, tile by
tile, in loops).

Speed: the products shrink 2.25×, but the input and output transforms stream the 16-fold operands V
and M through memory. The Numba transforms work a tile row at a time, every loop running over the row's
tiles with unit strides (the input rows split into even and odd columns first), so the compiler
vectorizes them; they then cost a fraction of the products on wide maps. Short rows (a 14×14 RoI has
tile rows of 7) do not fill a vector register: for many small maps the transforms instead order the
tiles (i, j, n) and loop over the maps (``maps_inner``), each channel's maps first copied into a local
pixel-major buffer. ``auto_method`` is where conv2d's default method ("auto") takes this tier, or
F(4×4, 3×3) (``_winograd43``), whose larger tiles need less memory traffic and fewer products per
output on wide maps.

The backward (``winograd_backward``) runs each step's adjoint in reverse: dM = A dY Aᵀ per tile (the
output transform's adjoint), then for the input gradient dV = Uᵀ dM (16 matrix products) and
dx = Σ_tiles B dV Bᵀ (the input transform's adjoint: the tiles' windows overlap, so their
contributions add), and for the filter gradient dU = Σ_tiles dM ⊙ V (again 16 matrix products, with
V kept from the forward where it is small enough) and dW = Gᵀ dU G.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minimaskrcnn.nn._launch import serial_twin, sized
from minimaskrcnn.nn._stacked import stacked_matmul

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def applies(w_shape, geometry) -> bool:
    """True when the convolution is one F(2×2, 3×3) computes: 3×3 filters, stride 1, dilation 1."""
    sh, sw, _, _, dh, dw, _, _ = geometry
    return tuple(w_shape[2:]) == (3, 3) and (sh, sw, dh, dw) == (1, 1, 1, 1)


def auto_method(w_shape, geometry, n_maps: int) -> str:
    """The method conv2d's default ("auto") takes for a convolution of ``n_maps`` input maps (the
    batch, or the RoIs of a mask head): "winograd4" (F(4×4, 3×3), ``_winograd43``), "winograd"
    (F(2×2, 3×3), this module) or "im2col".

    Winograd saves GEMM work ∝ C_in·C_out per tile and pays transforms ∝ C_in + C_out per tile; its
    products are 16 or 36 GEMMs whose column count is the number of tiles P, which run far below the
    machine's rate when P or C is small; and its transforms are only fast when their loops fill
    vector registers. So, when a Winograd tier applies, with C = min(C_in, C_out):

    1. many small maps (at least 8, at most 16 wide: both tiers' transforms then loop over the maps,
       ``maps_inner`` here and in ``_winograd43``): on maps at least 8 × 8, "winograd4" for C ≥ 64,
       or C ≥ 32 with N·T_h·T_w ≥ 128 F(4×4) tiles; else "winograd" for C ≥ 64 on at least 16 maps;
       "winograd4" for C ≥ 64 with P₄ ≥ 150, where P₄ = N·T_h·(T_w + 1) counts the tiles of
       F(4×4, 3×3); "winograd" from C ≥ 128;
    2. otherwise (wider maps) "winograd4" for C ≥ 128 and P₄ ≥ 200, or C ≥ 32 and P₄ ≥ 240;
    3. otherwise "winograd" (tile rows) for C ≥ 256 on maps at least 12 × 12 (fewer, larger F(2×2)
       tiles: their GEMMs stay wide enough);
    4. "im2col" everywhere else.

    Chosen from a sweep of forward + backward times against "im2col" (float32, 2 threads, one layer
    at a time, the methods alternated; the ratios are time / im2col's time, lower is better), rerun
    after the backward shared dout's transform (both tiers gained): case 1 took 0.62 (57 RoIs × 64 ×
    14²), 0.66–0.77 on 16–32 such RoIs, 0.62 on 16 × 128 × 8²; on 8 maps F(4×4) 0.74 on 64 × 16², and
    F(2×2) 0.78–0.81 on 128 × 8² and 4², but 0.91–1.02 on 64 channels (im2col kept). Since F(4×4)
    also orders its tiles (i, j, n) on such maps (ms, forward + backward, against the best other
    method): 57 RoIs × 64 × 14² 13.0 (F(2×2) 14.8), 16 RoIs 6.6 (9.0), 8 × 64 × 16² 4.7 (im2col
    6.1), 8 × 64 × 8² 1.6 (2.0), 8 × 128 × 8² 4.5 (F(2×2) 4.7), 8 × 256 × 8² 14.0 (16.8), 8 × 32 × 16²
    1.5 (1.9); not on 8 × 64 × 4² (1.0, im2col 0.8) nor 8 × 32 × 8² (0.83, im2col 0.80). Case 2 0.54 on
    ResNet-50's 128 × 50 × 76, 0.43–0.58 on 2–8 maps of 64 × 28² to 64², 0.72–0.85 on 8 maps of 32
    channels of 20² to 32² (P₄ 240–576), 0.92 on 4 × 32 × 32² (P₄ = 288), and lost 0.98 on 8 × 32 × 16²
    (P₄ = 96); case 3 0.60 and 0.64 on 512 and 256 channels of 25 × 38, 0.76 on 256 × 13 × 19; 256 ×
    7 × 10 kept im2col (0.85 with its backward, but 1.12 alone, as in inference).
    ``minimaskrcnn bench conv`` times the two benchmark shapes."""
    if not applies(w_shape, geometry):
        return "im2col"
    channels = min(w_shape[0], w_shape[1])
    hout, wout = geometry[6], geometry[7]
    tiles4 = n_maps * -(-hout // 4) * (-(-wout // 4) + 1)
    if maps_inner(n_maps, -(-wout // 2)):  # 1.
        if min(hout, wout) >= 8 and (channels >= 64 or n_maps * -(-hout // 4) * -(-wout // 4) >= 128):
            if channels >= 32:
                return "winograd4"
        if channels >= 64 and n_maps >= 16:
            return "winograd"
        if channels >= 64 and tiles4 >= 150:
            return "winograd4"
        return "winograd" if channels >= 128 else "im2col"
    if (channels >= 128 and tiles4 >= 200) or (channels >= 32 and tiles4 >= 240):  # 2.
        return "winograd4"
    if channels >= 256 and min(hout, wout) >= 12:  # 3.
        return "winograd"
    return "im2col"  # 4.


def maps_inner(n_maps: int, tw: int) -> bool:
    """Whether the transforms order the tiles (i, j, n), every loop running over the maps, rather
    than (n, i, j), every loop running along a tile row: for at least 8 maps with tile rows of at
    most 8 tiles (maps at most 16 wide), which are too short to fill a vector register."""
    return tw <= 8 and n_maps >= 8


def tile_grid(h: int, w: int, padding, block: int = 2) -> tuple[int, int, int, int]:
    """Output size and tile counts of a stride-1 3×3 convolution of an h × w map with ``padding``:
    (H', W', T_h, T_w) with H' = h + 2·ph − 2 and T_h = ceil(H' / m) m×m output blocks (W likewise),
    m = ``block`` (2 here, 4 for F(4×4, 3×3))."""
    ph, pw = padding
    hout, wout = h + 2 * ph - 2, w + 2 * pw - 2
    return hout, wout, -(-hout // block), -(-wout // block)


def _input_transform(tiles: np.ndarray) -> np.ndarray:
    """V = Bᵀ d B for tiles (..., 4, 4): rows, then columns, as the additions Bᵀ's 0 / ±1 entries say."""
    d0, d1, d2, d3 = tiles[..., 0, :], tiles[..., 1, :], tiles[..., 2, :], tiles[..., 3, :]
    rows = np.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], axis=-2)  # Bᵀ d
    c0, c1, c2, c3 = rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3]
    return np.stack([c0 - c2, c1 + c2, c2 - c1, c1 - c3], axis=-1)  # (Bᵀ d) B


def _output_transform(m: np.ndarray) -> np.ndarray:
    """Y = Aᵀ M A for m (..., 4, 4) -> (..., 2, 2)."""
    m0, m1, m2, m3 = m[..., 0, :], m[..., 1, :], m[..., 2, :], m[..., 3, :]
    rows = np.stack([m0 + m1 + m2, m1 - m2 - m3], axis=-2)  # Aᵀ M, (..., 2, 4)
    c0, c1, c2, c3 = rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3]
    return np.stack([c0 + c1 + c2, c1 - c2 - c3], axis=-1)  # (Aᵀ M) A


def filter_transform(w: np.ndarray) -> np.ndarray:
    """U = G g Gᵀ for every filter g = w[k, c]: (K, C, 3, 3) -> (16, K, C), position ξ·4 + ν first."""
    u = np.empty((16,) + w.shape[:2], w.dtype)
    sized(_filter_transform_kernel, u.size)(np.ascontiguousarray(w), u)
    return u


def _filter_transform_reference(w: np.ndarray, g_matrix: np.ndarray = G) -> np.ndarray:
    """``filter_transform`` as the matrix formula: G g Gᵀ for every (k, c), (α², K, C) for a G of
    shape (α, 3) (this module's, or F(4×4, 3×3)'s)."""
    u = np.einsum("ai,kcij,bj->abkc", g_matrix, w.astype(np.float64), g_matrix)
    return u.reshape((g_matrix.shape[0] ** 2,) + w.shape[:2]).astype(w.dtype)


@njit(cache=True, parallel=True)
def _filter_transform_kernel(w, u):
    """u[4ξ + ν, k, c] = (G g Gᵀ)[ξ, ν] for g = w[k, c]: G's rows are g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2."""
    k_out, c_in = w.shape[:2]
    for k in prange(k_out):
        t = np.empty((4, 3), w.dtype)
        for c in range(c_in):
            for q in range(3):  # t = G g
                g0, g1, g2 = w[k, c, 0, q], w[k, c, 1, q], w[k, c, 2, q]
                t[0, q] = g0
                t[1, q] = 0.5 * (g0 + g1 + g2)
                t[2, q] = 0.5 * (g0 - g1 + g2)
                t[3, q] = g2
            for a in range(4):  # U = t Gᵀ
                g0, g1, g2 = t[a, 0], t[a, 1], t[a, 2]
                u[4 * a + 0, k, c] = g0
                u[4 * a + 1, k, c] = 0.5 * (g0 + g1 + g2)
                u[4 * a + 2, k, c] = 0.5 * (g0 - g1 + g2)
                u[4 * a + 3, k, c] = g2


# The 1-D steps every transform is made of, each for many tiles at once (element-wise over arrays of
# equal length, so the loops vectorize); inlined into the kernels below.


@njit(cache=True, inline="always")
def _b_t_step(d0, d1, d2, d3, o0, o1, o2, o3):
    """Bᵀ along one axis of the tiles: (o0, o1, o2, o3) = (d0 − d2, d1 + d2, d2 − d1, d1 − d3)."""
    for q in range(o0.shape[0]):
        o0[q] = d0[q] - d2[q]
    for q in range(o0.shape[0]):
        o1[q] = d1[q] + d2[q]
    for q in range(o0.shape[0]):
        o2[q] = d2[q] - d1[q]
    for q in range(o0.shape[0]):
        o3[q] = d1[q] - d3[q]


@njit(cache=True, inline="always")
def _a_t_step(m0, m1, m2, m3, a, b, bias):
    """Aᵀ along one axis, plus ``bias``: a = m0 + m1 + m2 + bias, b = m1 − m2 − m3 + bias."""
    for q in range(a.shape[0]):
        a[q] = m0[q] + m1[q] + m2[q] + bias
    for q in range(a.shape[0]):
        b[q] = m1[q] - m2[q] - m3[q] + bias


@njit(cache=True, inline="always")
def _a_step(a, b, d0, d1, d2, d3):
    """A along one axis (the adjoint of Aᵀ): (d0, d1, d2, d3) = (a, a + b, a − b, −b)."""
    for q in range(a.shape[0]):
        d0[q] = a[q]
    for q in range(a.shape[0]):
        d1[q] = a[q] + b[q]
    for q in range(a.shape[0]):
        d2[q] = a[q] - b[q]
    for q in range(a.shape[0]):
        d3[q] = -b[q]


@njit(cache=True, inline="always")
def _b_step(v0, v1, v2, v3, o0, o1, o2, o3):
    """B along one axis (the adjoint of Bᵀ): (o0, o1, o2, o3) = (v0, v1 − v2 + v3, v1 + v2 − v0, −v3)."""
    for q in range(o0.shape[0]):
        o0[q] = v0[q]
    for q in range(o0.shape[0]):
        o1[q] = v1[q] - v2[q] + v3[q]
    for q in range(o0.shape[0]):
        o2[q] = v1[q] + v2[q] - v0[q]
    for q in range(o0.shape[0]):
        o3[q] = -v3[q]


@njit(cache=True, inline="always")
def _b_step_add(v0, v1, v2, v3, o0, o1, o2, o3):
    """``_b_step`` added into (o0, o1, o2, o3): the windows of neighbouring tiles overlap, so their
    contributions to a pixel sum. One loop per output, so o0 and o2 may be overlapping views."""
    for q in range(o0.shape[0]):
        o0[q] += v0[q]
    for q in range(o0.shape[0]):
        o1[q] += v1[q] - v2[q] + v3[q]
    for q in range(o0.shape[0]):
        o2[q] += v1[q] + v2[q] - v0[q]
    for q in range(o0.shape[0]):
        o3[q] -= v3[q]


@njit(cache=True, inline="always")
def _padded_row_halves(x, n, c, yy, pw, ev, od):
    """Row yy of x[n, c] with pw zeros on the left and zeros to the end, split into its even and odd
    columns: ev[j] = x_pad[yy, 2j], od[j] = x_pad[yy, 2j + 1] (a row outside x is all zeros). Tile j
    of a tile row reads columns 2j .. 2j + 3 = ev[j], od[j], ev[j + 1], od[j + 1]: unit strides."""
    w = x.shape[3]
    ev[:] = 0.0
    od[:] = 0.0
    if 0 <= yy < x.shape[2]:
        for col in range(w):
            q = col + pw
            if q % 2 == 0:
                ev[q // 2] = x[n, c, yy, col]
            else:
                od[q // 2] = x[n, c, yy, col]


@njit(cache=True, parallel=True)
def _input_transform_kernel(x, v, ph, pw, th, tw):
    """V[(ξ, ν), c, (n, i, j)] = (Bᵀ d B)[ξ, ν] for the 4×4 tile d at (2i − ph, 2j − pw) of x[n, c]
    (reads outside x are the zero padding); v (16, C, N·Th·Tw). One task per (n, c); a tile row of Tw
    tiles at a time, every loop over the Tw tiles of the row (unit strides, so they vectorize):

    1. the four input rows 2i − ph .. 2i − ph + 3, zero padded, split into even / odd columns;
    2. d B for each row u: e[u, ν] over the tiles (B's columns: d0 − d2, d1 + d2, d2 − d1, d1 − d3);
    3. Bᵀ (d B): V[ξ, ν] = e[0] − e[2], e[1] + e[2], e[2] − e[1], e[1] − e[3], written into v."""
    n_batch, c_in = x.shape[:2]
    for task in prange(n_batch * c_in):
        n, c = task // c_in, task % c_in
        ev = np.empty((4, tw + 1), x.dtype)
        od = np.empty((4, tw + 1), x.dtype)
        e = np.empty((4, 4, tw), x.dtype)
        for i in range(th):
            for u in range(4):  # 1.
                _padded_row_halves(x, n, c, 2 * i - ph + u, pw, ev[u], od[u])
            for u in range(4):  # 2. tile j reads columns 2j .. 2j + 3 = ev[j], od[j], ev[j + 1], od[j + 1]
                a, b = ev[u], od[u]
                _b_t_step(a[:tw], b[:tw], a[1:], b[1:], e[u, 0], e[u, 1], e[u, 2], e[u, 3])
            p0 = (n * th + i) * tw
            for nu in range(4):  # 3.
                _b_t_step(e[0, nu], e[1, nu], e[2, nu], e[3, nu],
                          v[nu, c, p0:p0 + tw], v[4 + nu, c, p0:p0 + tw],
                          v[8 + nu, c, p0:p0 + tw], v[12 + nu, c, p0:p0 + tw])


@njit(cache=True, parallel=True)
def _output_transform_kernel(m, bias, out, th, tw):
    """out[n, k, 2i:2i+2, 2j:2j+2] = (Aᵀ M A) + bias[k] for M = m[:, k, (n, i, j)] reshaped (4, 4),
    cropped to out's size; m (16, K, N·Th·Tw), bias (K,) or empty. One task per (n, k), a tile row at
    a time, every loop over the row's Tw tiles:

    1. Aᵀ M: r[0, ν] = M[0, ν] + M[1, ν] + M[2, ν], r[1, ν] = M[1, ν] − M[2, ν] − M[3, ν];
    2. (Aᵀ M) A: the even output columns r[u, 0] + r[u, 1] + r[u, 2], the odd r[u, 1] − r[u, 2] − r[u, 3];
    3. both interleaved into output rows 2i and 2i + 1 (those inside the output), plus the bias."""
    n_batch, k_out, hout, wout = out.shape
    for task in prange(n_batch * k_out):
        n, k = task // k_out, task % k_out
        r = np.empty((2, 4, tw), m.dtype)
        ye = np.empty(tw, m.dtype)
        yo = np.empty(tw, m.dtype)
        bk = m.dtype.type(bias[k] if bias.size else 0.0)  # in m's dtype (no float64 promotion)
        for i in range(th):
            p0 = (n * th + i) * tw
            for nu in range(4):  # 1.
                _a_t_step(m[nu, k, p0:p0 + tw], m[4 + nu, k, p0:p0 + tw], m[8 + nu, k, p0:p0 + tw],
                          m[12 + nu, k, p0:p0 + tw], r[0, nu], r[1, nu], m.dtype.type(0.0))
            for u in range(2):
                y = 2 * i + u
                if y >= hout:
                    continue
                _a_t_step(r[u, 0], r[u, 1], r[u, 2], r[u, 3], ye, yo, bk)  # 2.
                row = out[n, k, y]
                for j in range(wout // 2):  # 3.
                    row[2 * j] = ye[j]
                    row[2 * j + 1] = yo[j]
                if wout % 2:
                    row[wout - 1] = ye[wout // 2]


@njit(cache=True, parallel=True)
def _output_transform_adjoint_kernel(dout, dm, th, tw):
    """The adjoint of the output transform, for the filter gradient: dM = A dY Aᵀ for the 2×2 block
    dY = dout[n, k, 2i:2i+2, 2j:2j+2] of every tile (zeros beyond the output), into dm (16, K, N·Th·Tw).
    Aᵀ's columns are (1, 0), (1, 1), (1, −1), (0, −1), so along each axis the four values are
    dY0, dY0 + dY1, dY0 − dY1, −dY1. One task per (n, k), a tile row at a time:

    1. the two output rows, split into even / odd columns (zeros past the output);
    2. along the columns: f[u, ν] = ye, ye + yo, ye − yo, −yo for each row u;
    3. along the rows: dM[ξ, ν] = f[0, ν], f[0, ν] + f[1, ν], f[0, ν] − f[1, ν], −f[1, ν]."""
    n_batch, k_out, hout, wout = dout.shape
    for task in prange(n_batch * k_out):
        n, k = task // k_out, task % k_out
        ye = np.empty((2, tw), dout.dtype)
        yo = np.empty((2, tw), dout.dtype)
        f = np.empty((2, 4, tw), dout.dtype)
        for i in range(th):
            ye[:, :] = 0.0
            yo[:, :] = 0.0
            for u in range(2):  # 1.
                y = 2 * i + u
                if y < hout:
                    row = dout[n, k, y]
                    for j in range(wout // 2):
                        ye[u, j] = row[2 * j]
                        yo[u, j] = row[2 * j + 1]
                    if wout % 2:
                        ye[u, wout // 2] = row[wout - 1]
            for u in range(2):  # 2.
                _a_step(ye[u], yo[u], f[u, 0], f[u, 1], f[u, 2], f[u, 3])
            p0 = (n * th + i) * tw
            for nu in range(4):  # 3.
                _a_step(f[0, nu], f[1, nu], dm[nu, k, p0:p0 + tw], dm[4 + nu, k, p0:p0 + tw],
                        dm[8 + nu, k, p0:p0 + tw], dm[12 + nu, k, p0:p0 + tw])


@njit(cache=True, parallel=True)
def _input_transform_adjoint_kernel(dv, dx, ph, pw, th, tw):
    """The adjoint of ``_input_transform_kernel``, for the input gradient: dx[n, c] is the sum over
    tiles of B dV Bᵀ (4×4) placed at the tile's window (2i − ph, 2j − pw), the padding's share dropped;
    dv (16, C, N·Th·Tw), tiles ordered (n, i, j). One task per (n, c), a tile row at a time:

    1. B along the rows: g[u, ν] = dV[0, ν], dV[1, ν] − dV[2, ν] + dV[3, ν], dV[1, ν] + dV[2, ν] −
       dV[0, ν], −dV[3, ν], every loop over the row's Tw tiles;
    2. B along the columns, added into the padded map held as its even and odd columns (tile j
       covers ev[j], od[j], ev[j + 1], od[j + 1]; neighbouring windows overlap, so they sum);
    3. the map, less the padding, interleaved into dx[n, c]."""
    n_batch, c_in, height, width = dx.shape
    for task in prange(n_batch * c_in):
        n, c = task // c_in, task % c_in
        ev = np.zeros((2 * th + 2, tw + 1), dv.dtype)
        od = np.zeros((2 * th + 2, tw + 1), dv.dtype)
        g = np.empty((4, 4, tw), dv.dtype)
        for i in range(th):
            p0 = (n * th + i) * tw
            for nu in range(4):  # 1.
                _b_step(dv[nu, c, p0:p0 + tw], dv[4 + nu, c, p0:p0 + tw], dv[8 + nu, c, p0:p0 + tw],
                        dv[12 + nu, c, p0:p0 + tw], g[0, nu], g[1, nu], g[2, nu], g[3, nu])
            for u in range(4):  # 2.
                a, b = ev[2 * i + u], od[2 * i + u]
                _b_step_add(g[u, 0], g[u, 1], g[u, 2], g[u, 3], a[:tw], b[:tw], a[1:], b[1:])
        for y in range(height):  # 3.
            for col in range(width):
                q = col + pw
                dx[n, c, y, col] = ev[y + ph, q // 2] if q % 2 == 0 else od[y + ph, q // 2]


# ---- the same three transforms with the tiles ordered (i, j, n): for many small maps ----------------
#
# A 14×14 RoI has tile rows of 7 tiles: too short for the loops above to fill a vector register.
# With many maps (RoIs, batches), these kernels instead order the P tiles as p = (i·Tw + j)·N + n and
# run every loop over the N maps: each task (a channel) first copies its N planes into a local
# (rows, columns, N) buffer, zero padded, so that the N values of one pixel lie side by side. The 16
# products do not care in which order the tiles come, as long as V, M and dM agree.
#
# Each tile is then transformed in one pass over the maps, its 16 values held in registers (the
# compiler vectorizes the pass over n): the same additions, in the same order, as the 1-D steps
# above (``_b_t_step`` etc.), which the first version ran as 8 short passes per tile through small
# scratch arrays. The buffers are indexed directly (buf[i, j, n]), not through row views, which kept
# the compiler from vectorizing. Measured on a shapes mask head (57 RoIs × 64 channels of 14×14,
# float32, 2 threads, calls alternated with the first version's): the four kernels 4.1 → 2.8 ms
# together, the input transform 1.30 → 0.75 ms; results bit for bit the same.


# The maps-inner kernels of both tiers (here and in ``_winograd43``) share their data movement: a
# channel of every map into a pixel-major (rows, columns, N) buffer and back, and the input
# gradient's overlapping blocks summed per pixel.


@njit(cache=True, inline="always")
def _maps_to_buffer(src, c, ph, pw, buf):
    """buf[y + ph, x + pw, n] = src[n, c, y, x]: channel c of every map into a (rows, columns, N)
    buffer, maps innermost, offset by the padding (the rest of buf is left as it is)."""
    n_batch, _, height, width = src.shape
    for n in range(n_batch):
        for y in range(height):
            for col in range(width):
                buf[y + ph, col + pw, n] = src[n, c, y, col]


@njit(cache=True, inline="always")
def _buffer_to_maps(buf, dst, c):
    """dst[n, c, y, x] = buf[y, x, n] for all of dst's maps (``_maps_to_buffer`` reversed, cropped)."""
    n_batch, _, height, width = dst.shape
    for n in range(n_batch):
        for y in range(height):
            for col in range(width):
                dst[n, c, y, col] = buf[y, col, n]


@njit(cache=True, inline="always")
def _sum_tile_blocks(t, step, ph, pw, acc):
    """acc[y, x, n] = Σ t[i, j, yy − step·i, xx − step·j, n] over the tiles (i, j) whose α×α windows
    (one every ``step`` pixels) cover the padded pixel (yy, xx) = (y + ph, x + pw), tile after tile
    in (i, j) order, from zero: the input gradient's blocks t (T_h, T_w, α, α, N), written apart,
    summed where the windows overlap; acc (H, W, N). Adding each block into its window at once does
    not vectorize (the compiler cannot rule out that two of the adds meet)."""
    th, tw, alpha = t.shape[0], t.shape[1], t.shape[2]
    height, width, n_batch = acc.shape
    for y in range(height):
        yy = y + ph
        i_lo, i_hi = max(0, (yy - alpha + step) // step), min(th - 1, yy // step)
        for col in range(width):
            xx = col + pw
            j_lo, j_hi = max(0, (xx - alpha + step) // step), min(tw - 1, xx // step)
            for n in range(n_batch):
                acc[y, col, n] = 0
            for i in range(i_lo, i_hi + 1):
                for j in range(j_lo, j_hi + 1):
                    for n in range(n_batch):
                        acc[y, col, n] += t[i, j, yy - step * i, xx - step * j, n]


@njit(cache=True, parallel=True)
def _input_transform_maps_inner_kernel(x, v, ph, pw, th, tw):
    """``_input_transform_kernel`` with the tiles ordered (i, j, n): v[(ξ, ν), c, (i·Tw + j)·N + n].
    One task per channel c:

    1. x[:, c] into a zero-padded (2·Th + 2, 2·Tw + 2, N) buffer (pixel-major, maps innermost);
    2. for each tile and map n, d B along its four rows: e[u, ν] = (d_u0 − d_u2, d_u1 + d_u2,
       d_u2 − d_u1, d_u1 − d_u3);
    3. Bᵀ (d B) along its columns, into v: (e_0ν − e_2ν, e_1ν + e_2ν, e_2ν − e_1ν, e_1ν − e_3ν)."""
    n_batch, c_in, height, width = x.shape
    for c in prange(c_in):
        buf = np.zeros((2 * th + 2, 2 * tw + 2, n_batch), x.dtype)
        _maps_to_buffer(x, c, ph, pw, buf)  # 1.
        for i in range(th):
            i0, i1, i2, i3 = 2 * i, 2 * i + 1, 2 * i + 2, 2 * i + 3
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                j0, j1, j2, j3 = 2 * j, 2 * j + 1, 2 * j + 2, 2 * j + 3
                for n in range(n_batch):
                    e00, e01 = buf[i0, j0, n] - buf[i0, j2, n], buf[i0, j1, n] + buf[i0, j2, n]  # 2.
                    e02, e03 = buf[i0, j2, n] - buf[i0, j1, n], buf[i0, j1, n] - buf[i0, j3, n]
                    e10, e11 = buf[i1, j0, n] - buf[i1, j2, n], buf[i1, j1, n] + buf[i1, j2, n]
                    e12, e13 = buf[i1, j2, n] - buf[i1, j1, n], buf[i1, j1, n] - buf[i1, j3, n]
                    e20, e21 = buf[i2, j0, n] - buf[i2, j2, n], buf[i2, j1, n] + buf[i2, j2, n]
                    e22, e23 = buf[i2, j2, n] - buf[i2, j1, n], buf[i2, j1, n] - buf[i2, j3, n]
                    e30, e31 = buf[i3, j0, n] - buf[i3, j2, n], buf[i3, j1, n] + buf[i3, j2, n]
                    e32, e33 = buf[i3, j2, n] - buf[i3, j1, n], buf[i3, j1, n] - buf[i3, j3, n]
                    q = p0 + n  # 3.
                    v[0, c, q], v[4, c, q] = e00 - e20, e10 + e20
                    v[8, c, q], v[12, c, q] = e20 - e10, e10 - e30
                    v[1, c, q], v[5, c, q] = e01 - e21, e11 + e21
                    v[9, c, q], v[13, c, q] = e21 - e11, e11 - e31
                    v[2, c, q], v[6, c, q] = e02 - e22, e12 + e22
                    v[10, c, q], v[14, c, q] = e22 - e12, e12 - e32
                    v[3, c, q], v[7, c, q] = e03 - e23, e13 + e23
                    v[11, c, q], v[15, c, q] = e23 - e13, e13 - e33


@njit(cache=True, parallel=True)
def _output_transform_maps_inner_kernel(m, bias, out, th, tw):
    """``_output_transform_kernel`` for m (16, K, P) with the tiles ordered (i, j, n). One task per
    output channel k:

    1. for each tile and map n, Aᵀ M along its columns: r[u, ν], (m_0ν + m_1ν + m_2ν, m_1ν − m_2ν − m_3ν)
       (each plus a float zero, as ``_a_t_step``);
    2. (Aᵀ M) A along its rows plus the bias, into a (2·Th, 2·Tw, N) buffer;
    3. the buffer, cropped to H' × W', copied into out[:, k]."""
    n_batch, k_out, hout, wout = out.shape
    zero = m.dtype.type(0.0)
    for k in prange(k_out):
        buf = np.empty((2 * th, 2 * tw, n_batch), m.dtype)
        bk = m.dtype.type(bias[k] if bias.size else 0.0)  # in m's dtype (no float64 promotion)
        for i in range(th):
            i0, i1 = 2 * i, 2 * i + 1
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                j0, j1 = 2 * j, 2 * j + 1
                for n in range(n_batch):
                    q = p0 + n
                    m0, m1, m2, m3 = m[0, k, q], m[1, k, q], m[2, k, q], m[3, k, q]
                    m4, m5, m6, m7 = m[4, k, q], m[5, k, q], m[6, k, q], m[7, k, q]
                    m8, m9, m10, m11 = m[8, k, q], m[9, k, q], m[10, k, q], m[11, k, q]
                    m12, m13, m14, m15 = m[12, k, q], m[13, k, q], m[14, k, q], m[15, k, q]
                    r00, r10 = m0 + m4 + m8 + zero, m4 - m8 - m12 + zero  # 1.
                    r01, r11 = m1 + m5 + m9 + zero, m5 - m9 - m13 + zero
                    r02, r12 = m2 + m6 + m10 + zero, m6 - m10 - m14 + zero
                    r03, r13 = m3 + m7 + m11 + zero, m7 - m11 - m15 + zero
                    buf[i0, j0, n], buf[i0, j1, n] = r00 + r01 + r02 + bk, r01 - r02 - r03 + bk  # 2.
                    buf[i1, j0, n], buf[i1, j1, n] = r10 + r11 + r12 + bk, r11 - r12 - r13 + bk
        _buffer_to_maps(buf, out, k)  # 3.


@njit(cache=True, parallel=True)
def _output_transform_adjoint_maps_inner_kernel(dout, dm, th, tw):
    """``_output_transform_adjoint_kernel`` into dm (16, K, P) with the tiles ordered (i, j, n). One
    task per output channel k:

    1. dout[:, k] into a zero-padded (2·Th, 2·Tw, N) buffer;
    2. for each tile and map n, along its rows: f[u, ν] = ye, ye + yo, ye − yo, −yo for its two rows u;
    3. along its columns, dM[ξ, ν] = f[0, ν], f[0, ν] + f[1, ν], f[0, ν] − f[1, ν], −f[1, ν], into dm."""
    n_batch, k_out, hout, wout = dout.shape
    for k in prange(k_out):
        buf = np.zeros((2 * th, 2 * tw, n_batch), dout.dtype)
        _maps_to_buffer(dout, k, 0, 0, buf)  # 1.
        for i in range(th):
            i0, i1 = 2 * i, 2 * i + 1
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                j0, j1 = 2 * j, 2 * j + 1
                for n in range(n_batch):
                    a0, o0, a1, o1 = buf[i0, j0, n], buf[i0, j1, n], buf[i1, j0, n], buf[i1, j1, n]
                    f00, f01, f02, f03 = a0, a0 + o0, a0 - o0, -o0  # 2.
                    f10, f11, f12, f13 = a1, a1 + o1, a1 - o1, -o1
                    q = p0 + n  # 3.
                    dm[0, k, q], dm[4, k, q], dm[8, k, q], dm[12, k, q] = f00, f00 + f10, f00 - f10, -f10
                    dm[1, k, q], dm[5, k, q], dm[9, k, q], dm[13, k, q] = f01, f01 + f11, f01 - f11, -f11
                    dm[2, k, q], dm[6, k, q], dm[10, k, q], dm[14, k, q] = f02, f02 + f12, f02 - f12, -f12
                    dm[3, k, q], dm[7, k, q], dm[11, k, q], dm[15, k, q] = f03, f03 + f13, f03 - f13, -f13


@njit(cache=True, parallel=True)
def _input_transform_adjoint_maps_inner_kernel(dv, dx, ph, pw, th, tw):
    """``_input_transform_adjoint_kernel`` for dv (16, C, P) with the tiles ordered (i, j, n). One task
    per input channel c:

    1. for each tile and map n, B along the columns of its dV: g[u, ν] = (v_0ν, v_1ν − v_2ν + v_3ν,
       v_1ν + v_2ν − v_0ν, −v_3ν) for the tile's rows u;
    2. B along its rows: the tile's 4×4 block B dV Bᵀ, row u = (g_u0, g_u1 − g_u2 + g_u3,
       g_u1 + g_u2 − g_u0, −g_u3), into t[i, j] (tiles apart: no overlap yet);
    3. each pixel of x's (padded) map sums the blocks of the (up to 2×2) tiles whose 4×4 windows
       cover it (``_sum_tile_blocks``; the windows overlap by two pixels);
    4. those sums copied into dx[:, c].

    Step 2 writes each block apart and step 3 sums them, rather than adding each block into its
    window at once, which does not vectorize: that version ran about 2× slower."""
    n_batch, c_in, height, width = dx.shape
    for c in prange(c_in):
        t = np.empty((th, tw, 4, 4, n_batch), dv.dtype)
        acc = np.empty((height, width, n_batch), dv.dtype)
        for i in range(th):
            for j in range(tw):
                p0 = (i * tw + j) * n_batch
                for n in range(n_batch):
                    q = p0 + n
                    v00, v01, v02, v03 = dv[0, c, q], dv[1, c, q], dv[2, c, q], dv[3, c, q]
                    v10, v11, v12, v13 = dv[4, c, q], dv[5, c, q], dv[6, c, q], dv[7, c, q]
                    v20, v21, v22, v23 = dv[8, c, q], dv[9, c, q], dv[10, c, q], dv[11, c, q]
                    v30, v31, v32, v33 = dv[12, c, q], dv[13, c, q], dv[14, c, q], dv[15, c, q]
                    g00, g01, g02, g03 = v00, v01, v02, v03  # 1.
                    g10, g11 = v10 - v20 + v30, v11 - v21 + v31
                    g12, g13 = v12 - v22 + v32, v13 - v23 + v33
                    g20, g21 = v10 + v20 - v00, v11 + v21 - v01
                    g22, g23 = v12 + v22 - v02, v13 + v23 - v03
                    g30, g31, g32, g33 = -v30, -v31, -v32, -v33
                    t[i, j, 0, 0, n], t[i, j, 0, 1, n] = g00, g01 - g02 + g03  # 2.
                    t[i, j, 0, 2, n], t[i, j, 0, 3, n] = g01 + g02 - g00, -g03
                    t[i, j, 1, 0, n], t[i, j, 1, 1, n] = g10, g11 - g12 + g13
                    t[i, j, 1, 2, n], t[i, j, 1, 3, n] = g11 + g12 - g10, -g13
                    t[i, j, 2, 0, n], t[i, j, 2, 1, n] = g20, g21 - g22 + g23
                    t[i, j, 2, 2, n], t[i, j, 2, 3, n] = g21 + g22 - g20, -g23
                    t[i, j, 3, 0, n], t[i, j, 3, 1, n] = g30, g31 - g32 + g33
                    t[i, j, 3, 2, n], t[i, j, 3, 3, n] = g31 + g32 - g30, -g33
        _sum_tile_blocks(t, 2, ph, pw, acc)  # 3.
        _buffer_to_maps(acc, dx, c)  # 4.


@njit(cache=True, parallel=True)
def _filter_transform_adjoint_kernel(du, dw):
    """dg = Gᵀ dU G for every (k, c): du (16, K, C) → dw (K, C, 3, 3), the adjoint of U = G g Gᵀ.
    Gᵀ's rows are (1, ½, ½, 0), (0, ½, −½, 0), (0, ½, ½, 1)."""
    k_out, c_in = dw.shape[:2]
    for k in prange(k_out):
        t = np.empty((3, 4), dw.dtype)
        for c in range(c_in):
            for nu in range(4):  # t = Gᵀ dU (over ξ)
                u0, u1, u2, u3 = du[nu, k, c], du[4 + nu, k, c], du[8 + nu, k, c], du[12 + nu, k, c]
                t[0, nu] = u0 + 0.5 * (u1 + u2)
                t[1, nu] = 0.5 * (u1 - u2)
                t[2, nu] = 0.5 * (u1 + u2) + u3
            for a in range(3):  # dg = t G (over ν)
                u0, u1, u2, u3 = t[a, 0], t[a, 1], t[a, 2], t[a, 3]
                dw[k, c, a, 0] = u0 + 0.5 * (u1 + u2)
                dw[k, c, a, 1] = 0.5 * (u1 - u2)
                dw[k, c, a, 2] = 0.5 * (u1 + u2) + u3


# V is 4× the input maps; the forward keeps it for the backward's filter gradient (instead of
# recomputing it there) when it is at most this large: a shapes mask head's 57–64 RoIs × 64 channels
# give 11–13 MB per layer (recomputing it is 0.8 ms of a 13.4 ms layer). Larger ones are recomputed:
# the ResNet-50 fine-tuning step (``minimaskrcnn bench finetune``) held 575 MiB above its resident set
# at its peak keeping none, 671 MiB with this limit, 709 MiB with 32 MiB.
KEEP_V_BYTES = 16 << 20

# U = G g Gᵀ, (16 or 36, K, C), is computed from the filters by the forward and again by the backward
# for dx (dV = Uᵀ dM); ``conv2d_forward`` keeps the forward's for the backward when it is at most this
# large: every layer of the shapes model (at most 128 × 128 channels by F(2×2): 1 MiB; 12 filter
# transforms less a training step), none of ResNet-50's F(4×4) layers (128 × 128 and wider: 2.4–38 MB
# each, which its fine-tuning step would hold at its memory peak).
KEEP_U_BYTES = 1 << 20


def _transformed_input(x: np.ndarray, ph: int, pw: int, th: int, tw: int, inner: bool,
                       keep: bool = False) -> np.ndarray:
    """V = Bᵀ d B for every tile and channel of x (contiguous), (16, C, N·Th·Tw), with the tiles in
    the order ``inner`` says (``maps_inner``): a fresh array if ``keep``, else a reused scratch buffer
    (no page faults; overwritten by the next call)."""
    from minimaskrcnn.nn._conv import _workspace  # scratch reused across calls (no page faults)

    shape = (16, x.shape[1], x.shape[0] * th * tw)
    v = np.empty(shape, x.dtype) if keep else _workspace("winograd_v", shape, x.dtype)
    kernel = _input_transform_maps_inner_kernel if inner else _input_transform_kernel
    sized(kernel, v.size)(x, v, ph, pw, th, tw)
    return v


def winograd_forward(x: np.ndarray, w: np.ndarray, b, padding, keep_v: bool = False, u=None):
    """Stride-1 3×3 cross-correlation by F(2×2, 3×3) with Numba transforms: the steps of
    ``winograd_conv3x3_numpy``, with the input transform written straight into the (16, C, P) operand
    of the products and the output transform straight into the (N, K, H', W') result (no padded copy,
    no tile views, no transposes).

    Returns (out, v): v the transformed input (16, C, P) for ``winograd_backward`` when ``keep_v`` and
    it is at most ``KEEP_V_BYTES``, else None (the backward recomputes it). ``u``: the transformed
    filters ``filter_transform(w)`` when the caller has them (computed here when None)."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    ph, pw = padding
    hout, wout, th, tw = tile_grid(h, wd, padding)
    x = np.ascontiguousarray(x)
    u = filter_transform(w) if u is None else u
    from minimaskrcnn.nn._conv import _workspace  # scratch reused across calls (no page faults)

    inner = maps_inner(n, tw)
    keep = keep_v and 16 * c * n * th * tw * x.itemsize <= KEEP_V_BYTES
    v = _transformed_input(x, ph, pw, th, tw, inner, keep)
    m = _workspace("winograd_m", (16, k, n * th * tw), x.dtype)
    stacked_matmul(u, v, out=m)
    out = np.empty((n, k, hout, wout), x.dtype)
    bias = b if b is not None else np.empty(0, x.dtype)
    kernel = _output_transform_maps_inner_kernel if inner else _output_transform_kernel
    sized(kernel, m.size)(m, bias, out, th, tw)
    return out, (v if keep else None)


def winograd_conv3x3(x: np.ndarray, w: np.ndarray, b, padding) -> np.ndarray:
    """``winograd_forward``'s output alone: x (N, C, H, W), w (K, C, 3, 3), b (K,) or None, padding
    (ph, pw) -> (N, K, H + 2ph − 2, W + 2pw − 2)."""
    return winograd_forward(x, w, b, padding)[0]


def winograd_backward(x: np.ndarray, dout: np.ndarray, w: np.ndarray, padding, v=None,
                      need_dx: bool = True, need_dw: bool = True, u=None):
    """Both gradients of a stride-1 3×3 convolution by F(2×2, 3×3), sharing one transform of dout:
    (dx (N, C, H, W) or None, dW (K, C, 3, 3) or None) for x (N, C, H, W), dout (N, K, H', W') and
    w (K, C, 3, 3) (only read for dx); v the forward's transformed input, or None to recompute it;
    u the forward's transformed filters (``filter_transform(w)``), or None to recompute them.

    The forward is Y = Aᵀ M A per tile with M = Σ_c U ⊙ V, U = G g Gᵀ and V = Bᵀ d B; each step's
    adjoint, in reverse order:

    1. dM = A dY Aᵀ for every tile and output channel, (16, K, P) (the output transform's adjoint);
    2. dV = Uᵀ @ dM: 16 matrix products (C, K) @ (K, P);
    3. dx = Σ_tiles B dV Bᵀ, each placed at its tile's window (the input transform's adjoint);
    4. V as in the forward, unless given;
    5. dU = dM @ Vᵀ: 16 matrix products (K, P) @ (P, C), the sum over all tiles of all images;
    6. dW = Gᵀ dU G for every (k, c).

    dx could also be computed as the convolution of dout with the flipped filters (another forward),
    but that transforms dout a second time, as an input (16 values per tile of 4 pixels, the costliest
    of the transforms); here both gradients share dM."""
    n, c, h, wd = x.shape
    k = dout.shape[1]
    ph, pw = padding
    hout, wout, th, tw = tile_grid(h, wd, padding)
    from minimaskrcnn.nn._conv import _workspace

    x = np.ascontiguousarray(x)
    inner = maps_inner(n, tw)  # the tile order; V, dV and dM must agree with the forward's
    dm = _workspace("winograd_m", (16, k, n * th * tw), x.dtype)
    adjoint = _output_transform_adjoint_maps_inner_kernel if inner else _output_transform_adjoint_kernel
    sized(adjoint, dm.size)(np.ascontiguousarray(dout), dm, th, tw)  # 1.
    dx = dw = None
    if need_dx:
        dv = _workspace("winograd_v", (16, c, n * th * tw), x.dtype)
        u = filter_transform(w) if u is None else u
        stacked_matmul(u.transpose(0, 2, 1), dm, out=dv)  # 2.
        dx = np.empty_like(x)
        adjoint = _input_transform_adjoint_maps_inner_kernel if inner else _input_transform_adjoint_kernel
        sized(adjoint, dv.size)(dv, dx, ph, pw, th, tw)  # 3.
    if need_dw:
        if v is None:
            v = _transformed_input(x, ph, pw, th, tw, inner)  # 4.
        du = stacked_matmul(dm, v.transpose(0, 2, 1))  # 5.
        dw = np.empty((k, c, 3, 3), x.dtype)
        sized(_filter_transform_adjoint_kernel, du.size)(du, dw)  # 6.
    return dx, dw


def winograd_filter_grad(x: np.ndarray, dout: np.ndarray, padding) -> np.ndarray:
    """The filter gradient alone (``winograd_backward``'s dW, V recomputed): dW (K, C, 3, 3) for
    x (N, C, H, W) and dout (N, K, H', W'), as ``conv2d_backward``'s dW."""
    return winograd_backward(x, dout, None, padding, need_dx=False)[1]


def _winograd_filter_grad_reference(x: np.ndarray, dout: np.ndarray, padding, a_t: np.ndarray = A_T,
                                    b_t: np.ndarray = B_T, g_matrix: np.ndarray = G) -> np.ndarray:
    """``winograd_filter_grad`` as the formulas, tile by tile, in loops: dW[k, c] = Gᵀ [Σ_tiles
    (A dY Aᵀ) ⊙ (Bᵀ d B)] G with dY the tile's m×m block of dout (zeros past the output's edge).
    The matrices give the tile: F(2×2, 3×3)'s by default, F(4×4, 3×3)'s from ``_winograd43``
    (m = Aᵀ's rows, tiles of α = m + 2 pixels every m)."""
    n, c, h, wd = x.shape
    k = dout.shape[1]
    ph, pw = padding
    m, alpha = a_t.shape[0], a_t.shape[1]
    hout, wout, th, tw = tile_grid(h, wd, padding, m)
    xp = np.zeros((n, c, m * th + 2, m * tw + 2))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    dy = np.zeros((n, k, m * th, m * tw))
    dy[:, :, :hout, :wout] = dout
    du = np.zeros((k, c, alpha, alpha))
    for img in range(n):
        for i in range(th):
            for j in range(tw):
                for o in range(k):
                    dm = a_t.T @ dy[img, o, m * i:m * i + m, m * j:m * j + m] @ a_t
                    for ci in range(c):
                        d = xp[img, ci, m * i:m * i + alpha, m * j:m * j + alpha]
                        du[o, ci] += dm * (b_t @ d @ b_t.T)
    return np.einsum("ai,kcab,bj->kcij", g_matrix, du, g_matrix).astype(x.dtype)


def winograd_conv3x3_numpy(x: np.ndarray, w: np.ndarray, b, padding) -> np.ndarray:
    """Stride-1 3×3 cross-correlation by F(2×2, 3×3), as ``conv2d_forward`` (torch's conv2d).

    x (N, C, H, W), w (K, C, 3, 3), b (K,) or None, padding (ph, pw) -> (N, K, H + 2ph − 2, W + 2pw − 2).

    1. Pad x by the convolution's padding, then on the bottom / right up to whole 2×2 output blocks:
       T_h × T_w tiles with T_h = ceil(H'/2), each the 4×4 window at (2i, 2j) (overlapping by 2).
    2. U = G g Gᵀ for every filter, arranged (16, K, C).
    3. V = Bᵀ d B for every tile and channel, arranged (16, C, P) with P = N·T_h·T_w tiles.
    4. M = U @ V: 16 matrix products (K, C) @ (C, P).
    5. Y = Aᵀ M A per tile, the 2×2 blocks put back in place, cropped to H' × W', plus the bias.
    """
    n, c, h, wd = x.shape
    k = w.shape[0]
    ph, pw = padding
    hout, wout, th, tw = tile_grid(h, wd, padding)
    dtype = x.dtype
    # 1. zero padding: the convolution's own, plus what completes the last tile
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), dtype)
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    s = xp.strides
    tiles = np.lib.stride_tricks.as_strided(xp, (n, c, th, tw, 4, 4),
                                            (s[0], s[1], 2 * s[2], 2 * s[3], s[2], s[3]), writeable=False)
    # 2. filter transform U = G g Gᵀ: (K, C, 4, 4) -> (16, K, C)
    u = _filter_transform_reference(w)
    # 3. input transform V = Bᵀ d B: (N, C, Th, Tw, 4, 4) -> (16, C, N·Th·Tw)
    v = _input_transform(tiles)  # (N, C, Th, Tw, 4, 4)
    v = np.ascontiguousarray(v.transpose(4, 5, 1, 0, 2, 3)).reshape(16, c, n * th * tw)
    # 4. the 16 products, batched: (16, K, C) @ (16, C, P) -> (16, K, P)
    m = np.matmul(u, v)
    # 5. output transform and reassembly: (4, 4, K, N, Th, Tw) -> (N, K, Th, 2, Tw, 2)
    m = m.reshape(4, 4, k, n, th, tw).transpose(3, 2, 4, 5, 0, 1)  # (N, K, Th, Tw, 4, 4)
    y = _output_transform(m)  # (N, K, Th, Tw, 2, 2)
    out = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, k, 2 * th, 2 * tw)[:, :, :hout, :wout]
    out = np.ascontiguousarray(out)
    if b is not None:
        out += b.reshape(1, k, 1, 1)
    return out


def _winograd_reference(x: np.ndarray, w: np.ndarray, b, padding) -> np.ndarray:
    """The formula Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A summed over input channels, tile by tile, in loops."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    ph, pw = padding
    hout, wout, th, tw = tile_grid(h, wd, padding)
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    out = np.zeros((n, k, 2 * th, 2 * tw))
    for o in range(k):
        for ci in range(c):
            u = G @ w[o, ci] @ G.T
            for img in range(n):
                for i in range(th):
                    for j in range(tw):
                        d = xp[img, ci, 2 * i:2 * i + 4, 2 * j:2 * j + 4]
                        out[img, o, 2 * i:2 * i + 2, 2 * j:2 * j + 2] += A_T @ (u * (B_T @ d @ B_T.T)) @ A_T.T
    out = out[:, :, :hout, :wout]
    if b is not None:
        out = out + np.asarray(b).reshape(1, k, 1, 1)
    return out.astype(x.dtype)


# Serial twins for small work (``minimaskrcnn.nn._launch.sized`` picks between the two).
_filter_transform_kernel_serial = serial_twin(_filter_transform_kernel)
_input_transform_kernel_serial = serial_twin(_input_transform_kernel)
_output_transform_kernel_serial = serial_twin(_output_transform_kernel)
_output_transform_adjoint_kernel_serial = serial_twin(_output_transform_adjoint_kernel)
_input_transform_adjoint_kernel_serial = serial_twin(_input_transform_adjoint_kernel)
_input_transform_maps_inner_kernel_serial = serial_twin(_input_transform_maps_inner_kernel)
_output_transform_maps_inner_kernel_serial = serial_twin(_output_transform_maps_inner_kernel)
_output_transform_adjoint_maps_inner_kernel_serial = serial_twin(_output_transform_adjoint_maps_inner_kernel)
_input_transform_adjoint_maps_inner_kernel_serial = serial_twin(_input_transform_adjoint_maps_inner_kernel)
_filter_transform_adjoint_kernel_serial = serial_twin(_filter_transform_adjoint_kernel)
