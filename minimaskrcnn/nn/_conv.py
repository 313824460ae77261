"""conv2d and conv_transpose2d: forward/backward pairs (re-exported by ``minimaskrcnn.nn.functional``).

Convolution comes in interchangeable methods, tested equal to each other and to torch:

* ``method="naive"`` — seven nested Python loops, the definition written out; for reading and tests.
* ``method="col2im"`` — the textbook fast version: copy every receptive field into one column of a
  matrix (im2col, a Numba kernel), do the convolution as one matrix product (BLAS), and in the
  backward pass scatter the column gradients back onto the image (col2im, its adjoint).
* ``method="im2col"`` — the same, plus two shortcuts: a 1×1 convolution needs no im2col at all (it
  *is* a matrix product on the strided input), and for stride 1 the input gradient is itself a
  convolution (of dout with the flipped filters), computed with im2col + GEMM instead of GEMM +
  col2im: the same arithmetic, but a copy is cheaper than a scatter-add.
* ``method="winograd"`` — stride-1 3×3 convolutions by Winograd's F(2×2, 3×3) (``_winograd``: 16
  multiplications per 2×2 output block instead of 36): the forward, and both gradients by the
  transforms' adjoints, sharing one transform of dout; every other kernel shape, stride or dilation
  as "im2col".
* ``method="winograd4"`` — the same with F(4×4, 3×3) (``_winograd43``: 36 multiplications per 4×4
  block instead of 144, and transformed operands 2.25 times the maps instead of 4 times).
* ``method="auto"`` (default) — whichever of these pays off (``_winograd.auto_method``): F(2×2, 3×3)
  on many small maps (a mask head's RoIs), F(4×4, 3×3) on wide maps with enough tiles and channels
  (a ResNet's stages, the benchmark's 64- and 256-channel maps), "im2col" everywhere else.

The im2col methods reuse scratch buffers between calls (``clear_workspace`` frees them) and keep
only x and w in the cache: backward rebuilds the column matrix, so a network holds one activation
per layer rather than a column matrix C_in·kH·kW times larger.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from minimaskrcnn._checks import float_array, pair
from minimaskrcnn.nn import _conv_kernels as _k
from minimaskrcnn.nn import _winograd, _winograd43
from minimaskrcnn.nn._args import _out_size, _param, _same_dtype
from minimaskrcnn.nn._launch import sized

CONV_METHODS = ("auto", "im2col", "col2im", "naive", "winograd", "winograd4")

# --------------------------------------------------------------------------------------------------
# scratch memory
# --------------------------------------------------------------------------------------------------

_scratch = threading.local()

_WINOGRAD = ("winograd", "winograd4")


def _winograd_tier(method: str):
    """(forward, backward) of a Winograd method: F(2×2, 3×3) for "winograd", F(4×4, 3×3) for
    "winograd4"; ``forward(x, w, b, padding, keep_v, u=None)`` -> (out, v or None),
    ``backward(x, dout, w, padding, v, need_dx, need_dw, u=None)`` -> (dx, dW)."""
    if method == "winograd4":
        return _winograd43.winograd43_forward, _winograd43.winograd43_backward
    return _winograd.winograd_forward, _winograd.winograd_backward


def _workspace(slot: str, shape: tuple, dtype) -> np.ndarray:
    """A reusable scratch array (one per slot, dtype and thread), grown on demand, never returned to
    a caller. Reusing it avoids the page faults of a fresh multi-megabyte allocation on every call,
    which otherwise cost as much as the im2col copy itself."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    size = math.prod(shape)  # (np.prod: ~25 µs a call, 76 calls a shapes training step)
    key = (slot, np.dtype(dtype))
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def clear_workspace() -> None:
    """Free the scratch buffers kept by the im2col convolution in this thread."""
    _scratch.bufs = {}


def _check_method(method: str) -> None:
    if method not in CONV_METHODS:
        raise ValueError(f"method must be one of {CONV_METHODS}, got {method!r}")


# --------------------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------------------


def conv2d_forward(x, w, b, stride=1, padding=0, dilation=1, *, method: str = "auto",
                   keep_transform: bool = True):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (groups = 1).

    Inputs
    - x: (N, C_in, H, W) input feature map.
    - w: (C_out, C_in, kH, kW) filters (torch layout).
    - b: (C_out,) bias, or None.
    - stride, padding, dilation: int or (h, w) pair; stride, dilation >= 1, padding >= 0 (zeros).
    - method: "auto" (default: a Winograd tier where one pays off, else "im2col"), "im2col", "col2im"
      (textbook im2col/col2im), "naive" (loops), "winograd" or "winograd4" (F(2×2, 3×3) or F(4×4, 3×3)
      for stride-1 3×3 filters, "im2col" otherwise); see the module docstring.
    - keep_transform: a Winograd method keeps its transformed input V in the cache (up to
      ``_winograd.KEEP_V_BYTES``) and its transformed filters U (up to ``_winograd.KEEP_U_BYTES``),
      im2col its column matrix (up to ``KEEP_COLS_BYTES``), so that the backward need not recompute
      them; False when no backward will follow
      (``Module.no_grad``) or it needs no dW (a frozen filter), where their scratch buffers are reused.

    Output
    - out: (N, C_out, H', W') with H' = 1 + (H + 2·pad_h − dil_h·(kH − 1) − 1) // stride_h, same for W';
      out[n, o, y, x] = b[o] + Σ_{c,i,j} w[o, c, i, j] · x_pad[n, c, y·s_h + i·d_h, x·s_w + j·d_w].
    - cache: what ``conv2d_backward`` needs: x and w; the column matrix (kH·kW / stride² times x) or
      a Winograd method's V (2.25–4 times x) only where it is small, see ``keep_transform``; larger
      ones the backward rebuilds, which costs one copy but keeps a network's memory at one activation
      per layer.
    """
    _check_method(method)
    x = float_array(x, "x", ndim=4)
    w = float_array(w, "w", ndim=4)
    _same_dtype(w, "w", x)
    n_batch, c_in, height, width = x.shape
    c_out, w_c_in, kh, kw = w.shape
    if w_c_in != c_in:
        raise ValueError(f"w has {w_c_in} input channels (w.shape[1]) but x has {c_in} (x.shape[1])")
    if min(c_out, kh, kw, c_in, height, width) < 1:
        raise ValueError(f"x and w must have non-empty channel/spatial axes, got x {x.shape}, w {w.shape}")
    b = _param(b, "b", (c_out,), x, allow_none=True)
    sh, sw = pair(stride, "stride", minimum=1)
    ph, pw = pair(padding, "padding", minimum=0)
    dh, dw = pair(dilation, "dilation", minimum=1)
    for axis, size, k, p, d in (("height", height, kh, ph, dh), ("width", width, kw, pw, dw)):
        if d * (k - 1) + 1 > size + 2 * p:
            raise ValueError(f"kernel {axis} (dilated: {d * (k - 1) + 1}) is larger than the padded input "
                             f"{axis} ({size} + 2·{p}); x {x.shape}, w {w.shape}")
    hout, wout = _out_size(height, kh, sh, ph, dh), _out_size(width, kw, sw, pw, dw)
    geometry = (sh, sw, ph, pw, dh, dw, hout, wout)
    if method == "auto":  # resolved here, so that the backward uses the forward's choice
        method = _winograd.auto_method(w.shape, geometry, x.shape[0])
    v = u = None
    if method == "naive":
        out = _conv2d_naive_forward(x, w, b, geometry)
    elif method in _WINOGRAD and _winograd.applies(w.shape, geometry):
        u = (_winograd43 if method == "winograd4" else _winograd).filter_transform(w)
        out, v = _winograd_tier(method)[0](x, w, b, (ph, pw), keep_transform, u=u)
        if not (keep_transform and u.nbytes <= _winograd.KEEP_U_BYTES):
            u = None  # the backward transforms the filters again
    else:
        out, v = _conv2d_im2col_forward(x, w, b, geometry, method != "col2im", keep_transform)
    return out, (x, w, b is not None, geometry, v, method, u)


def conv2d_backward(dout, cache, *, need_dx: bool = True, need_dw: bool = True):
    """Gradients of conv2d.

    Inputs
    - dout: (N, C_out, H', W') upstream gradient.
    - cache: from ``conv2d_forward``.
    - need_dx, need_dw: False skips that gradient (returned as None) and its work: a frozen filter
      needs no dW (no im2col rebuild, no dW product); the first trainable layer above a frozen
      prefix needs no dx. Fine-tuning a ResNet-50 with torchvision's frozen stem uses both.

    Returns (dx, dw, db): (N, C_in, H, W), (C_out, C_in, kH, kW), (C_out,) — db is None when the
    forward had no bias. With cols the im2col matrix and W the filters as a (C_out, C_in·kH·kW)
    matrix, out = W·cols gives dW = dout·colsᵀ, dcols = Wᵀ·dout, and dx = col2im(dcols), which adds
    every column entry back into the pixel it was copied from.
    """
    x, w, has_bias, geometry, v, method, u = cache
    n_batch, c_out, hout, wout = x.shape[0], w.shape[0], geometry[6], geometry[7]
    dout = float_array(dout, "dout", ndim=4)
    _same_dtype(dout, "dout", x)
    if dout.shape != (n_batch, c_out, hout, wout):
        raise ValueError(f"dout must have shape {(n_batch, c_out, hout, wout)}, got {dout.shape}")
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if method == "naive":  # the reference computes both; the flags only drop what is not wanted
        dx, dw = _conv2d_naive_backward(dout, x, w, geometry)
        return (dx if need_dx else None), (dw if need_dw else None), db
    if method in _WINOGRAD and _winograd.applies(w.shape, geometry):
        dx, dw = _winograd_tier(method)[1](x, dout, w, geometry[2:4], v, need_dx, need_dw, u=u)
        return dx, dw, db
    dx, dw = _conv2d_im2col_backward(dout, x, w, geometry, shortcuts=method != "col2im",
                                     need_dx=need_dx, need_dw=need_dw, cols=v)
    return dx, dw, db


def _conv2d_naive_forward(x, w, b, geometry):
    """The definition, one multiply-add at a time: seven loops (n, o, y, x, c, i, j)."""
    sh, sw, ph, pw, dh, dw, hout, wout = geometry
    n_batch, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    out = np.zeros((n_batch, c_out, hout, wout), dtype=x.dtype)
    for n in range(n_batch):
        for o in range(c_out):
            for oy in range(hout):
                for ox in range(wout):
                    acc = x.dtype.type(0) if b is None else b[o]
                    for c in range(c_in):
                        for i in range(kh):
                            for j in range(kw):
                                iy = oy * sh - ph + i * dh  # row in the unpadded input
                                ix = ox * sw - pw + j * dw
                                if 0 <= iy < height and 0 <= ix < width:  # outside = zero padding
                                    acc += w[o, c, i, j] * x[n, c, iy, ix]
                    out[n, o, oy, ox] = acc
    return out


def _conv2d_naive_backward(dout, x, w, geometry):
    """Each multiply-add of the forward, out += w·x, sends dout·x to dw and dout·w to dx."""
    sh, sw, ph, pw, dh, dw_, hout, wout = geometry
    n_batch, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for n in range(n_batch):
        for o in range(c_out):
            for oy in range(hout):
                for ox in range(wout):
                    g = dout[n, o, oy, ox]
                    for c in range(c_in):
                        for i in range(kh):
                            for j in range(kw):
                                iy = oy * sh - ph + i * dh
                                ix = ox * sw - pw + j * dw_
                                if 0 <= iy < height and 0 <= ix < width:
                                    dw[o, c, i, j] += g * x[n, c, iy, ix]
                                    dx[n, c, iy, ix] += g * w[o, c, i, j]
    return dx, dw


def _flipped_filters(w):
    """(C_in, C_out, kH, kW) filters of the input gradient as a convolution: w rotated by 180° in space,
    its channel axes swapped (dx of a stride-1 conv is dout convolved with these)."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def _is_pointwise(w, geometry) -> bool:
    """A 1×1 kernel without padding: the convolution is a matrix product on x[:, :, ::s_h, ::s_w]."""
    sh, sw, ph, pw, dh, dw, hout, wout = geometry
    return w.shape[2] == 1 and w.shape[3] == 1 and ph == 0 and pw == 0


# Columns per matrix product. Images are processed in chunks of about this many output positions:
# enough for BLAS to run near peak, small enough that the column matrix of a chunk stays in cache
# between im2col writing it and the product reading it. A chunk of one image needs no transposes:
# its product lands directly in out[n] (C_out, H'·W'). Short columns (few input channels, as in the
# stem's 3·3·3 = 27 rows) take more of them, up to CHUNK_BYTES of column matrix: each chunk costs its
# own kernel starts and products, and the stem's 8 chunks of one 128×128 image each made its
# forward + backward 6.6 ms instead of 4.7 as one chunk (2 cores).
CHUNK_COLUMNS = 4096
CHUNK_BYTES = 4 << 20


def _chunks(n_batch: int, length: int, rows: int = 0, itemsize: int = 4):
    """Split the batch into runs of images [n0, n1) of about CHUNK_COLUMNS output positions (more
    when the column matrix has few ``rows``: up to CHUNK_BYTES of it), as evenly as possible
    (64 RoIs of 14×14 = 196 positions: 4 chunks of 16, not 21 + 21 + 21 + 1)."""
    if n_batch == 0:
        return []
    columns = max(CHUNK_COLUMNS, CHUNK_BYTES // max(1, rows * itemsize))
    per_chunk = max(1, min(n_batch, -(-columns // length)))
    n_chunks = -(-n_batch // per_chunk)
    per_chunk = -(-n_batch // n_chunks)
    return [(n0, min(n0 + per_chunk, n_batch)) for n0 in range(0, n_batch, per_chunk)]


# The forward keeps its column matrix for the backward's filter gradient (instead of rebuilding it
# there) when the whole batch's is at most this large, as the Winograd tiers keep V: the shapes
# backbone's stride-2 convolutions have 0.6–9.4 MB of it (the 8×32×64×64 one: 8.6 ms forward +
# backward of which the rebuild took 1.0–2.3).
KEEP_COLS_BYTES = 16 << 20


def _conv2d_im2col_forward(x, w, b, geometry, shortcuts=True, keep_cols=False):
    """out (N, C_out, H', W'), and the column matrix (C_in·kH·kW, N, H'·W') when ``keep_cols`` and it
    is at most KEEP_COLS_BYTES (one chunk for the whole batch, in a fresh array), else None."""
    sh, sw, ph, pw, dh, dw, hout, wout = geometry
    n_batch, c_in = x.shape[:2]
    c_out, _, kh, kw = w.shape
    length = hout * wout
    w2 = w.reshape(c_out, c_in * kh * kw)
    if shortcuts and _is_pointwise(w, geometry):
        # 1×1 fast path: no im2col; out[n] = W · x[n] for every image (a stack of BLAS calls).
        xs = np.ascontiguousarray(x[:, :, ::sh, ::sw]).reshape(n_batch, c_in, length)
        out = np.matmul(w2, xs)
        if b is not None:
            out += b[:, None]
        return out.reshape(n_batch, c_out, hout, wout), None
    x = np.ascontiguousarray(x)
    out = np.empty((n_batch, c_out, length), dtype=x.dtype)
    bias = b if b is not None else np.empty(0, x.dtype)
    rows = c_in * kh * kw
    keep = keep_cols and rows * n_batch * length * x.itemsize <= KEEP_COLS_BYTES
    kept = np.empty((rows, n_batch, length), x.dtype) if keep else None
    for n0, n1 in [(0, n_batch)] if keep else _chunks(n_batch, length, rows, x.itemsize):
        # 1. Receptive fields → columns: cols[(c, i, j), (n, y, x)] for the images of this chunk.
        cols = kept if keep else _workspace("cols", (rows, n1 - n0, length), x.dtype)
        sized(_k.im2col, cols.size)(x[n0:n1], cols, kh, kw, sh, sw, ph, pw, dh, dw, hout, wout)
        cols = cols.reshape(cols.shape[0], -1)
        # 2. The convolution as one matrix product: (C_out, C_in·kH·kW) @ (C_in·kH·kW, n·H'·W').
        if n1 - n0 == 1:
            np.matmul(w2, cols, out=out[n0])
            if b is not None:
                out[n0] += b[:, None]
        else:
            prod = _workspace("prod", (c_out, n1 - n0, length), x.dtype)
            np.matmul(w2, cols, out=prod.reshape(c_out, -1))
            # 3. (C_out, n, L) → (n, C_out, L), adding the bias on the way.
            sized(_k.cnl_to_nchw_bias, prod.size)(prod, bias, out[n0:n1])
    return out.reshape(n_batch, c_out, hout, wout), kept


def _conv2d_im2col_backward(dout, x, w, geometry, shortcuts=True, need_dx=True, need_dw=True, cols=None):
    """(dx or None, dW or None); ``cols`` the forward's kept column matrix (C_in·kH·kW, N, H'·W'), or
    None to rebuild it chunk by chunk."""
    sh, sw, ph, pw, dh, dw, hout, wout = geometry
    n_batch, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    length = hout * wout
    w2 = w.reshape(c_out, c_in * kh * kw)
    dout3 = np.ascontiguousarray(dout).reshape(n_batch, c_out, length)
    if shortcuts and _is_pointwise(w, geometry):
        dw_out = dx = None
        if need_dw:
            xs = np.ascontiguousarray(x[:, :, ::sh, ::sw]).reshape(n_batch, c_in, length)
            dw2 = np.zeros_like(w2)
            for n in range(n_batch):  # dW = Σ_n dout[n] · x[n]ᵀ
                dw2 += dout3[n] @ xs[n].T
            dw_out = dw2.reshape(w.shape)
        if need_dx:
            dxs = np.matmul(w2.T, dout3).reshape(n_batch, c_in, hout, wout)
            if sh == 1 and sw == 1:
                dx = dxs
            else:
                dx = np.zeros_like(x)  # pixels skipped by the stride get no gradient
                dx[:, :, ::sh, ::sw] = dxs
        return dx, dw_out
    x = np.ascontiguousarray(x)
    dx_by_conv = shortcuts and sh == 1 and sw == 1 and ph <= dh * (kh - 1) and pw <= dw * (kw - 1)
    if not need_dx:
        dx = None
    elif dx_by_conv:
        # stride 1: dx is a "full" convolution of dout with the flipped filters, channels swapped:
        # dx[n, c, y, x] = Σ_{o,i,j} dout_pad[n, o, y + i·d, x + j·d] · w[o, c, kH−1−i, kW−1−j],
        # padded by d·(k − 1) − pad. Same FLOPs as col2im, but an im2col copy instead of a scatter.
        w_flip = _flipped_filters(w)
        geometry_dx = (1, 1, dh * (kh - 1) - ph, dw * (kw - 1) - pw, dh, dw, height, width)
        dx = _conv2d_im2col_forward(dout3.reshape(dout.shape), w_flip, None, geometry_dx)[0]
    else:
        dx = np.empty_like(x)
    scatter_dx = need_dx and not dx_by_conv
    if not (need_dw or scatter_dx):
        return dx, None
    dw2t = np.zeros((w2.shape[1], c_out), dtype=x.dtype)  # dWᵀ: BLAS is faster in this orientation
    kept = cols
    chunks = [(0, n_batch)] if kept is not None else _chunks(n_batch, length, c_in * kh * kw, x.itemsize)
    for n0, n1 in chunks:
        # 1. dout of the chunk in the column layout (C_out, n·L), matching the forward's product.
        if n1 - n0 == 1:
            d2 = dout3[n0]
        else:
            d2 = _workspace("dout", (c_out, n1 - n0, length), x.dtype)
            sized(_k.nchw_to_cnl, d2.size)(dout3[n0:n1], d2)
            d2 = d2.reshape(c_out, -1)
        cols_shape = (c_in * kh * kw, n1 - n0, length)
        if need_dw:
            # 2. The forward's columns: kept by it, or rebuilt here.
            cols = kept
            if cols is None:
                cols = _workspace("cols", cols_shape, x.dtype)
                sized(_k.im2col, cols.size)(x[n0:n1], cols, kh, kw, sh, sw, ph, pw, dh, dw, hout, wout)
            # 3. dW += dout · colsᵀ (computed as its transpose cols · doutᵀ).
            dw2t += cols.reshape(cols.shape[0], -1) @ d2.T
        if not scatter_dx:
            continue
        # 4. dcols = Wᵀ · dout, then columns → image: add each entry back where im2col read it.
        dcols = _workspace("dcols", cols_shape, x.dtype)
        np.matmul(w2.T, d2, out=dcols.reshape(cols_shape[0], -1))
        sized(_k.col2im, dcols.size)(dcols, dx[n0:n1], kh, kw, sh, sw, ph, pw, dh, dw, hout, wout)
    return dx, (np.ascontiguousarray(dw2t.T).reshape(w.shape) if need_dw else None)


# --------------------------------------------------------------------------------------------------
# conv_transpose2d
# --------------------------------------------------------------------------------------------------


def conv_transpose2d_forward(x, w, b, stride=1, padding=0, *, method: str = "auto"):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d`` (groups = 1,
    dilation = 1, output_padding = 0): the adjoint of conv2d with the same stride and padding.

    Inputs
    - x: (N, C_in, H, W).
    - w: (C_in, C_out, kH, kW) — torch's layout for transposed convolution (C_in first).
    - b: (C_out,) or None.
    - stride, padding: int or (h, w) pair; stride >= 1, padding >= 0.
    - method: "im2col" (one BLAS product, then col2im; a single copy when kernel = stride), "col2im"
      (always col2im) or "naive" (loops); "auto" (default), "winograd" and "winograd4" are "im2col"
      here (no Winograd tier for transposed convolutions).

    Output
    - out: (N, C_out, H', W') with H' = (H − 1)·stride_h − 2·pad_h + kH (must be >= 1), same for W';
      every input pixel x[n, c, y, x] adds x·w[c, o, i, j] to out[n, o, y·s_h − p_h + i, x·s_w − p_w + j]
      (contributions that land in the cropped border ``padding`` are dropped).
    - cache for ``conv_transpose2d_backward``.

    The mask head's 2×2, stride-2 upsampling (kernel = stride, no padding) writes every output
    pixel exactly once, so col2im degenerates to a reshape and transpose.
    """
    _check_method(method)
    x = float_array(x, "x", ndim=4)
    w = float_array(w, "w", ndim=4)
    _same_dtype(w, "w", x)
    n_batch, c_in, height, width = x.shape
    w_c_in, c_out, kh, kw = w.shape
    if w_c_in != c_in:
        raise ValueError(f"w has {w_c_in} input channels (w.shape[0], layout (C_in, C_out, kH, kW)) "
                         f"but x has {c_in} (x.shape[1])")
    if min(c_out, kh, kw, c_in, height, width) < 1:
        raise ValueError(f"x and w must have non-empty channel/spatial axes, got x {x.shape}, w {w.shape}")
    b = _param(b, "b", (c_out,), x, allow_none=True)
    sh, sw = pair(stride, "stride", minimum=1)
    ph, pw = pair(padding, "padding", minimum=0)
    hout, wout = (height - 1) * sh - 2 * ph + kh, (width - 1) * sw - 2 * pw + kw
    if hout < 1 or wout < 1:
        raise ValueError(f"padding {(ph, pw)} crops the whole output: (H − 1)·stride − 2·padding + k gives "
                         f"{(hout, wout)} for x {x.shape}, w {w.shape}, stride {(sh, sw)}")
    geometry = (sh, sw, ph, pw, hout, wout)
    if method == "naive":
        out = _conv_transpose2d_naive_forward(x, w, b, geometry)
    else:
        out = _conv_transpose2d_im2col_forward(x, w, b, geometry, shortcuts=method != "col2im")
    return out, (x, w, b is not None, geometry, method)


def conv_transpose2d_backward(dout, cache):
    """Gradients of conv_transpose2d.

    Inputs: dout (N, C_out, H', W'), cache. Returns (dx, dw, db): (N, C_in, H, W),
    (C_in, C_out, kH, kW), (C_out,) or None. The transposed convolution is col2im(Wᵀ·x), so its
    backward is a plain convolution: dcols = im2col(dout), dx = W·dcols, dW = x·dcolsᵀ.
    """
    x, w, has_bias, geometry, method = cache
    sh, sw, ph, pw, hout, wout = geometry
    n_batch, c_in, height, width = x.shape
    _, c_out, kh, kw = w.shape
    dout = float_array(dout, "dout", ndim=4)
    _same_dtype(dout, "dout", x)
    if dout.shape != (n_batch, c_out, hout, wout):
        raise ValueError(f"dout must have shape {(n_batch, c_out, hout, wout)}, got {dout.shape}")
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if method == "naive":
        dx, dw = _conv_transpose2d_naive_backward(dout, x, w, geometry)
        return dx, dw, db
    length = height * width
    w2 = w.reshape(c_in, c_out * kh * kw)
    # 1. dcols[(o, i, j), (n, y, x)] = dout[n, o, y·s − p + i, x·s − p + j]: im2col of dout over the
    #    input grid (H × W positions).
    dcols = _workspace("cols", (c_out * kh * kw, n_batch, length), x.dtype)
    if method != "col2im" and _is_tiling(w, geometry):
        # kernel = stride: a copy
        sized(_k.gather_stamps, dcols.size)(np.ascontiguousarray(dout), dcols, kh, kw)
    else:
        sized(_k.im2col, dcols.size)(np.ascontiguousarray(dout), dcols, kh, kw, sh, sw, ph, pw, 1, 1,
                                     height, width)
    dcols = dcols.reshape(c_out * kh * kw, -1)
    # 2. x in the same column layout (C_in, N·H·W), then two matrix products.
    xc = _workspace("dout", (c_in, n_batch, length), x.dtype)
    sized(_k.nchw_to_cnl, xc.size)(np.ascontiguousarray(x).reshape(n_batch, c_in, length), xc)
    xc = xc.reshape(c_in, -1)
    dw = (xc @ dcols.T).reshape(w.shape)
    dxc = w2 @ dcols  # (C_in, N·H·W)
    dx = np.empty((n_batch, c_in, length), dtype=x.dtype)
    sized(_k.cnl_to_nchw_bias, dx.size)(dxc.reshape(c_in, n_batch, length), np.empty(0, x.dtype), dx)
    return dx.reshape(x.shape), dw, db


def _is_tiling(w, geometry) -> bool:
    """kernel = stride and no padding: every output pixel receives exactly one input pixel."""
    sh, sw, ph, pw = geometry[:4]
    return w.shape[2] == sh and w.shape[3] == sw and ph == 0 and pw == 0


def _conv_transpose2d_naive_forward(x, w, b, geometry):
    """Scatter form, seven loops: each input pixel stamps its kernel onto the output."""
    sh, sw, ph, pw, hout, wout = geometry
    n_batch, c_in, height, width = x.shape
    _, c_out, kh, kw = w.shape
    out = np.zeros((n_batch, c_out, hout, wout), dtype=x.dtype)
    for n in range(n_batch):
        for c in range(c_in):
            for iy in range(height):
                for ix in range(width):
                    for o in range(c_out):
                        for i in range(kh):
                            for j in range(kw):
                                oy = iy * sh - ph + i
                                ox = ix * sw - pw + j
                                if 0 <= oy < hout and 0 <= ox < wout:  # else: cropped by padding
                                    out[n, o, oy, ox] += x[n, c, iy, ix] * w[c, o, i, j]
    if b is not None:
        out += b[None, :, None, None]
    return out


def _conv_transpose2d_naive_backward(dout, x, w, geometry):
    sh, sw, ph, pw, hout, wout = geometry
    n_batch, c_in, height, width = x.shape
    _, c_out, kh, kw = w.shape
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for n in range(n_batch):
        for c in range(c_in):
            for iy in range(height):
                for ix in range(width):
                    for o in range(c_out):
                        for i in range(kh):
                            for j in range(kw):
                                oy = iy * sh - ph + i
                                ox = ix * sw - pw + j
                                if 0 <= oy < hout and 0 <= ox < wout:
                                    dx[n, c, iy, ix] += dout[n, o, oy, ox] * w[c, o, i, j]
                                    dw[c, o, i, j] += dout[n, o, oy, ox] * x[n, c, iy, ix]
    return dx, dw


def _conv_transpose2d_im2col_forward(x, w, b, geometry, shortcuts=True):
    sh, sw, ph, pw, hout, wout = geometry
    n_batch, c_in, height, width = x.shape
    _, c_out, kh, kw = w.shape
    length = height * width
    # 1. x in column layout (C_in, N·H·W); every input pixel's contributions, one column each:
    #    cols = Wᵀ · x with W viewed as (C_in, C_out·kH·kW).
    xc = _workspace("dout", (c_in, n_batch, length), x.dtype)
    sized(_k.nchw_to_cnl, xc.size)(np.ascontiguousarray(x).reshape(n_batch, c_in, length), xc)
    w2 = w.reshape(c_in, c_out * kh * kw)
    cols = _workspace("dcols", (c_out * kh * kw, n_batch, length), x.dtype)
    np.matmul(w2.T, xc.reshape(c_in, -1), out=cols.reshape(c_out * kh * kw, -1))
    out = np.empty((n_batch, c_out, hout, wout), dtype=x.dtype)
    if shortcuts and _is_tiling(w, geometry):
        # 2a. kernel = stride: the kernel stamps tile the output, so placing them (and adding the
        #     bias) is one copy; see _k.place_stamps for the equivalent transpose.
        sized(_k.place_stamps, cols.size)(cols, b if b is not None else np.empty(0, x.dtype), out, kh, kw)
        return out
    # 2b. general case: col2im sums the overlapping stamps (the adjoint of conv2d's im2col).
    sized(_k.col2im, cols.size)(cols, out, kh, kw, sh, sw, ph, pw, 1, 1, height, width)
    if b is not None:
        out += b[None, :, None, None]
    return out
