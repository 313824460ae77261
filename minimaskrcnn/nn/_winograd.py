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

``winograd_conv3x3(x, w, b, padding)`` is the forward pass (Numba transforms around 16 BLAS products);
the input gradient of a stride-1 3×3 convolution is itself one (of dout with the flipped, transposed
filters; see ``_conv``), so the same function serves the backward pass's dx. The readable versions
beside it: ``winograd_conv3x3_numpy`` (the same steps with NumPy array operations) and
``_winograd_reference`` (the formula above, tile by tile, in loops).

Speed: the products shrink 2.25×, but the input and output transforms stream the 16-fold operands V
and M through memory. So the tier pays off with many channels (where the products dominate) and loses
with few: on one thread, forward 256 → 256 channels of 32×32 or 14×14 maps faster than "im2col", 64 → 64
channels of 64×64 slower (time them with this module's functions; the numbers depend on the machine).
It is a method to choose, not the default; a per-layer choice by channel count, and blocking the tiles
so that V and M stay in cache, are the next steps.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minimaskrcnn.nn import _conv_kernels  # noqa: F401  (sets Numba's threading layer first)

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def applies(w_shape, geometry) -> bool:
    """True when the convolution is one F(2×2, 3×3) computes: 3×3 filters, stride 1, dilation 1."""
    sh, sw, _, _, dh, dw, _, _ = geometry
    return tuple(w_shape[2:]) == (3, 3) and (sh, sw, dh, dw) == (1, 1, 1, 1)


def tile_grid(h: int, w: int, padding) -> tuple[int, int, int, int]:
    """Output size and tile counts of a stride-1 3×3 convolution of an h × w map with ``padding``:
    (H', W', T_h, T_w) with H' = h + 2·ph − 2 and T_h = ceil(H' / 2) 2×2 output blocks (W likewise)."""
    ph, pw = padding
    hout, wout = h + 2 * ph - 2, w + 2 * pw - 2
    return hout, wout, -(-hout // 2), -(-wout // 2)


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
    _filter_transform_kernel(np.ascontiguousarray(w), u)
    return u


def _filter_transform_reference(w: np.ndarray) -> np.ndarray:
    """``filter_transform`` as the matrix formula: G g Gᵀ for every (k, c)."""
    u = np.einsum("ai,kcij,bj->abkc", G, w.astype(np.float64), G)
    return u.reshape((16,) + w.shape[:2]).astype(w.dtype)


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


@njit(cache=True, parallel=True)
def _input_transform_kernel(x, v, ph, pw, th, tw):
    """V[(ξ, ν), c, (n, i, j)] = (Bᵀ d B)[ξ, ν] for the 4×4 tile d at (2i − ph, 2j − pw) of x[n, c]
    (reads outside x are the zero padding); v (16, C, N·Th·Tw). One thread per channel."""
    n_batch, c_in, h, w = x.shape
    for c in prange(c_in):
        d = np.empty((4, 4), x.dtype)
        t = np.empty((4, 4), x.dtype)
        for n in range(n_batch):
            for i in range(th):
                for j in range(tw):
                    y0, x0 = 2 * i - ph, 2 * j - pw
                    for u in range(4):
                        for q in range(4):
                            yy, xx = y0 + u, x0 + q
                            d[u, q] = x[n, c, yy, xx] if 0 <= yy < h and 0 <= xx < w else 0.0
                    for q in range(4):  # t = Bᵀ d
                        t[0, q] = d[0, q] - d[2, q]
                        t[1, q] = d[1, q] + d[2, q]
                        t[2, q] = d[2, q] - d[1, q]
                        t[3, q] = d[1, q] - d[3, q]
                    p = (n * th + i) * tw + j
                    for u in range(4):  # V = t B
                        v[4 * u + 0, c, p] = t[u, 0] - t[u, 2]
                        v[4 * u + 1, c, p] = t[u, 1] + t[u, 2]
                        v[4 * u + 2, c, p] = t[u, 2] - t[u, 1]
                        v[4 * u + 3, c, p] = t[u, 1] - t[u, 3]


@njit(cache=True, parallel=True)
def _output_transform_kernel(m, bias, out, th, tw):
    """out[n, k, 2i:2i+2, 2j:2j+2] = (Aᵀ M A) + bias[k] for M = m[:, k, (n, i, j)] reshaped (4, 4),
    cropped to out's size; m (16, K, N·Th·Tw), bias (K,) or empty. One thread per output channel."""
    n_batch, k_out, hout, wout = out.shape
    for k in prange(k_out):
        r = np.empty((2, 4), m.dtype)
        bk = bias[k] if bias.size else 0.0
        for n in range(n_batch):
            for i in range(th):
                for j in range(tw):
                    p = (n * th + i) * tw + j
                    for q in range(4):  # r = Aᵀ M
                        r[0, q] = m[q, k, p] + m[4 + q, k, p] + m[8 + q, k, p]
                        r[1, q] = m[4 + q, k, p] - m[8 + q, k, p] - m[12 + q, k, p]
                    for u in range(2):  # Y = r A
                        y = 2 * i + u
                        if y >= hout:
                            continue
                        x0 = 2 * j
                        out[n, k, y, x0] = r[u, 0] + r[u, 1] + r[u, 2] + bk
                        if x0 + 1 < wout:
                            out[n, k, y, x0 + 1] = r[u, 1] - r[u, 2] - r[u, 3] + bk


def winograd_conv3x3(x: np.ndarray, w: np.ndarray, b, padding) -> np.ndarray:
    """Stride-1 3×3 cross-correlation by F(2×2, 3×3) with Numba transforms: the steps of
    ``winograd_conv3x3_numpy``, with the input transform written straight into the (16, C, P) operand
    of the products and the output transform straight into the (N, K, H', W') result (no padded copy,
    no tile views, no transposes)."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    ph, pw = padding
    hout, wout, th, tw = tile_grid(h, wd, padding)
    x = np.ascontiguousarray(x)
    u = filter_transform(w)
    from minimaskrcnn.nn._conv import _workspace  # scratch reused across calls (no page faults)

    v = _workspace("winograd_v", (16, c, n * th * tw), x.dtype)
    _input_transform_kernel(x, v, ph, pw, th, tw)
    m = _workspace("winograd_m", (16, k, n * th * tw), x.dtype)
    np.matmul(u, v, out=m)
    out = np.empty((n, k, hout, wout), x.dtype)
    bias = b if b is not None else np.empty(0, x.dtype)
    _output_transform_kernel(m, bias, out, th, tw)
    return out


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
