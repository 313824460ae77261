"""Argument parsing and validation shared by RoIAlign and RoIPool.

Both ops take the RoIs the way ``torchvision.ops`` does:

* a ``(K, 5)`` array whose rows are ``(batch_index, x1, y1, x2, y2)``, or
* a list of ``(L_i, 4)`` arrays, one per image of the batch, rows ``(x1, y1, x2, y2)``; the image's
  position in the list is its batch index.

Boxes are in the input image's continuous pixel frame (no "+1"); ``spatial_scale`` maps them onto the
feature map (1/16 for a stride-16 map). Everything here runs *before* a kernel, and all three tiers
call the same checks, so they accept exactly the same inputs: a compiled kernel that indexes with a
bad batch index, an overflowed H·W or a sampling grid too big to allocate would read or write out of
bounds (or return uninitialised memory) instead of raising.

Limits (each refusal is a ValueError naming the argument):

* ``boxes · spatial_scale`` within ±2**24 in float32 (±2**53 in float64): past that the dtype can no
  longer tell neighbouring feature pixels apart, and the kernels' float → int conversions (RoIPool's
  rounding, RoIAlign's adaptive grid size) would overflow;
* at most ``MAX_SAMPLES_PER_BIN`` = 2**16 bilinear samples per RoIAlign bin (a 256 × 256 grid): the
  adaptive grid ``ceil(roi_size / bins)`` of a huge box would otherwise ask for gigabytes of scratch
  inside the parallel kernel (a fixed ``sampling_ratio`` is limited to 256 the same way);
* ``N·C·H·W`` elements of the output gradient within what an array can address (int64 bytes), and
  ``H·W < 2**31`` for RoIPool (its argmax is int32).

float16 inputs are accepted, as torchvision accepts them: boxes are rounded to float16 like the
features, the arithmetic runs in float32 and the result is cast back to float16.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from minimaskrcnn._checks import check_finite, float_array, pair

BACKENDS = ("reference", "numba", "cuda")


def check_backend(backend) -> str:
    """Return ``backend`` if it names one of the three tiers, else raise ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


# Samples per RoIAlign bin (grid_h · grid_w) above which a RoI is refused: 256 × 256.
MAX_SAMPLES_PER_BIN = 2**16


def check_features(x, name: str = "input") -> np.ndarray:
    """A float16/32/64 NCHW feature map, returned C-contiguous (the kernels index it flat)."""
    if isinstance(x, np.ndarray) and x.dtype == np.float16:
        x = x.astype(np.float32)  # float16 input: computed in float32 (see the module docstring)
    x = float_array(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {x.shape}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have H >= 1 and W >= 1, got shape {x.shape}")
    return np.ascontiguousarray(x)


def check_output_size(output_size, name: str = "output_size") -> tuple[int, int]:
    """``output_size`` as ``(PH, PW)``, both >= 1."""
    return pair(output_size, name, minimum=1)


def check_spatial_scale(spatial_scale, name: str = "spatial_scale") -> float:
    """A finite positive number (the feature map's size over the image's, e.g. 1/16)."""
    try:
        s = float(spatial_scale)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {spatial_scale!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {spatial_scale!r}")
    return s


def check_sampling_ratio(sampling_ratio, name: str = "sampling_ratio") -> int:
    """An int: > 0 is a fixed grid of that many samples per bin side, <= 0 means adaptive."""
    if isinstance(sampling_ratio, (bool, np.bool_)) or not isinstance(sampling_ratio, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {sampling_ratio!r}")
    return int(sampling_ratio)


def check_input_shape(input_shape, name: str = "input_shape", itemsize: int = 8,
                      max_plane: int | None = None) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of the forward's input: four ints (not floats, not bools), N, C >= 0, H, W >= 1,
    with N·C·H·W·itemsize addressable (< 2**63 bytes) and, if given, H·W < ``max_plane``."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 4 ints (N, C, H, W), got {input_shape!r}") from None
    if any(isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) for s in shape):
        raise TypeError(f"{name} must be a sequence of 4 ints (N, C, H, W), got {input_shape!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 0 or shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{name} must be 4 non-negative ints (N, C, H, W) with H, W >= 1, "
                         f"got {input_shape!r}")
    N, C, H, W = shape
    if N * C * H * W * itemsize >= 2**63 or H * W >= 2**62:  # Python ints: exact, no overflow
        raise ValueError(f"{name} {shape} is too large: the gradient would need N*C*H*W*{itemsize} = "
                         f"{N * C * H * W * itemsize} bytes, past what an array can address")
    if max_plane is not None and H * W >= max_plane:
        raise ValueError(f"{name} must have H*W < {max_plane}, got {shape}")
    return shape


def coordinate_limit(dtype) -> float:
    """Largest |box coordinate · spatial_scale| accepted for features of ``dtype``: 2**24 in float32,
    2**53 in float64 (the dtype's integer precision: beyond it neighbouring pixels merge)."""
    return float(2 ** (np.finfo(dtype).nmant + 1))


def check_roi_magnitudes(rois: np.ndarray, spatial_scale: float, name: str = "boxes") -> None:
    """Refuse RoIs whose corners, mapped onto the feature map in the RoIs' dtype as the kernels map
    them, lie beyond ``coordinate_limit``; the message names the first such box."""
    if rois.shape[0] == 0:
        return
    T = rois.dtype.type
    with np.errstate(over="ignore"):
        scaled = rois[:, 1:] * T(spatial_scale)
    lim = coordinate_limit(rois.dtype)
    bad = ~(np.abs(scaled) <= lim).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{k}] = {rois[k, 1:].tolist()} times spatial_scale {spatial_scale} lies "
                         f"beyond +-{lim:.0f} feature pixels, the most {rois.dtype} can resolve")


def check_sampling_grid(rois: np.ndarray, spatial_scale: float, PH: int, PW: int, sampling_ratio: int,
                        aligned: bool, name: str = "boxes") -> None:
    """Refuse a RoIAlign call whose sampling grid would exceed ``MAX_SAMPLES_PER_BIN`` in some bin.

    The grid is computed in the RoIs' dtype exactly as the kernels compute it (steps 1-3 of
    ``roi_align._roi_geometry``): ``sampling_ratio`` per side if > 0, else ceil(roi_size / bins).
    """
    if sampling_ratio > 0:
        if sampling_ratio * sampling_ratio > MAX_SAMPLES_PER_BIN:
            raise ValueError(f"sampling_ratio must be at most {math.isqrt(MAX_SAMPLES_PER_BIN)} "
                             f"({MAX_SAMPLES_PER_BIN} samples per bin), got {sampling_ratio}")
        return
    if rois.shape[0] == 0:
        return
    T = rois.dtype.type
    off = T(0.5) if aligned else T(0.0)
    s = T(spatial_scale)
    roi_w = (rois[:, 3] * s - off) - (rois[:, 1] * s - off)
    roi_h = (rois[:, 4] * s - off) - (rois[:, 2] * s - off)
    if not aligned:
        roi_w, roi_h = np.maximum(roi_w, T(1.0)), np.maximum(roi_h, T(1.0))
    gh = np.maximum(np.ceil(roi_h / T(PH)), 0).astype(np.float64)
    gw = np.maximum(np.ceil(roi_w / T(PW)), 0).astype(np.float64)
    bad = gh * gw > MAX_SAMPLES_PER_BIN
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{k}] = {rois[k, 1:].tolist()} would average {gh[k]:.0f} x {gw[k]:.0f} "
                         f"bilinear samples per bin with adaptive sampling (sampling_ratio <= 0: "
                         f"ceil(roi size / bins) per side); at most {MAX_SAMPLES_PER_BIN} per bin are "
                         "allowed: pass a positive sampling_ratio, or check the box and spatial_scale")


def _as_real_array(b, name: str) -> np.ndarray:
    if not isinstance(b, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray or a list of them, got {type(b).__name__}")
    if not (np.issubdtype(b.dtype, np.floating) or np.issubdtype(b.dtype, np.integer)):
        raise TypeError(f"{name} must have a real numeric dtype, got {b.dtype}")
    return b


def rois_from_boxes(boxes, num_images: int, dtype, name: str = "boxes") -> np.ndarray:
    """Turn ``boxes`` into a C-contiguous ``(K, 5)`` array of ``dtype`` (the features' dtype).

    Checks, each raising ValueError that names ``name``:
      1. the shape: ``(K, 5)`` for an array, ``(L_i, 4)`` for each list item (and the list has at
         most ``num_images`` items: item i is image i);
      2. every number is finite (torchvision's behaviour on NaN/inf boxes is undefined);
      3. every batch index b satisfies 0 <= b and int(b) < num_images (the kernels truncate b to
         an int, as torchvision's do).
    The cast to ``dtype`` happens first, so the checks see exactly what the kernel will see.
    """
    dtype = np.dtype(dtype)
    kernel_dtype = np.dtype(np.float32) if dtype == np.float16 else dtype
    if isinstance(boxes, (list, tuple)):
        if len(boxes) > num_images:
            raise ValueError(f"{name} is a list of {len(boxes)} per-image box arrays but the input "
                             f"holds only {num_images} images")
        parts = []
        for i, b in enumerate(boxes):
            b = _as_real_array(b, f"{name}[{i}]")
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"{name}[{i}] must have shape (L, 4) = (x1, y1, x2, y2) rows, got {b.shape}")
            part = np.empty((b.shape[0], 5), dtype=dtype)
            part[:, 0] = i
            with np.errstate(over="ignore"):
                part[:, 1:] = b
            parts.append(part)
        rois = np.concatenate(parts, axis=0) if parts else np.zeros((0, 5), dtype=dtype)
    else:
        b = _as_real_array(boxes, name)
        if b.ndim != 2 or b.shape[1] != 5:
            raise ValueError(f"{name} must have shape (K, 5) = (batch_index, x1, y1, x2, y2) rows, "
                             f"or be a list of (L, 4) arrays; got shape {b.shape}")
        with np.errstate(over="ignore"):  # a value past the dtype's range becomes inf: refused below
            rois = b.astype(dtype, copy=True)
    rois = np.ascontiguousarray(rois, dtype=kernel_dtype)  # float16: rounded to it, then float32
    check_finite(rois, name)
    if rois.shape[0]:
        bidx = rois[:, 0]
        if np.any(bidx < 0) or np.any(np.trunc(bidx) >= num_images):
            bad = bidx[(bidx < 0) | (np.trunc(bidx) >= num_images)][0]
            raise ValueError(f"{name}: batch index must lie in [0, {num_images}) for an input of "
                             f"{num_images} images, got {bad}")
    return rois


@njit(cache=True, inline="always")
def transpose_into(src, dst):
    """``dst[j, i] = src[i, j]`` for 2-D arrays, one 8×8 tile at a time: a tile reads 8 short runs of
    ``src`` and writes 8 short runs of ``dst``, all of them in cache while the tile is copied. The
    kernels work channels-last and use this to hand back channels-first results (and the RoIAlign
    backward to turn each RoI's gradient channels-last). A plain double loop writes with the stride
    of a whole row at every step; strips of 16 columns (16 × all rows) were measured 3–4× slower than
    8×8 tiles on RoIAlign's (256, 196) → (196, 256) blocks (``minimaskrcnn bench ops``)."""
    I, J = src.shape
    for i0 in range(0, I, 8):
        i1 = min(I, i0 + 8)
        for j0 in range(0, J, 8):
            j1 = min(J, j0 + 8)
            for j in range(j0, j1):
                for i in range(i0, i1):
                    dst[j, i] = src[i, j]
