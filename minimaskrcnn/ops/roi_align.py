"""RoIAlign (Mask R-CNN, He et al. 2017, §3): bilinear sampling of a feature map inside each RoI.

RoIPool (Fast R-CNN) rounds the RoI and its bins to whole pixels before max-pooling; those roundings
misalign the pooled features with the RoI by up to a pixel of the *feature map*, i.e. up to 16 image
pixels on a stride-16 map, which hurts pixel-accurate masks. RoIAlign keeps every coordinate
continuous: each of the PH×PW bins of a RoI is sampled at a regular grid of points, each point's value
is bilinearly interpolated from the four nearest feature pixels, and the bin's output is the average.

Coordinate frame: boxes (x1, y1, x2, y2) are in image pixels; ``spatial_scale`` maps them onto the
feature map. Feature pixel (i, j) holds the value at continuous position (x=j, y=i) when
``aligned=True`` (pixel centres at integers after the −0.5 shift); ``aligned=False`` is the original
Detectron convention (no shift, and a RoI is never smaller than 1×1). Output shape: (K, C, PH, PW).

Three tiers with one signature, equal to ``torchvision.ops.roi_align`` and its autograd backward:
``backend="reference"`` (plain Python loops: the readable spec), ``"numba"`` (default, compiled and
parallel), ``"cuda"`` (Numba CUDA kernels in ``_roi_cuda``). All arithmetic runs in the input's dtype,
as torchvision's CPU kernel does (float32 inputs accumulate in float32).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from minimaskrcnn.ops._roi_common import (
    check_backend,
    check_features,
    check_input_shape,
    check_output_size,
    check_roi_magnitudes,
    check_sampling_grid,
    check_sampling_ratio,
    check_spatial_scale,
    rois_from_boxes,
    transpose_into,
)

__all__ = ["roi_align", "roi_align_backward"]


# --------------------------------------------------------------------------------------------------
# Reference tier: the spec, one sample at a time
# --------------------------------------------------------------------------------------------------

def _roi_geometry(roi, T, spatial_scale, PH, PW, sampling_ratio, aligned):
    """Steps 1-3 for one RoI row ``(b, x1, y1, x2, y2)``; every float is a ``T`` scalar.

    Returns (batch index, start_y, start_x, bin_h, bin_w, grid_h, grid_w, count).
    """
    # 1. Map the box onto the feature map: start = x1·s − off, end = x2·s − off, off = ½ if aligned.
    #    No rounding anywhere — that is the whole point of RoIAlign.
    off = T(0.5) if aligned else T(0.0)
    s = T(spatial_scale)
    start_x, start_y = roi[1] * s - off, roi[2] * s - off
    end_x, end_y = roi[3] * s - off, roi[4] * s - off
    # 2. RoI size. The legacy (not aligned) convention forces malformed RoIs to at least 1×1; the
    #    aligned one lets a zero-size or reversed box have size <= 0.
    roi_w, roi_h = end_x - start_x, end_y - start_y
    if not aligned:
        roi_w, roi_h = max(roi_w, T(1.0)), max(roi_h, T(1.0))
    # 3. Bin size and the sampling grid: a fixed sampling_ratio² points per bin, or adaptive
    #    ceil(roi_size / bins) per side (about one sample per feature pixel; 0 for an empty box).
    bin_h, bin_w = roi_h / T(PH), roi_w / T(PW)
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / T(PH)))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / T(PW)))
    # 4. The bin's average divides by the number of grid points — out-of-map samples included.
    count = T(max(grid_h * grid_w, 1))
    return int(roi[0]), start_y, start_x, bin_h, bin_w, grid_h, grid_w, count


def _bilinear_weights(y, x, H, W, T):
    """Step 5 for one sample point: the four pixels (y_low, y_high, x_low, x_high) and their weights
    (w1, w2, w3, w4) for (low,low), (low,high), (high,low), (high,high); ``None`` if dropped.

    Bilinear interpolation: value = hy·hx·v(y_low,x_low) + hy·lx·v(y_low,x_high)
                                  + ly·hx·v(y_high,x_low) + ly·lx·v(y_high,x_high),
    with ly = y − y_low (distance from the lower row) and hy = 1 − ly, likewise for x.
    """
    # A point more than one pixel outside the map contributes 0 (it is still counted in ``count``).
    # Exactly −1 and exactly H (or W) are kept.
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return None
    # Points in [−1, 0] read row 0; points at or past the last row read the last row (clamping, not
    # zero padding — this is the kernel's behaviour, which torchvision's Python test reference does
    # not reproduce at exactly −1 and H).
    y = max(y, T(0.0))
    x = max(x, T(0.0))
    y_low, x_low = int(y), int(x)
    if y_low >= H - 1:
        y_low = y_high = H - 1
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_low = x_high = W - 1
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - T(y_low), x - T(x_low)
    hy, hx = T(1.0) - ly, T(1.0) - lx
    return y_low, y_high, x_low, x_high, hy * hx, hy * lx, ly * hx, ly * lx


def _sample_points(start_y, start_x, bin_h, bin_w, grid_h, grid_w, ph, pw, T):
    """Grid point (iy, ix) of bin (ph, pw): y = start_y + ph·bin_h + (iy + ½)·bin_h / grid_h."""
    for iy in range(grid_h):
        y = start_y + T(ph) * bin_h + T(iy + 0.5) * bin_h / T(grid_h)
        for ix in range(grid_w):
            x = start_x + T(pw) * bin_w + T(ix + 0.5) * bin_w / T(grid_w)
            yield y, x


def _forward_reference(x, rois, spatial_scale, PH, PW, sampling_ratio, aligned):
    N, C, H, W = x.shape
    T = x.dtype.type
    out = np.zeros((rois.shape[0], C, PH, PW), dtype=x.dtype)
    for k in range(rois.shape[0]):
        b, sy, sx, bh, bw, gh, gw, count = _roi_geometry(rois[k], T, spatial_scale, PH, PW,
                                                         sampling_ratio, aligned)
        for c in range(C):
            v = x[b, c]
            for ph in range(PH):
                for pw in range(PW):
                    acc = T(0.0)
                    for y, xx in _sample_points(sy, sx, bh, bw, gh, gw, ph, pw, T):
                        s = _bilinear_weights(y, xx, H, W, T)
                        if s is None:
                            continue
                        yl, yh, xl, xh, w1, w2, w3, w4 = s
                        acc += w1 * v[yl, xl] + w2 * v[yl, xh] + w3 * v[yh, xl] + w4 * v[yh, xh]
                    # 6. The bin's value is the average over its grid points.
                    out[k, c, ph, pw] = acc / count
    return out


def _backward_reference(dout, rois, input_shape, spatial_scale, PH, PW, sampling_ratio, aligned):
    N, C, H, W = input_shape
    T = dout.dtype.type
    dx = np.zeros(input_shape, dtype=dout.dtype)
    for k in range(rois.shape[0]):
        b, sy, sx, bh, bw, gh, gw, count = _roi_geometry(rois[k], T, spatial_scale, PH, PW,
                                                         sampling_ratio, aligned)
        for c in range(C):
            for ph in range(PH):
                for pw in range(PW):
                    g = dout[k, c, ph, pw]
                    for y, xx in _sample_points(sy, sx, bh, bw, gh, gw, ph, pw, T):
                        s = _bilinear_weights(y, xx, H, W, T)
                        if s is None:
                            continue
                        # out = (1/count)·Σ_samples Σ_corners w·v, so ∂out/∂v = w/count: each sample
                        # scatters g·w/count into the same four (clamped) pixels it read from.
                        yl, yh, xl, xh, w1, w2, w3, w4 = s
                        dx[b, c, yl, xl] += g * w1 / count
                        dx[b, c, yl, xh] += g * w2 / count
                        dx[b, c, yh, xl] += g * w3 / count
                        dx[b, c, yh, xh] += g * w4 / count
    return dx


# --------------------------------------------------------------------------------------------------
# Numba tier: the same steps; per RoI the sample positions and weights are computed once and shared
# by all C channels (they do not depend on the channel).
# --------------------------------------------------------------------------------------------------

@njit(cache=True)
def _geometry_nb(roi, T, spatial_scale, PH, PW, sampling_ratio, aligned):
    """Steps 1-3 of ``_roi_geometry`` (``spatial_scale`` already a ``T``)."""
    off = T(0.5) if aligned else T(0.0)
    start_x = roi[1] * spatial_scale - off
    start_y = roi[2] * spatial_scale - off
    roi_w = (roi[3] * spatial_scale - off) - start_x
    roi_h = (roi[4] * spatial_scale - off) - start_y
    if not aligned:
        roi_w = max(roi_w, T(1.0))
        roi_h = max(roi_h, T(1.0))
    bin_h = roi_h / T(PH)
    bin_w = roi_w / T(PW)
    if sampling_ratio > 0:
        grid_h = sampling_ratio
        grid_w = sampling_ratio
    else:
        grid_h = int(math.ceil(roi_h / T(PH)))
        grid_w = int(math.ceil(roi_w / T(PW)))
    return start_y, start_x, bin_h, bin_w, grid_h, grid_w


@njit(cache=True)
def _axis_nb(T, size, start, bin_size, grid, low, high, frac, valid):
    """One axis of every bin's samples (step 4 of ``_roi_geometry`` and ``_bilinear_weights``, the
    rows' or the columns' half): for bin b and sample s of it, the coordinate
    c = start + b·bin_size + (s + ½)·bin_size / grid; valid[b, s] = c lies within one pixel of the map
    (−1 ≤ c ≤ size); low[b, s], high[b, s] the two pixels it falls between (c clamped to 0 below, both
    the last pixel at the far end) and frac[b, s] = c − low. Arrays (bins, grid), filled once per RoI:
    a sample's bilinear weights are products of its row's and its column's factors, so the rows are
    computed PH·grid_h times and the columns PW·grid_w times per RoI, not PH·PW·grid_h·grid_w times."""
    for bi in range(low.shape[0]):
        for si in range(grid):
            c = start + T(bi) * bin_size + T(si + 0.5) * bin_size / T(grid)
            valid[bi, si] = not (c < -1.0 or c > size)
            if c <= 0:
                c = T(0.0)
            lo = int(c)
            if lo >= size - 1:
                lo = size - 1
                hi = size - 1
                c = T(lo)
            else:
                hi = lo + 1
            low[bi, si], high[bi, si], frac[bi, si] = lo, hi, c - T(lo)


@njit(cache=True)
def _bin_samples_nb(T, W, ph, pw, grid_h, grid_w, ylo, yhi, fy, vy, xlo, xhi, fx, vx, pos, wts):
    """For bin (ph, pw), fill ``pos[i] = (y_low·W + x_low, y_low·W + x_high, y_high·W + x_low,
    y_high·W + x_high)`` and ``wts[i] = (w1, w2, w3, w4)`` for every sample i of the bin (iy, then
    ix), from the axes' tables (``_axis_nb``). A dropped sample (more than one pixel outside the map)
    gets position −1 and is skipped by the callers. One bin at a time, so the scratch is
    grid_h·grid_w rows, never PH·PW times that."""
    i = 0
    for iy in range(grid_h):
        ly = fy[ph, iy]
        hy = T(1.0) - ly
        ry_lo, ry_hi = ylo[ph, iy] * W, yhi[ph, iy] * W
        for ix in range(grid_w):
            if not (vy[ph, iy] and vx[pw, ix]):
                for j in range(4):
                    pos[i, j] = -1
                    wts[i, j] = T(0.0)
                i += 1
                continue
            lx = fx[pw, ix]
            hx = T(1.0) - lx
            pos[i, 0] = ry_lo + xlo[pw, ix]
            pos[i, 1] = ry_lo + xhi[pw, ix]
            pos[i, 2] = ry_hi + xlo[pw, ix]
            pos[i, 3] = ry_hi + xhi[pw, ix]
            wts[i, 0] = hy * hx
            wts[i, 1] = hy * lx
            wts[i, 2] = ly * hx
            wts[i, 3] = ly * lx
            i += 1


@njit(cache=True)
def _axes_nb(T, H, W, PH, PW, sy, sx, bh, bw, gh, gw):
    """The row and column tables of one RoI (``_axis_nb``): (ylo, yhi, fy, vy, xlo, xhi, fx, vx)."""
    ylo, yhi = np.empty((PH, gh), np.int64), np.empty((PH, gh), np.int64)
    fy, vy = np.empty((PH, gh), T), np.empty((PH, gh), np.bool_)
    xlo, xhi = np.empty((PW, gw), np.int64), np.empty((PW, gw), np.int64)
    fx, vx = np.empty((PW, gw), T), np.empty((PW, gw), np.bool_)
    _axis_nb(T, H, sy, bh, gh, ylo, yhi, fy, vy)
    _axis_nb(T, W, sx, bw, gw, xlo, xhi, fx, vx)
    return ylo, yhi, fy, vy, xlo, xhi, fx, vx


# Pixels per task of the channels-last copy: 8×8 tiles of (C, pixels) → (pixels, C), so a task
# moves whole tiles, and a map of 32×32 pixels gives 4 tasks per image (parallel even for one image).
_CL_PIXELS = 256


@njit(cache=True, parallel=True)
def _to_channels_last(x):
    """(N, C, H, W) → (N, H·W, C): the C values of one pixel become contiguous, so one bilinear
    sample turns into four contiguous multiply-adds over all channels (which the compiler vectorizes).
    One task per image and run of ``_CL_PIXELS`` pixels, copied 8×8 tiles at a time (``transpose_into``:
    a loop writing one channel at a time, with the stride of a whole map, took 0.82 ms instead of 0.6
    for 8 × 64 × 32 × 32 on 2 threads)."""
    N, C, H, W = x.shape
    xt = np.empty((N, H * W, C), dtype=x.dtype)
    x3 = x.reshape(N, C, H * W)
    runs = (H * W + _CL_PIXELS - 1) // _CL_PIXELS
    for task in prange(N * runs):
        n, r = task // runs, task % runs
        s0 = r * _CL_PIXELS
        s1 = min(H * W, s0 + _CL_PIXELS)
        transpose_into(x3[n, :, s0:s1], xt[n, s0:s1])
    return xt


@njit(cache=True, parallel=True)
def _forward_numba(x, rois, T, spatial_scale, PH, PW, sampling_ratio, aligned, nt, out):
    """Parallel over RoIs (disjoint outputs, no races). Each output element sums its samples in the
    same order as torchvision's kernel, so the results agree bit for bit. ``out`` is a (K, C, PH·PW)
    array of x's dtype, allocated by the caller with numpy (see ``roi_align``)."""
    N, C, H, W = x.shape
    K = rois.shape[0]
    P = PH * PW
    xt = _to_channels_last(x)
    for t in prange(nt):  # one chunk of RoIs per thread, so its scratch buffer is allocated once
        acc = np.empty((P, C), dtype=x.dtype)
        for k in range(t, K, nt):
            sy, sx, bh, bw, gh, gw = _geometry_nb(rois[k], T, spatial_scale, PH, PW, sampling_ratio, aligned)
            ns = max(gh, 0) * max(gw, 0)
            count = T(max(gh * gw, 1))
            pos = np.empty((ns, 4), dtype=np.int64)  # one bin's samples (ns is bounded by the checks)
            wts = np.empty((ns, 4), dtype=x.dtype)
            ylo, yhi, fy, vy, xlo, xhi, fx, vx = _axes_nb(T, H, W, PH, PW, sy, sx, bh, bw, max(gh, 0),
                                                          max(gw, 0))
            b = int(rois[k, 0])
            for p in range(P):
                _bin_samples_nb(T, W, p // PW, p % PW, gh, gw, ylo, yhi, fy, vy, xlo, xhi, fx, vx, pos, wts)
                for c in range(C):
                    acc[p, c] = 0
                for i in range(ns):
                    p1 = pos[i, 0]
                    if p1 >= 0:  # not a dropped sample
                        p2, p3, p4 = pos[i, 1], pos[i, 2], pos[i, 3]
                        w1, w2, w3, w4 = wts[i, 0], wts[i, 1], wts[i, 2], wts[i, 3]
                        # indexed straight into xt: through views of its rows (v1 = xt[b, p1]) the
                        # compiler did not vectorize this loop (the forward ran 1.3x slower)
                        for c in range(C):
                            acc[p, c] += (w1 * xt[b, p1, c] + w2 * xt[b, p2, c] + w3 * xt[b, p3, c]
                                          + w4 * xt[b, p4, c])
                for c in range(C):
                    acc[p, c] = acc[p, c] / count
            transpose_into(acc, out[k])
    return out.reshape(K, C, PH, PW)


@njit(cache=True, parallel=True)
def _backward_numba(dout, rois, T, spatial_scale, PH, PW, sampling_ratio, aligned, block, dxt, dx):
    """Scatter without races: the parallel loop runs over blocks of ``block`` channels and a thread
    writes only into its own channels of the gradient. Each block recomputes the (cheap,
    channel-free) sample weights of every RoI. Per input pixel the additions come in torchvision's
    order (RoI, bin, sample, corner), so the result agrees with it bit for bit. ``dxt`` (N, H·W, C)
    zeros and ``dx`` (N, C, H·W) are allocated by the caller with numpy (see ``roi_align_backward``)."""
    K, C = dout.shape[0], dout.shape[1]
    P = PH * PW
    N, H, W = dx.shape[0], dx.shape[2], dx.shape[3]
    g3 = dout.reshape(K, C, P)
    nblocks = (C + block - 1) // block
    for blk in prange(nblocks):
        c0 = blk * block
        cb = min(C, c0 + block) - c0
        gbuf = np.empty((P, cb), dtype=dout.dtype)
        for k in range(K):
            sy, sx, bh, bw, gh, gw = _geometry_nb(rois[k], T, spatial_scale, PH, PW, sampling_ratio,
                                                  aligned)
            ns = max(gh, 0) * max(gw, 0)
            count = T(gh * gw)
            # Dividing by a power of two and multiplying by its reciprocal give identical results
            # (both are exact scalings before the one rounding), and the multiply is much faster.
            inv = T(1.0) / count
            pow2 = ns > 0 and (gh * gw) & (gh * gw - 1) == 0
            pos = np.empty((ns, 4), dtype=np.int64)  # one bin's samples
            wts = np.empty((ns, 4), dtype=dout.dtype)
            ylo, yhi, fy, vy, xlo, xhi, fx, vx = _axes_nb(T, H, W, PH, PW, sy, sx, bh, bw, max(gh, 0),
                                                          max(gw, 0))
            transpose_into(g3[k, c0:c0 + cb], gbuf)  # this block's bin gradients, channels last
            d = dxt[int(rois[k, 0])]
            for p in range(P):
                _bin_samples_nb(T, W, p // PW, p % PW, gh, gw, ylo, yhi, fy, vy, xlo, xhi, fx, vx, pos, wts)
                g = gbuf[p]
                for i in range(ns):
                    if pos[i, 0] >= 0:
                        for j in range(4):
                            w = wts[i, j]
                            row = d[pos[i, j], c0:c0 + cb]
                            if pow2:
                                for c in range(cb):
                                    row[c] += g[c] * w * inv
                            else:
                                for c in range(cb):
                                    row[c] += g[c] * w / count
    dx3 = dx.reshape(N, C, H * W)
    for n in prange(N):
        transpose_into(dxt[n], dx3[n])
    return dx


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, *,
              backend="numba"):
    """RoIAlign forward, equal to ``torchvision.ops.roi_align``.

    Parameters
    ----------
    input : (N, C, H, W) float32 or float64 feature map (any strides; copied to C order if needed);
        float16 is accepted (computed in float32, returned as float16, as torchvision accepts it).
    boxes : (K, 5) array of rows (batch_index, x1, y1, x2, y2) in image pixels, or a list of N_i×4
        arrays (x1, y1, x2, y2), one per image. Cast to ``input``'s dtype.
    output_size : int or (PH, PW), bins per RoI side, each >= 1.
    spatial_scale : feature-map size / image size (e.g. 1/16), finite and > 0.
    sampling_ratio : grid points per bin side; <= 0 means adaptive, ceil(roi_size / bins).
    aligned : shift the box by −0.5 feature pixels (pixel-centre convention, Detectron2's default).
    backend : "reference" | "numba" | "cuda".

    Returns
    -------
    (K, C, PH, PW) array of ``input``'s dtype. Algorithm per RoI and bin: see the numbered steps in
    ``_roi_geometry`` and ``_bilinear_weights``.
    """
    # Every check runs here, before any tier: the three accept exactly the same inputs.
    check_backend(backend)
    dtype = getattr(input, "dtype", None)  # float16 is computed in float32 and cast back
    x = check_features(input, "input")
    PH, PW = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    sr = check_sampling_ratio(sampling_ratio)
    rois = rois_from_boxes(boxes, x.shape[0], dtype, "boxes")
    aligned = bool(aligned)
    check_roi_magnitudes(rois, scale, "boxes")
    check_sampling_grid(rois, scale, PH, PW, sr, aligned, "boxes")
    if backend == "reference":
        out = _forward_reference(x, rois, scale, PH, PW, sr, aligned)
    elif backend == "cuda":
        from minimaskrcnn.ops import _roi_cuda

        out = _roi_cuda.roi_align_forward(x, rois, scale, PH, PW, sr, aligned)
    else:
        T = x.dtype.type
        nt = max(1, min(numba.get_num_threads(), rois.shape[0]))  # one chunk of RoIs per thread
        # The output is allocated by numpy, not inside the kernel: numpy asks the kernel for
        # transparent huge pages on large arrays, so first-touching a 100 MB output costs a few
        # page faults instead of tens of thousands (measured: about 3x less time writing it).
        buf = np.empty((rois.shape[0], x.shape[1], PH * PW), dtype=x.dtype)
        if rois.shape[0] == 0:  # an FPN level that received no RoI: no kernel (nor its layout copy)
            out = buf.reshape(0, x.shape[1], PH, PW)
        else:
            out = _forward_numba(x, rois, T, T(scale), PH, PW, sr, aligned, nt, buf)
    return out.astype(dtype, copy=False)


def roi_align_backward(grad_output, boxes, input_shape, output_size, spatial_scale=1.0, sampling_ratio=-1,
                       aligned=False, *, backend="numba"):
    """Gradient of ``roi_align`` with respect to its input (the boxes get none, as in torchvision).

    Parameters
    ----------
    grad_output : (K, C, PH, PW) float32/float64, the gradient of the loss w.r.t. the forward output.
    boxes, output_size, spatial_scale, sampling_ratio, aligned : exactly as given to the forward.
    input_shape : (N, C, H, W) of the forward's input.

    Returns
    -------
    (N, C, H, W) array of ``grad_output``'s dtype: every bin's gradient, divided by the bin's sample
    count, scattered with the bilinear weights into the pixels its samples read.
    """
    check_backend(backend)
    dtype = getattr(grad_output, "dtype", None)  # float16 is computed in float32 and cast back
    g = check_features(grad_output, "grad_output")
    N, C, H, W = check_input_shape(input_shape, itemsize=g.itemsize)
    PH, PW = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    sr = check_sampling_ratio(sampling_ratio)
    rois = rois_from_boxes(boxes, N, dtype, "boxes")
    if g.shape != (rois.shape[0], C, PH, PW):
        raise ValueError(f"grad_output must have shape (K, C, PH, PW) = {(rois.shape[0], C, PH, PW)}, "
                         f"got {g.shape}")
    aligned = bool(aligned)
    check_roi_magnitudes(rois, scale, "boxes")
    check_sampling_grid(rois, scale, PH, PW, sr, aligned, "boxes")
    if backend == "reference":
        dx = _backward_reference(g, rois, (N, C, H, W), scale, PH, PW, sr, aligned)
    elif backend == "cuda":
        from minimaskrcnn.ops import _roi_cuda

        dx = _roi_cuda.roi_align_backward(g, rois, (N, C, H, W), scale, PH, PW, sr, aligned)
    else:
        T = g.dtype.type
        # One block of channels per thread (each block recomputes the sample weights, so no more).
        nblocks = max(1, min(-(-C // 16), numba.get_num_threads()))
        block = -(-C // nblocks)
        # The two gradient buffers come from numpy, not from inside the kernel: numpy's allocator
        # backs large arrays with huge pages, so the kernel's first writes fault far fewer pages
        # (as in ``roi_align``'s forward).
        if rois.shape[0] == 0:  # no RoI: no gradient
            return np.zeros((N, C, H, W), dtype=g.dtype).astype(dtype, copy=False)
        dxt = np.zeros((N, H * W, C), dtype=g.dtype)
        dx = np.empty((N, C, H, W), dtype=g.dtype)
        dx = _backward_numba(g, rois, T, T(scale), PH, PW, sr, aligned, block, dxt, dx)
    return dx.astype(dtype, copy=False)
