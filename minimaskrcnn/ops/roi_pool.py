"""RoIPool (Fast R-CNN, Girshick 2015, §2.1): quantized max pooling of a feature map inside each RoI.

The RoI is first *rounded* to whole feature pixels, then split into PH×PW bins whose edges are
rounded again (floor for the start, ceil for the end), and each bin outputs the maximum of the pixels
it covers. Mask R-CNN's RoIAlign replaced it because these two roundings misalign features and RoI;
it stays here for the paper's ablation (Table 2c/2d) and as the contrast.

Coordinate frame: boxes (x1, y1, x2, y2) in image pixels, ``spatial_scale`` maps them onto the
feature map; the rounded RoI covers feature pixels x1r..x2r *inclusive* (the Fast R-CNN "+1").
Output shape (K, C, PH, PW); ``argmax`` (K, C, PH, PW) int32 (as torchvision's) holds, per bin, the
flat index h·W + w of the winning pixel inside its (H, W) plane, or −1 for an empty bin.

Equal to ``torchvision.ops.roi_pool`` (forward) and its autograd backward, in float32 and float64.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from minimaskrcnn.ops._roi_common import (
    check_backend,
    check_features,
    check_input_shape,
    check_output_size,
    check_roi_magnitudes,
    check_spatial_scale,
    rois_from_boxes,
    transpose_into,
)

__all__ = ["roi_pool", "roi_pool_backward"]

# torchvision starts every non-empty bin's max at -FLT_MAX (not -inf): a bin whose values are all
# <= -FLT_MAX outputs -FLT_MAX with argmax -1. We keep that, in float64 too.
_START = -float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------------------------------
# Reference tier
# --------------------------------------------------------------------------------------------------

def round_half_away(v):
    """C's ``round``: halves go away from zero (2.5 → 3, −2.5 → −3), unlike numpy's half-to-even.

    ``v − trunc(v)`` is exact in floating point, so comparing it with ½ never misrounds (the usual
    ``floor(v + 0.5)`` does: 0.49999997 + 0.5 rounds up to 1.0 in float32)."""
    t = np.trunc(v)
    if abs(v - t) >= 0.5:
        t += np.copysign(1.0, v)
    return int(t)


def _bins_reference(roi, T, spatial_scale, PH, PW, H, W):
    """Steps 1-3: the clipped pixel range [hstart, hend) × [wstart, wend) of every bin."""
    s = T(spatial_scale)
    # 1. Quantize the RoI to feature pixels (C round, half away from zero).
    x1r, y1r = round_half_away(roi[1] * s), round_half_away(roi[2] * s)
    x2r, y2r = round_half_away(roi[3] * s), round_half_away(roi[4] * s)
    # 2. Inclusive size in pixels; malformed (reversed) RoIs become 1×1.
    roi_w, roi_h = max(x2r - x1r + 1, 1), max(y2r - y1r + 1, 1)
    bin_h, bin_w = T(roi_h) / T(PH), T(roi_w) / T(PW)
    bins = {}
    for ph in range(PH):
        for pw in range(PW):
            # 3. Bin edges: floor of the start, ceil of the end (so neighbouring bins may overlap),
            #    shifted to the RoI and clipped to the map.
            hs = min(max(int(np.floor(T(ph) * bin_h)) + y1r, 0), H)
            he = min(max(int(np.ceil(T(ph + 1) * bin_h)) + y1r, 0), H)
            ws = min(max(int(np.floor(T(pw) * bin_w)) + x1r, 0), W)
            we = min(max(int(np.ceil(T(pw + 1) * bin_w)) + x1r, 0), W)
            bins[ph, pw] = hs, he, ws, we
    return int(roi[0]), bins


def _forward_reference(x, rois, spatial_scale, PH, PW):
    N, C, H, W = x.shape
    T = x.dtype.type
    K = rois.shape[0]
    out = np.zeros((K, C, PH, PW), dtype=x.dtype)
    argmax = np.full((K, C, PH, PW), -1, dtype=np.int32)
    for k in range(K):
        b, bins = _bins_reference(rois[k], T, spatial_scale, PH, PW, H, W)
        for (ph, pw), (hs, he, ws, we) in bins.items():
            empty = he <= hs or we <= ws
            for c in range(C):
                # 4. Max over the bin in row-major order; strict ">" keeps the first of equal maxima.
                #    An empty bin outputs 0 and argmax −1 (nothing to back-propagate to).
                best, arg = (T(0.0) if empty else T(_START)), -1
                for h in range(hs, he):
                    for w in range(ws, we):
                        if x[b, c, h, w] > best:
                            best, arg = x[b, c, h, w], h * W + w
                out[k, c, ph, pw] = best
                argmax[k, c, ph, pw] = arg
    return out, argmax


def _backward_reference(dout, rois, argmax, input_shape):
    N, C, H, W = input_shape
    dx = np.zeros((N, C, H * W), dtype=dout.dtype)
    K, _, PH, PW = dout.shape
    for k in range(K):
        b = int(rois[k, 0])
        for c in range(C):
            for ph in range(PH):
                for pw in range(PW):
                    # The max passes its gradient to the one pixel that won; other pixels get none.
                    a = argmax[k, c, ph, pw]
                    if a != -1:
                        dx[b, c, a] += dout[k, c, ph, pw]
    return dx.reshape(N, C, H, W)


# --------------------------------------------------------------------------------------------------
# Numba tier
# --------------------------------------------------------------------------------------------------

@njit(cache=True)
def _round_half_away_nb(v):
    t = np.trunc(v)
    if abs(v - t) >= 0.5:
        t += np.copysign(1.0, v)
    return int(t)


@njit(cache=True, parallel=True)
def _forward_numba(x, rois, T, spatial_scale, PH, PW, nt, want_argmax, out, argmax):
    """Parallel over RoIs, one chunk per thread. The map is read channels-last, so the running max
    of a bin is updated for all C channels at once (a vectorizable select per channel). The argmax
    is tracked only when asked for (the backward needs it, inference does not). ``out`` (K, C, PH·PW)
    of x's dtype and ``argmax`` (K or 0, C, PH·PW) int32 are allocated by the caller with numpy (as
    roi_align's: large numpy arrays get huge pages, so writing them costs far fewer page faults)."""
    N, C, H, W = x.shape
    K = rois.shape[0]
    P = PH * PW
    xt = np.empty((N, H * W, C), dtype=x.dtype)
    for i in prange(N * H):
        n, h = i // H, i % H
        for w in range(W):
            for c in range(C):
                xt[n, h * W + w, c] = x[n, c, h, w]
    start = T(-3.4028234663852886e38)  # -FLT_MAX, exactly representable in both dtypes
    for t in prange(nt):
        best = np.empty((P, C), dtype=x.dtype)
        arg = np.empty((P, C), dtype=np.int32)
        hs = np.empty(PH, dtype=np.int64)
        he = np.empty(PH, dtype=np.int64)
        ws = np.empty(PW, dtype=np.int64)
        we = np.empty(PW, dtype=np.int64)
        for k in range(t, K, nt):
            x1r = _round_half_away_nb(rois[k, 1] * spatial_scale)
            y1r = _round_half_away_nb(rois[k, 2] * spatial_scale)
            x2r = _round_half_away_nb(rois[k, 3] * spatial_scale)
            y2r = _round_half_away_nb(rois[k, 4] * spatial_scale)
            bin_h = T(max(y2r - y1r + 1, 1)) / T(PH)
            bin_w = T(max(x2r - x1r + 1, 1)) / T(PW)
            for ph in range(PH):
                hs[ph] = min(max(int(np.floor(T(ph) * bin_h)) + y1r, 0), H)
                he[ph] = min(max(int(np.ceil(T(ph + 1) * bin_h)) + y1r, 0), H)
            for pw in range(PW):
                ws[pw] = min(max(int(np.floor(T(pw) * bin_w)) + x1r, 0), W)
                we[pw] = min(max(int(np.ceil(T(pw + 1) * bin_w)) + x1r, 0), W)
            v = xt[int(rois[k, 0])]
            for ph in range(PH):
                for pw in range(PW):
                    p = ph * PW + pw
                    bp = best[p]
                    ap = arg[p]
                    empty = he[ph] <= hs[ph] or we[pw] <= ws[pw]
                    bp[:] = T(0.0) if empty else start
                    ap[:] = -1
                    for h in range(hs[ph], he[ph]):
                        for w in range(ws[pw], we[pw]):
                            idx = np.int32(h * W + w)
                            row = v[h * W + w]
                            if want_argmax:
                                for c in range(C):
                                    # strict ">" in row-major order: the first of equal maxima wins
                                    m = row[c] > bp[c]
                                    bp[c] = row[c] if m else bp[c]
                                    ap[c] = idx if m else ap[c]
                            else:
                                for c in range(C):
                                    bp[c] = row[c] if row[c] > bp[c] else bp[c]
            transpose_into(best, out[k])
            if want_argmax:
                transpose_into(arg, argmax[k])
    return out.reshape(K, C, PH, PW), argmax.reshape(argmax.shape[0], C, PH, PW)


@njit(cache=True, parallel=True)
def _backward_numba(dout, bidx, argmax, dx):
    """Parallel over channels: a thread adds only into its own channel planes, so no races; the
    per-pixel summation order (RoI, then bin) is the same as torchvision's serial loop. ``dx`` is
    (N, C, H·W) zeros allocated by the caller with numpy (huge pages, as in the forward)."""
    K, C, PH, PW = dout.shape
    for c in prange(C):
        for k in range(K):
            b = bidx[k]
            for ph in range(PH):
                for pw in range(PW):
                    a = argmax[k, c, ph, pw]
                    if a != -1:
                        dx[b, c, a] += dout[k, c, ph, pw]
    return dx


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def roi_pool(input, boxes, output_size, spatial_scale=1.0, *, return_argmax=False, backend="numba"):
    """RoIPool forward, equal to ``torchvision.ops.roi_pool``.

    Parameters
    ----------
    input : (N, C, H, W) float32/float64 feature map (any strides); float16 accepted (computed in
        float32, returned as float16).
    boxes : (K, 5) rows (batch_index, x1, y1, x2, y2) in image pixels, or a list of (L_i, 4) arrays.
    output_size : int or (PH, PW), each >= 1.
    spatial_scale : feature-map size / image size, finite and > 0.
    return_argmax : also return the (K, C, PH, PW) int32 winning-pixel indices (needed by backward).
    backend : "reference" | "numba" | "cuda".

    Returns
    -------
    (K, C, PH, PW) array of ``input``'s dtype, or ``(output, argmax)``.
    """
    # Every check runs here, before any tier: the three accept exactly the same inputs.
    check_backend(backend)
    dtype = getattr(input, "dtype", None)  # float16 is computed in float32 and cast back
    x = check_features(input, "input")
    PH, PW = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    rois = rois_from_boxes(boxes, x.shape[0], dtype, "boxes")
    if x.shape[2] * x.shape[3] >= 2**31:
        raise ValueError(f"input planes must have H*W < 2**31 (argmax is int32), got {x.shape}")
    # Rounded corners must fit an int64 in every tier (and mean something in the dtype).
    check_roi_magnitudes(rois, scale, "boxes")
    if backend == "reference":
        out, argmax = _forward_reference(x, rois, scale, PH, PW)
    elif backend == "cuda":
        from minimaskrcnn.ops import _roi_cuda

        out, argmax = _roi_cuda.roi_pool_forward(x, rois, scale, PH, PW)
    else:
        T = x.dtype.type
        nt = max(1, min(numba.get_num_threads(), rois.shape[0]))
        shape = (rois.shape[0], x.shape[1], PH * PW)
        out = np.empty(shape, dtype=x.dtype)
        argmax = np.empty((shape[0] if return_argmax else 0,) + shape[1:], dtype=np.int32)
        out, argmax = _forward_numba(x, rois, T, T(scale), PH, PW, nt, bool(return_argmax), out, argmax)
    out = out.astype(dtype, copy=False)
    return (out, argmax) if return_argmax else out


def roi_pool_backward(grad_output, boxes, argmax, input_shape, *, backend="numba"):
    """Gradient of ``roi_pool`` w.r.t. its input: ``dx[b, c].flat[argmax] += grad_output`` per bin.

    Parameters
    ----------
    grad_output : (K, C, PH, PW) float32/float64.
    boxes : as given to the forward (only the batch indices are used).
    argmax : (K, C, PH, PW) integer array from ``roi_pool(..., return_argmax=True)``; entries in
        [−1, H·W).
    input_shape : (N, C, H, W) of the forward's input.

    Returns
    -------
    (N, C, H, W) array of ``grad_output``'s dtype.
    """
    check_backend(backend)
    dtype = getattr(grad_output, "dtype", None)  # float16 is computed in float32 and cast back
    g = check_features(grad_output, "grad_output")
    N, C, H, W = check_input_shape(input_shape, itemsize=g.itemsize, max_plane=2**31)
    rois = rois_from_boxes(boxes, N, dtype, "boxes")
    if g.shape[0] != rois.shape[0] or g.shape[1] != C:
        raise ValueError(f"grad_output must have shape (K, C, PH, PW) with K = {rois.shape[0]} and "
                         f"C = {C}, got {g.shape}")
    if not isinstance(argmax, np.ndarray) or not np.issubdtype(argmax.dtype, np.integer):
        raise TypeError("argmax must be an integer numpy.ndarray (from roi_pool(..., return_argmax=True))")
    if argmax.shape != g.shape:
        raise ValueError(f"argmax must have the shape of grad_output {g.shape}, got {argmax.shape}")
    if argmax.size and (argmax.min() < -1 or argmax.max() >= H * W):
        raise ValueError(f"argmax entries must lie in [-1, H*W) = [-1, {H * W})")
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    if backend == "reference":
        return _backward_reference(g, rois, argmax, (N, C, H, W)).astype(dtype, copy=False)
    bidx = rois[:, 0].astype(np.int64)
    if backend == "cuda":
        from minimaskrcnn.ops import _roi_cuda

        return _roi_cuda.roi_pool_backward(g, bidx, argmax, (N, C, H, W)).astype(dtype, copy=False)
    dx = np.zeros((N, C, H * W), dtype=g.dtype)
    return _backward_numba(g, bidx, argmax, dx).reshape(N, C, H, W).astype(dtype, copy=False)
