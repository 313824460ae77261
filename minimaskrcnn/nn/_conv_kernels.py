"""Numba kernels behind ``conv2d`` / ``conv_transpose2d`` / ``max_pool2d`` / ``upsample_nearest2d``.

im2col layout (the "batched" layout). For an input ``x`` of shape (N, C, H, W) and a kH×kW kernel
sliding to Hout×Wout positions, ``im2col`` writes

    cols[(c, i, j), n, (oh, ow)] = x_pad[n, c, oh·sh + i·dh, ow·sw + j·dw]     shape (C·kH·kW, N, Hout·Wout)

where ``x_pad`` is ``x`` with ``ph``/``pw`` zeros on each side (never materialised: reads that fall
in the padding give 0). Putting the batch *inside* the column axis makes the whole convolution one
GEMM, ``W.reshape(C_out, C·kH·kW) @ cols.reshape(C·kH·kW, N·Hout·Wout)``, instead of N small ones;
BLAS runs one large product much closer to peak. Each (row, n) block of ``cols`` is contiguous
memory written by one thread (the one that owns input plane (n, c)), so the parallel loop has no
write conflicts.

``col2im`` is the adjoint (transpose) of ``im2col``: every column entry is *added* back into the
pixel it was read from; entries that were read from the padding are dropped. Each thread owns one
(n, c) plane of the result, so the additions never race.

The kernels write into caller-provided buffers: the callers reuse one scratch buffer across calls,
because a fresh 100 MB array costs more in page faults than the copy itself.

Every kernel compiles for float32 and float64 on first use; ``cache=True`` keeps the machine code on
disk, so later processes skip the compile.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minimaskrcnn.nn._launch import serial_twin


@njit(cache=True, inline="always")
def _valid_range(i, d, s, p, size, out_size):
    """Output positions o in [lo, hi) whose input position o·s + off (off = i·d − p) is in [0, size)."""
    off = i * d - p
    # o·s + off >= 0  <=>  o >= ceil(−off / s)
    lo = 0 if off >= 0 else (-off + s - 1) // s
    # o·s + off <= size − 1  <=>  o <= (size − 1 − off) // s
    hi = 0 if size - 1 - off < 0 else (size - 1 - off) // s + 1
    if hi > out_size:
        hi = out_size
    if lo > hi:
        lo = hi
    return lo, hi, off


@njit(cache=True, parallel=True)
def im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, hout, wout):
    """x (N, C, H, W) → cols (C·kH·kW, N, Hout·Wout), written in place; see the module docstring.
    One task per (channel, image): its kH·kW rows of the column matrix, read from one input plane
    (nine times fewer tasks than one per row: on small maps the per-task work was the cost)."""
    n_batch, channels, height, width = x.shape
    zero = x.dtype.type(0.0)
    same_width = sh == 1 and sw == 1 and wout == width
    for task in prange(channels * n_batch):
        c, n = task // n_batch, task % n_batch
        src = x[n, c]
        for i in range(kh):
            for j in range(kw):
                dst = cols[(c * kh + i) * kw + j, n]  # row (c, i, j), image n: Hout·Wout values
                if same_width:
                    # 1. Stride 1, "same" width: output row oh reads input row oh + off_h, and
                    #    consecutive rows are consecutive in memory on both sides, so the whole valid
                    #    block is ONE contiguous copy of the flattened plane shifted by off_h·W + off_w
                    #    (long runs instead of one short run per row). Columns that wrapped around a
                    #    row edge read a neighbouring row; they are zeroed after.
                    oh_lo, oh_hi, off_h = _valid_range(i, dh, sh, ph, height, hout)
                    ow_lo, ow_hi, off_w = _valid_range(j, dw, sw, pw, width, wout)
                    shift = off_h * width + off_w
                    lo = max(oh_lo * wout, -shift)
                    hi = max(lo, min(oh_hi * wout, height * width - shift))
                    dst[:lo] = zero
                    dst[hi:] = zero
                    dst[lo:hi] = src.reshape(-1)[lo + shift: hi + shift]
                    for oh in range(oh_lo, oh_hi):
                        base = oh * wout
                        for ow in range(ow_lo):
                            dst[base + ow] = zero
                        for ow in range(ow_hi, wout):
                            dst[base + ow] = zero
                    continue
                # 2. General case, output row by output row: a row above / below the input (the
                #    padding) is zeros; else each output column reads its input column, or zero.
                for oh in range(hout):
                    ih = oh * sh - ph + i * dh
                    base = oh * wout
                    if ih < 0 or ih >= height:
                        for ow in range(wout):
                            dst[base + ow] = zero
                    else:
                        row = src[ih]
                        for ow in range(wout):
                            iw = ow * sw - pw + j * dw
                            dst[base + ow] = row[iw] if 0 <= iw < width else zero


@njit(cache=True, parallel=True)
def col2im(cols, x, kh, kw, sh, sw, ph, pw, dh, dw, hout, wout):
    """cols (C·kH·kW, N, Hout·Wout) → x (N, C, H, W) (overwritten), summing every entry into the
    pixel it came from — the adjoint of ``im2col``."""
    n_batch, channels, height, width = x.shape
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        dst = x[n, c]
        dst[:, :] = 0
        # One kernel tap (i, j) at a time: its column row maps onto a shifted, strided window of x.
        for i in range(kh):
            oh_lo, oh_hi, off_h = _valid_range(i, dh, sh, ph, height, hout)
            for j in range(kw):
                ow_lo, ow_hi, off_w = _valid_range(j, dw, sw, pw, width, wout)
                src = cols[(c * kh + i) * kw + j, n]
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh + off_h
                    base = oh * wout
                    if sw == 1:
                        dst[ih, ow_lo + off_w: ow_hi + off_w] += src[base + ow_lo: base + ow_hi]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            dst[ih, ow * sw + off_w] += src[base + ow]


@njit(cache=True, parallel=True)
def nchw_to_cnl(x, out):
    """(N, C, L) → (C, N, L): swap the two leading axes (parallel over C), written into ``out``."""
    n_batch, channels, _ = x.shape
    for c in prange(channels):
        for n in range(n_batch):
            out[c, n, :] = x[n, c, :]


@njit(cache=True, parallel=True)
def cnl_to_nchw_bias(x, bias, out):
    """(C, N, L) → (N, C, L) plus ``bias[c]`` (pass a length-0 array for no bias), into ``out``."""
    channels, n_batch, _ = x.shape
    has_bias = bias.shape[0] > 0
    for c in prange(channels):
        for n in range(n_batch):
            if has_bias:
                out[n, c, :] = x[c, n, :] + bias[c]
            else:
                out[n, c, :] = x[c, n, :]


@njit(cache=True, parallel=True)
def place_stamps(cols, bias, out, kh, kw):
    """A transposed convolution whose kernel equals its stride (kH×kW, no padding): every input pixel
    (y, x) stamps its kH×kW block onto its own output block, so

        out[n, o, y·kH + i, x·kW + j] = cols[(o, i, j), n, (y, x)] + bias[o]

    for cols (C_out·kH·kW, N, H·W) = Wᵀ·x in the column layout and out (N, C_out, H·kH, W·kW),
    written in place (bias of length 0: none). The same as
    ``cols.reshape(C_out, kH, kW, N, H, W).transpose(3, 0, 4, 1, 5, 2)`` reshaped, plus the bias,
    in one pass. One task per (n, o)."""
    n_batch, c_out, hout, wout = out.shape
    height, width = hout // kh, wout // kw
    has_bias = bias.shape[0] > 0
    for task in prange(n_batch * c_out):
        n, o = task // c_out, task % c_out
        bo = bias[o] if has_bias else 0.0
        for i in range(kh):
            for j in range(kw):
                src = cols[(o * kh + i) * kw + j, n]
                for y in range(height):
                    row = out[n, o, y * kh + i]
                    for x in range(width):
                        row[x * kw + j] = src[y * width + x] + bo


@njit(cache=True, parallel=True)
def gather_stamps(dout, dcols, kh, kw):
    """The adjoint of ``place_stamps`` (without the bias): dcols[(o, i, j), n, (y, x)] =
    dout[n, o, y·kH + i, x·kW + j] for dout (N, C_out, H·kH, W·kW), into dcols (C_out·kH·kW, N, H·W).
    One task per (n, o)."""
    n_batch, c_out, hout, wout = dout.shape
    height, width = hout // kh, wout // kw
    for task in prange(n_batch * c_out):
        n, o = task // c_out, task % c_out
        for i in range(kh):
            for j in range(kw):
                dst = dcols[(o * kh + i) * kw + j, n]
                for y in range(height):
                    row = dout[n, o, y * kh + i]
                    for x in range(width):
                        dst[y * width + x] = row[x * kw + j]


@njit(cache=True, parallel=True)
def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, hout, wout):
    """Max over each window (padding acts as −inf: padded cells are never candidates).

    Returns out (N, C, Hout, Wout) and argmax (same shape, int64): the flat index ih·W + iw of the
    chosen input pixel. Ties go to the first maximum in row-major window order and NaN wins, as in
    torch's CPU kernel (``val > best or isnan(val)``).
    """
    n_batch, channels, height, width = x.shape
    out = np.empty((n_batch, channels, hout, wout), dtype=x.dtype)
    argmax = np.empty((n_batch, channels, hout, wout), dtype=np.int64)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        src = x[n, c]
        for oh in range(hout):
            h0 = max(oh * sh - ph, 0)
            h1 = min(oh * sh - ph + kh, height)
            for ow in range(wout):
                w0 = max(ow * sw - pw, 0)
                w1 = min(ow * sw - pw + kw, width)
                best = -np.inf
                best_idx = h0 * width + w0  # kept when every candidate is -inf
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        v = src[ih, iw]
                        if v > best or np.isnan(v):
                            best = v
                            best_idx = ih * width + iw
                out[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_idx
    return out, argmax


@njit(cache=True, parallel=True)
def max_pool2d_backward(dout, argmax, height, width):
    """Route each output gradient to the input pixel that won the max (sums where windows overlap)."""
    n_batch, channels, hout, wout = dout.shape
    dx = np.zeros((n_batch, channels, height * width), dtype=dout.dtype)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        for oh in range(hout):
            for ow in range(wout):
                dx[n, c, argmax[n, c, oh, ow]] += dout[n, c, oh, ow]
    return dx.reshape(n_batch, channels, height, width)


@njit(cache=True, parallel=True)
def upsample_nearest_forward(x, src_h, src_w, out):
    """out[n, c, y, x] = x[n, c, src_h[y], src_w[x]] (nearest-neighbour resize), one task per plane."""
    n_batch, channels = x.shape[:2]
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        for y in range(src_h.shape[0]):
            row = x[n, c, src_h[y]]
            dst = out[n, c, y]
            for col in range(src_w.shape[0]):
                dst[col] = row[src_w[col]]


@njit(cache=True, parallel=True)
def upsample_nearest_backward(dout, src_h, src_w, dx):
    """The adjoint: dx[n, c, src_h[y], src_w[x]] += dout[n, c, y, x] into a zeroed dx, one task per
    plane (so the additions never race)."""
    n_batch, channels = dx.shape[:2]
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        plane = dx[n, c]
        plane[:, :] = 0
        for y in range(src_h.shape[0]):
            row = plane[src_h[y]]
            src = dout[n, c, y]
            for col in range(src_w.shape[0]):
                row[src_w[col]] += src[col]


# Serial twins for small work (``minimaskrcnn.nn._launch.sized`` picks between the two).
im2col_serial = serial_twin(im2col)
col2im_serial = serial_twin(col2im)
nchw_to_cnl_serial = serial_twin(nchw_to_cnl)
cnl_to_nchw_bias_serial = serial_twin(cnl_to_nchw_bias)
place_stamps_serial = serial_twin(place_stamps)
gather_stamps_serial = serial_twin(gather_stamps)
max_pool2d_forward_serial = serial_twin(max_pool2d_forward)
max_pool2d_backward_serial = serial_twin(max_pool2d_backward)
upsample_nearest_forward_serial = serial_twin(upsample_nearest_forward)
upsample_nearest_backward_serial = serial_twin(upsample_nearest_backward)
