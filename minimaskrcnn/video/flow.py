"""Dense optical flow by pyramidal Lucas–Kanade, backward warping, forward–backward consistency.

Convention: ``flow`` is an (H, W, 2) float32 array of (dx, dy) in pixels. The flow *from* image I0
*to* image I1 says where each pixel of I0 is found in I1: I0(x, y) ≈ I1(x + dx, y + dy). Backward
warping pulls I1 back onto I0's grid with that flow: warp(I1, flow)(x, y) = I1(x + dx, y + dy).

Lucas–Kanade (Lucas & Kanade 1981; Bouguet's pyramidal scheme): around each pixel the flow is taken
constant over a Gaussian window, so the brightness-constancy equations Ix·du + Iy·dv + It = 0 of the
window's pixels give the 2×2 normal equations

    [ΣIx²   ΣIxIy] [du]     [ΣIxIt]
    [ΣIxIy  ΣIy² ] [dv] = − [ΣIyIt]      (sums weighted by the window, over colour channels too)

A small ridge term λ on the diagonal keeps flat regions (no texture: singular matrix) at du = 0
instead of blowing up. Large motions are handled coarse to fine on a Gaussian pyramid: the flow found
on a coarse level, doubled, is the starting point one level finer, where I1 is warped by it and only
the residual motion is solved for (a few iterations per level), followed by a 5×5 median filter of the
flow that removes isolated outliers at motion boundaries (Sun, Roth & Black 2010).

Hot loops (separable filtering, warping, the per-pixel 2×2 solves, the median) are Numba kernels,
parallel over image rows (``prange``): at 854 × 480 a frame is worth spreading over the cores. Every
row is independent, so the result does not depend on the number of threads. Large frames are best
handled on a reduced copy (``working_factor``, ``downsample``, ``upsample_flow``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["lucas_kanade", "warp", "forward_backward_consistency", "to_float_image", "downsample",
           "upsample_flow", "working_factor", "gaussian_blur"]

# Binomial 5-tap kernel: the Gaussian pyramid's anti-alias filter (Burt & Adelson).
_PYR_KERNEL = np.array([1, 4, 6, 4, 1], np.float32) / 16


def _gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(2.5 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


# --------------------------------------------------------------------------------------------- kernels
@njit(cache=True, parallel=True)
def _filter_rows(img, kernel):
    """Correlate every row of img (H, W, C) with kernel (odd length); borders replicate."""
    h, w, c = img.shape
    r = kernel.size // 2
    out = np.empty_like(img)
    for y in prange(h):
        for x in range(w):
            for ch in range(c):
                acc = 0.0
                for k in range(-r, r + 1):
                    xx = min(max(x + k, 0), w - 1)
                    acc += kernel[k + r] * img[y, xx, ch]
                out[y, x, ch] = acc
    return out


@njit(cache=True, parallel=True)
def _filter_cols(img, kernel):
    h, w, c = img.shape
    r = kernel.size // 2
    out = np.empty_like(img)
    for y in prange(h):
        for x in range(w):
            for ch in range(c):
                acc = 0.0
                for k in range(-r, r + 1):
                    yy = min(max(y + k, 0), h - 1)
                    acc += kernel[k + r] * img[yy, x, ch]
                out[y, x, ch] = acc
    return out


@njit(cache=True, parallel=True)
def _warp_kernel(img, flow):
    """out[y, x] = img(y + flow[y, x, 1], x + flow[y, x, 0]) bilinear; valid = sample inside the image."""
    h, w, c = img.shape
    out = np.empty((flow.shape[0], flow.shape[1], c), img.dtype)
    valid = np.empty((flow.shape[0], flow.shape[1]), np.bool_)
    for y in prange(flow.shape[0]):
        for x in range(flow.shape[1]):
            sx = x + flow[y, x, 0]
            sy = y + flow[y, x, 1]
            valid[y, x] = (sx >= 0.0) and (sx <= w - 1.0) and (sy >= 0.0) and (sy <= h - 1.0)
            # Outside samples are clamped to the border (replicate), and flagged invalid.
            sx = min(max(sx, 0.0), w - 1.0)
            sy = min(max(sy, 0.0), h - 1.0)
            x0 = min(int(np.floor(sx)), w - 2) if w > 1 else 0
            y0 = min(int(np.floor(sy)), h - 2) if h > 1 else 0
            fx = sx - x0
            fy = sy - y0
            x1 = min(x0 + 1, w - 1)
            y1 = min(y0 + 1, h - 1)
            for ch in range(c):
                top = img[y0, x0, ch] * (1 - fx) + img[y0, x1, ch] * fx
                bot = img[y1, x0, ch] * (1 - fx) + img[y1, x1, ch] * fx
                out[y, x, ch] = top * (1 - fy) + bot * fy
    return out, valid


@njit(cache=True, parallel=True)
def _lk_terms(i0, i1w):
    """Per-pixel products for the LK normal equations, summed over channels: (H, W, 5).

    Spatial gradients are central differences of the average of I0 and the warped I1 (a symmetric
    choice that is more accurate than either image alone); It = I1w − I0.
    """
    h, w, c = i0.shape
    out = np.zeros((h, w, 5), i0.dtype)
    for y in prange(h):
        ym, yp = max(y - 1, 0), min(y + 1, h - 1)
        for x in range(w):
            xm, xp = max(x - 1, 0), min(x + 1, w - 1)
            for ch in range(c):
                ix = 0.25 * (i0[y, xp, ch] + i1w[y, xp, ch] - i0[y, xm, ch] - i1w[y, xm, ch])
                iy = 0.25 * (i0[yp, x, ch] + i1w[yp, x, ch] - i0[ym, x, ch] - i1w[ym, x, ch])
                it = i1w[y, x, ch] - i0[y, x, ch]
                out[y, x, 0] += ix * ix
                out[y, x, 1] += ix * iy
                out[y, x, 2] += iy * iy
                out[y, x, 3] += ix * it
                out[y, x, 4] += iy * it
    return out


@njit(cache=True, parallel=True)
def _lk_solve(sums, flow, ridge, max_step):
    """flow += −(A + ridge·I)⁻¹ b per pixel, A = [[s0, s1], [s1, s2]], b = (s3, s4); step clipped."""
    h, w = flow.shape[:2]
    for y in prange(h):
        for x in range(w):
            a11 = sums[y, x, 0] + ridge
            a12 = sums[y, x, 1]
            a22 = sums[y, x, 2] + ridge
            b1 = sums[y, x, 3]
            b2 = sums[y, x, 4]
            det = a11 * a22 - a12 * a12
            du = -(a22 * b1 - a12 * b2) / det
            dv = -(a11 * b2 - a12 * b1) / det
            du = min(max(du, -max_step), max_step)
            dv = min(max(dv, -max_step), max_step)
            flow[y, x, 0] += du
            flow[y, x, 1] += dv


@njit(cache=True)
def _median5_reference(flow):
    """5×5 median of each flow component (window clipped at the borders; of an even count the upper
    of the two middle values): the plain loop, an insertion sort of each window. ``_median5`` is the
    same by a selection, tested equal."""
    h, w, c = flow.shape
    out = np.empty_like(flow)
    buf = np.empty(25, flow.dtype)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                n = 0
                for yy in range(max(y - 2, 0), min(y + 3, h)):
                    for xx in range(max(x - 2, 0), min(x + 3, w)):
                        v = flow[yy, xx, ch]
                        i = n
                        while i > 0 and buf[i - 1] > v:
                            buf[i] = buf[i - 1]
                            i -= 1
                        buf[i] = v
                        n += 1
                out[y, x, ch] = buf[n // 2]
    return out


@njit(cache=True, parallel=True)
def _median5(flow):
    """``_median5_reference`` by Wirth's selection: the (n // 2)-th smallest of each window's n values
    is found by partitioning, about 2n comparisons instead of the sort's n²/4. A selection returns
    exactly the value the sort puts at n // 2, so the two are equal bit for bit."""
    h, w, c = flow.shape
    out = np.empty_like(flow)
    for y in prange(h):
        buf = np.empty(25, flow.dtype)
        y_lo, y_hi = max(y - 2, 0), min(y + 3, h)
        for x in range(w):
            x_lo, x_hi = max(x - 2, 0), min(x + 3, w)
            for ch in range(c):
                # 1. Gather the window.
                n = 0
                for yy in range(y_lo, y_hi):
                    for xx in range(x_lo, x_hi):
                        buf[n] = flow[yy, xx, ch]
                        n += 1
                # 2. Wirth: partition buf[lo..hi] around buf[k] until k is in place.
                k = n // 2
                lo, hi = 0, n - 1
                while lo < hi:
                    pivot = buf[k]
                    i, j = lo, hi
                    while i <= j:
                        while buf[i] < pivot:
                            i += 1
                        while pivot < buf[j]:
                            j -= 1
                        if i <= j:
                            t = buf[i]
                            buf[i] = buf[j]
                            buf[j] = t
                            i += 1
                            j -= 1
                    if j < k:
                        lo = i
                    if k < i:
                        hi = j
                out[y, x, ch] = buf[k]
    return out


# --------------------------------------------------------------------------------------------- helpers
def to_float_image(image, name: str = "image") -> np.ndarray:
    """(H, W) or (H, W, C) uint8 (0..255) or float image → (H, W, C) float32 scaled to about 0..1."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[0] < 2 or a.shape[1] < 2:
        raise ValueError(f"{name} must be an (H, W) or (H, W, C) image with H, W >= 2, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite")
        return a.astype(np.float32)
    raise TypeError(f"{name} must be uint8 or float32/float64, got {a.dtype}")


def _check_flow(flow, shape, name="flow") -> np.ndarray:
    f = np.asarray(flow)
    if f.ndim != 3 or f.shape[2] != 2:
        raise ValueError(f"{name} must have shape (H, W, 2), got {f.shape}")
    if shape is not None and f.shape[:2] != tuple(shape):
        raise ValueError(f"{name} must have spatial shape {tuple(shape)}, got {f.shape[:2]}")
    if f.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {f.dtype}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} must be finite")
    return np.ascontiguousarray(f, dtype=np.float32)


def _blur(img, kernel):
    return _filter_cols(_filter_rows(img, kernel), kernel)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """img (H, W, C) float32 smoothed by a separable Gaussian of ``sigma`` pixels (borders replicate)."""
    return _blur(np.ascontiguousarray(img, np.float32), _gaussian_kernel(float(sigma)))


def _pyramid(img, levels):
    pyr = [img]
    for _ in range(levels - 1):
        pyr.append(np.ascontiguousarray(_blur(pyr[-1], _PYR_KERNEL)[::2, ::2]))
    return pyr


def _resample(coarse, h, w):
    """Sample an (hc, wc, C) field at fine pixel (y, x) → coarse (y/2, x/2), bilinear."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hc, wc = coarse.shape[:2]
    sx = np.clip(xx / 2, 0, wc - 1)
    sy = np.clip(yy / 2, 0, hc - 1)
    x0 = np.minimum(np.floor(sx).astype(np.int64), max(wc - 2, 0))
    y0 = np.minimum(np.floor(sy).astype(np.int64), max(hc - 2, 0))
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    x1 = np.minimum(x0 + 1, wc - 1)
    y1 = np.minimum(y0 + 1, hc - 1)
    top = coarse[y0, x0] * (1 - fx) + coarse[y0, x1] * fx
    bot = coarse[y1, x0] * (1 - fx) + coarse[y1, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


# --------------------------------------------------------------------------------------------- public
def lucas_kanade(image0, image1, *, levels: int | None = None, window_sigma: float = 2.0,
                 iterations: int = 4, ridge: float = 1e-4, median: bool = True,
                 init_flow=None) -> np.ndarray:
    """Dense flow from image0 to image1 by pyramidal Lucas–Kanade.

    Inputs:
        image0, image1: (H, W) or (H, W, C) images, uint8 (0..255) or float (about 0..1), same shape.
        levels: pyramid levels; None = as many as keep the coarsest side ≥ 16 pixels (4 for 128×128,
            which reaches motions of roughly 2³ × 2 = 16 pixels).
        window_sigma: standard deviation (pixels) of the Gaussian LK window.
        iterations: warp-and-solve iterations per level.
        ridge: λ added to the diagonal of the 2×2 system (units: squared intensity gradient, summed
            over channels and weighted by the window).
        median: apply a 5×5 median filter to the flow after each level.
        init_flow: optional (H, W, 2) starting flow on the finest level (e.g. the previous frame's).
    Returns: (H, W, 2) float32 flow (dx, dy) with image0(x, y) ≈ image1(x + dx, y + dy).
    """
    i0 = to_float_image(image0, "image0")
    i1 = to_float_image(image1, "image1")
    if i0.shape != i1.shape:
        raise ValueError(f"image0 and image1 must have the same shape, got {i0.shape} and {i1.shape}")
    h, w = i0.shape[:2]
    if levels is None:
        levels = 1
        while min(h, w) / 2**levels >= 16:
            levels += 1
    if int(levels) < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    levels = int(levels)
    if init_flow is not None:
        init_flow = _check_flow(init_flow, (h, w), "init_flow")
    window = _gaussian_kernel(window_sigma)

    # 1. Gaussian pyramids of both images, level 0 = full resolution.
    p0, p1 = _pyramid(np.ascontiguousarray(i0), levels), _pyramid(np.ascontiguousarray(i1), levels)
    flow = None
    for lev in range(levels - 1, -1, -1):
        a, b = p0[lev], p1[lev]
        lh, lw = a.shape[:2]
        # 2. Starting flow: zero at the top, else the coarser level's flow resampled and doubled.
        if flow is None:
            flow = np.zeros((lh, lw, 2), np.float32)
            if init_flow is not None:
                flow = _resample(init_flow, lh, lw) if lev == 0 else np.ascontiguousarray(
                    init_flow[:: 2**lev, :: 2**lev] / 2**lev, dtype=np.float32)
        else:
            flow = 2.0 * _resample(flow, lh, lw)
        flow = np.ascontiguousarray(flow, dtype=np.float32)
        for _ in range(int(iterations)):
            # 3. Warp I1 back by the current flow; solve the windowed LK system for the residual.
            b_warped, _ = _warp_kernel(b, flow)
            sums = _blur(_lk_terms(a, b_warped), window)
            _lk_solve(sums, flow, np.float32(ridge), np.float32(2.0))
        if median:
            flow = _median5(flow)
    return flow


def warp(image, flow) -> tuple[np.ndarray, np.ndarray]:
    """Backward warping with bilinear sampling: out(x, y) = image(x + dx, y + dy).

    Inputs: image (H, W) or (H, W, C) (any real dtype; computed in float32, or float64 if given),
    flow (H, W, 2) float (dx, dy). Returns (out with image's layout as float, valid (H, W) bool: the
    sample point lies inside [0, W−1] × [0, H−1]; outside, the border value is used).
    """
    a = np.asarray(image)
    squeeze = a.ndim == 2
    if a.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {a.shape}")
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32)
    img = np.ascontiguousarray(a[..., None] if squeeze else a)
    f = _check_flow(flow, img.shape[:2])
    out, valid = _warp_kernel(img, f.astype(img.dtype))
    return (out[..., 0] if squeeze else out), valid


def forward_backward_consistency(flow_fw, flow_bw, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """Pixels of I0 whose forward flow is confirmed by the backward flow (Sundaram et al. 2010).

    flow_fw: (H, W, 2) flow I0 → I1; flow_bw: (H, W, 2) flow I1 → I0. For a pixel x of I0 let
    w_b = flow_bw(x + flow_fw(x)) (bilinear). Consistent when the round trip comes back:
        |flow_fw(x) + w_b|² < alpha · (|flow_fw(x)|² + |w_b|²) + beta,
    and the point x + flow_fw(x) lies inside I1. Inconsistent pixels are typically occluded in I1
    (or the flow is wrong there). Returns (H, W) bool.
    """
    fw = _check_flow(flow_fw, None, "flow_fw")
    bw = _check_flow(flow_bw, fw.shape[:2], "flow_bw")
    wb, inside = _warp_kernel(bw, fw)
    s = fw + wb
    lhs = (s**2).sum(-1)
    rhs = alpha * ((fw**2).sum(-1) + (wb**2).sum(-1)) + beta
    return (lhs < rhs) & inside


# --------------------------------------------------------------------------------------------- scale
def working_factor(shape, flow_size: int | None) -> int:
    """Integer factor f ≥ 1 that brings the longer side of ``shape`` (H, W) to at most ``flow_size``
    pixels (None: 1). Example: 854 × 480 with flow_size 320 → f = 3 (285 × 160); 128 × 128 → 1."""
    if flow_size is None:
        return 1
    if int(flow_size) < 16:
        raise ValueError(f"flow_size must be >= 16 pixels, got {flow_size}")
    return max(1, int(np.ceil(max(shape[0], shape[1]) / int(flow_size))))


def downsample(img: np.ndarray, f: int) -> np.ndarray:
    """(H, W, C) float image → (ceil(H/f), ceil(W/f), C): the mean of each f × f block (the last row
    and column of blocks replicate the border). f = 1 returns the image unchanged."""
    if f == 1:
        return img
    h, w = img.shape[:2]
    hc, wc = -(-h // f), -(-w // f)
    padded = np.pad(img, ((0, hc * f - h), (0, wc * f - w), (0, 0)), mode="edge")
    return np.ascontiguousarray(padded.reshape(hc, f, wc, f, -1).mean((1, 3)), dtype=np.float32)


@njit(cache=True, parallel=True)
def _upsample_flow_kernel(flow, f, h, w):
    """Bilinear upsampling of a coarse flow by f: fine pixel centre x + ½ sits at coarse (x + ½)/f,
    i.e. coarse pixel coordinate (x + ½)/f − ½; the vectors are multiplied by f."""
    hc, wc = flow.shape[0], flow.shape[1]
    out = np.empty((h, w, 2), np.float32)
    for y in prange(h):
        sy = min(max((y + 0.5) / f - 0.5, 0.0), hc - 1.0)
        y0 = min(int(sy), max(hc - 2, 0))
        y1 = min(y0 + 1, hc - 1)
        fy = sy - y0
        for x in range(w):
            sx = min(max((x + 0.5) / f - 0.5, 0.0), wc - 1.0)
            x0 = min(int(sx), max(wc - 2, 0))
            x1 = min(x0 + 1, wc - 1)
            fx = sx - x0
            for c in range(2):
                top = flow[y0, x0, c] * (1 - fx) + flow[y0, x1, c] * fx
                bot = flow[y1, x0, c] * (1 - fx) + flow[y1, x1, c] * fx
                out[y, x, c] = f * (top * (1 - fy) + bot * fy)
    return out


def _upsample_flow_reference(flow: np.ndarray, f: int, shape) -> np.ndarray:
    """``_upsample_flow_kernel`` in NumPy: the coarse coordinates of every fine pixel centre, then
    bilinear interpolation (``_resample``'s scheme with the factor f and the half-pixel offset)."""
    hc, wc = flow.shape[:2]
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    sy = np.clip((yy + 0.5) / f - 0.5, 0, hc - 1)
    sx = np.clip((xx + 0.5) / f - 0.5, 0, wc - 1)
    y0 = np.minimum(sy.astype(np.int64), max(hc - 2, 0))
    x0 = np.minimum(sx.astype(np.int64), max(wc - 2, 0))
    y1, x1 = np.minimum(y0 + 1, hc - 1), np.minimum(x0 + 1, wc - 1)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    top = flow[y0, x0] * (1 - fx) + flow[y0, x1] * fx
    bot = flow[y1, x0] * (1 - fx) + flow[y1, x1] * fx
    return (f * (top * (1 - fy) + bot * fy)).astype(np.float32)


def upsample_flow(flow: np.ndarray, f: int, shape) -> np.ndarray:
    """A flow computed on ``downsample(·, f)`` images → (H, W, 2) flow of the full-size (H, W) frames."""
    flow = _check_flow(flow, None)
    if f == 1:
        return flow
    return _upsample_flow_kernel(flow, np.float32(f), int(shape[0]), int(shape[1]))
