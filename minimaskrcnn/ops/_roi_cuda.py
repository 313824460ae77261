"""Numba CUDA kernels for RoIAlign and RoIPool (the ``backend="cuda"`` tier).

Imported only when a caller asks for ``backend="cuda"``. Needs the ``numba-cuda`` package and a CUDA
GPU; with the environment variable ``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported, the same
kernels run on Numba's CPU simulator (slow, but exact enough to test them without a GPU).

Layout: one GPU thread per output element (k, c, ph, pw), as torchvision's CUDA kernels do. The
forward threads write disjoint outputs; the backward threads scatter with ``cuda.atomic.add``, so the
order of additions into one input pixel is not fixed and float results may differ from the CPU tiers
in the last bits. Arithmetic runs in the arrays' dtype: one kernel is compiled per dtype, with that
dtype's constructor ``T`` captured, so float32 data is sampled and accumulated in float32.
"""

from __future__ import annotations

import functools
import math

import numpy as np

try:  # a module global, so that the simulator can swap in its fake ``cuda`` inside the kernels
    from numba import cuda
except ImportError as _exc:  # pragma: no cover - depends on the environment
    cuda = None
    _IMPORT_ERROR = str(_exc)

_THREADS = 256


def _cuda():
    """The ``numba.cuda`` module, or a RuntimeError saying what is missing."""
    if cuda is None:  # pragma: no cover - depends on the environment
        raise RuntimeError("backend='cuda' needs the numba-cuda package (pip install numba-cuda): "
                           f"{_IMPORT_ERROR}")
    if not cuda.is_available():
        raise RuntimeError("backend='cuda' needs a CUDA GPU and driver, and none is available; use "
                           "backend='numba', or set NUMBA_ENABLE_CUDASIM=1 before importing numba to "
                           "run the kernels on the simulator")
    return cuda


@functools.lru_cache(maxsize=None)
def _kernels(dtype_name: str):
    _cuda()
    import numba

    T = getattr(numba, dtype_name)

    @cuda.jit(device=True)
    def geometry(rois, k, spatial_scale, PH, PW, sampling_ratio, aligned):
        # Steps 1-3 of RoIAlign (see roi_align._roi_geometry).
        off = T(0.5) if aligned else T(0.0)
        start_x = rois[k, 1] * spatial_scale - off
        start_y = rois[k, 2] * spatial_scale - off
        roi_w = (rois[k, 3] * spatial_scale - off) - start_x
        roi_h = (rois[k, 4] * spatial_scale - off) - start_y
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

    @cuda.jit(device=True)
    def bilinear(y, x, H, W):
        # Step 5: returns y_low, y_high, x_low, x_high, w1..w4; y_low = -1 marks a dropped sample.
        if y < -1.0 or y > H or x < -1.0 or x > W:
            return -1, -1, -1, -1, T(0.0), T(0.0), T(0.0), T(0.0)
        if y <= 0:
            y = T(0.0)
        if x <= 0:
            x = T(0.0)
        y_low = int(y)
        x_low = int(x)
        if y_low >= H - 1:
            y_low = H - 1
            y_high = H - 1
            y = T(y_low)
        else:
            y_high = y_low + 1
        if x_low >= W - 1:
            x_low = W - 1
            x_high = W - 1
            x = T(x_low)
        else:
            x_high = x_low + 1
        ly = y - T(y_low)
        lx = x - T(x_low)
        hy = T(1.0) - ly
        hx = T(1.0) - lx
        return y_low, y_high, x_low, x_high, hy * hx, hy * lx, ly * hx, ly * lx

    @cuda.jit
    def align_forward(x, rois, spatial_scale, PH, PW, sampling_ratio, aligned, out):
        i = cuda.grid(1)
        K, C = out.shape[0], out.shape[1]
        if i >= K * C * PH * PW:
            return
        pw = i % PW
        ph = (i // PW) % PH
        c = (i // (PW * PH)) % C
        k = i // (PW * PH * C)
        H, W = x.shape[2], x.shape[3]
        b = int(rois[k, 0])
        sy, sx, bh, bw, gh, gw = geometry(rois, k, spatial_scale, PH, PW, sampling_ratio, aligned)
        count = T(max(gh * gw, 1))
        acc = T(0.0)
        for iy in range(gh):
            y = sy + T(ph) * bh + T(iy + 0.5) * bh / T(gh)
            for ix in range(gw):
                xx = sx + T(pw) * bw + T(ix + 0.5) * bw / T(gw)
                yl, yh, xl, xh, w1, w2, w3, w4 = bilinear(y, xx, H, W)
                if yl < 0:
                    continue
                acc += (w1 * x[b, c, yl, xl] + w2 * x[b, c, yl, xh]
                        + w3 * x[b, c, yh, xl] + w4 * x[b, c, yh, xh])
        out[k, c, ph, pw] = acc / count

    @cuda.jit
    def align_backward(dout, rois, spatial_scale, PH, PW, sampling_ratio, aligned, dx):
        i = cuda.grid(1)
        K, C = dout.shape[0], dout.shape[1]
        if i >= K * C * PH * PW:
            return
        pw = i % PW
        ph = (i // PW) % PH
        c = (i // (PW * PH)) % C
        k = i // (PW * PH * C)
        H, W = dx.shape[2], dx.shape[3]
        b = int(rois[k, 0])
        sy, sx, bh, bw, gh, gw = geometry(rois, k, spatial_scale, PH, PW, sampling_ratio, aligned)
        count = T(gh * gw)
        g = dout[k, c, ph, pw]
        for iy in range(gh):
            y = sy + T(ph) * bh + T(iy + 0.5) * bh / T(gh)
            for ix in range(gw):
                xx = sx + T(pw) * bw + T(ix + 0.5) * bw / T(gw)
                yl, yh, xl, xh, w1, w2, w3, w4 = bilinear(y, xx, H, W)
                if yl < 0:
                    continue
                cuda.atomic.add(dx, (b, c, yl, xl), g * w1 / count)
                cuda.atomic.add(dx, (b, c, yl, xh), g * w2 / count)
                cuda.atomic.add(dx, (b, c, yh, xl), g * w3 / count)
                cuda.atomic.add(dx, (b, c, yh, xh), g * w4 / count)

    @cuda.jit(device=True)
    def round_half_away(v):
        # C round (half away from zero); v − trunc(v) is exact, see roi_pool.round_half_away.
        t = math.floor(v) if v >= 0 else math.ceil(v)
        if abs(v - t) >= 0.5:
            t += 1 if v > 0 else -1
        return int(t)

    @cuda.jit
    def pool_forward(x, rois, spatial_scale, PH, PW, out, argmax):
        i = cuda.grid(1)
        K, C = out.shape[0], out.shape[1]
        if i >= K * C * PH * PW:
            return
        pw = i % PW
        ph = (i // PW) % PH
        c = (i // (PW * PH)) % C
        k = i // (PW * PH * C)
        H, W = x.shape[2], x.shape[3]
        b = int(rois[k, 0])
        x1r = round_half_away(rois[k, 1] * spatial_scale)
        y1r = round_half_away(rois[k, 2] * spatial_scale)
        x2r = round_half_away(rois[k, 3] * spatial_scale)
        y2r = round_half_away(rois[k, 4] * spatial_scale)
        bin_h = T(max(y2r - y1r + 1, 1)) / T(PH)
        bin_w = T(max(x2r - x1r + 1, 1)) / T(PW)
        hs = min(max(int(math.floor(T(ph) * bin_h)) + y1r, 0), H)
        he = min(max(int(math.ceil(T(ph + 1) * bin_h)) + y1r, 0), H)
        ws = min(max(int(math.floor(T(pw) * bin_w)) + x1r, 0), W)
        we = min(max(int(math.ceil(T(pw + 1) * bin_w)) + x1r, 0), W)
        best = T(0.0) if (he <= hs or we <= ws) else T(-3.4028234663852886e38)
        arg = -1
        for h in range(hs, he):
            for w in range(ws, we):
                v = x[b, c, h, w]
                if v > best:
                    best = v
                    arg = h * W + w
        out[k, c, ph, pw] = best
        argmax[k, c, ph, pw] = arg

    @cuda.jit
    def pool_backward(dout, bidx, argmax, dx):
        i = cuda.grid(1)
        K, C, PH, PW = dout.shape[0], dout.shape[1], dout.shape[2], dout.shape[3]
        if i >= K * C * PH * PW:
            return
        pw = i % PW
        ph = (i // PW) % PH
        c = (i // (PW * PH)) % C
        k = i // (PW * PH * C)
        a = argmax[k, c, ph, pw]
        if a != -1:
            W = dx.shape[3]
            cuda.atomic.add(dx, (bidx[k], c, a // W, a % W), dout[k, c, ph, pw])

    return align_forward, align_backward, pool_forward, pool_backward


def _launch(kernel, n, *args):
    if n > 0:
        kernel[(n + _THREADS - 1) // _THREADS, _THREADS](*args)


def roi_align_forward(x, rois, spatial_scale, PH, PW, sampling_ratio, aligned):
    """Arguments already validated by ``roi_align``; returns a host array (K, C, PH, PW)."""
    _cuda()
    fwd = _kernels(x.dtype.name)[0]
    out = cuda.to_device(np.zeros((rois.shape[0], x.shape[1], PH, PW), dtype=x.dtype))
    T = x.dtype.type
    _launch(fwd, out.size, cuda.to_device(x), cuda.to_device(rois), T(spatial_scale), PH, PW,
            sampling_ratio, aligned, out)
    return out.copy_to_host()


def roi_align_backward(dout, rois, input_shape, spatial_scale, PH, PW, sampling_ratio, aligned):
    _cuda()
    bwd = _kernels(dout.dtype.name)[1]
    dx = cuda.to_device(np.zeros(input_shape, dtype=dout.dtype))
    T = dout.dtype.type
    _launch(bwd, dout.size, cuda.to_device(dout), cuda.to_device(rois), T(spatial_scale), PH, PW,
            sampling_ratio, aligned, dx)
    return dx.copy_to_host()


def roi_pool_forward(x, rois, spatial_scale, PH, PW):
    _cuda()
    fwd = _kernels(x.dtype.name)[2]
    shape = (rois.shape[0], x.shape[1], PH, PW)
    out = cuda.to_device(np.zeros(shape, dtype=x.dtype))
    argmax = cuda.to_device(np.full(shape, -1, dtype=np.int32))
    T = x.dtype.type
    _launch(fwd, out.size, cuda.to_device(x), cuda.to_device(rois), T(spatial_scale), PH, PW, out, argmax)
    return out.copy_to_host(), argmax.copy_to_host()


def roi_pool_backward(dout, bidx, argmax, input_shape):
    _cuda()
    bwd = _kernels(dout.dtype.name)[3]
    dx = cuda.to_device(np.zeros(input_shape, dtype=dout.dtype))
    _launch(bwd, dout.size, cuda.to_device(dout), cuda.to_device(bidx), cuda.to_device(argmax), dx)
    return dx.copy_to_host()
