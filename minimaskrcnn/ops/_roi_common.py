"""Argument parsing and validation shared by RoIAlign and RoIPool.

Both ops take the RoIs the way ``torchvision.ops`` does:

* a ``(K, 5)`` array whose rows are ``(batch_index, x1, y1, x2, y2)``, or
* a list of ``(L_i, 4)`` arrays, one per image of the batch, rows ``(x1, y1, x2, y2)``; the image's
  position in the list is its batch index.

Boxes are in the input image's continuous pixel frame (no "+1"); ``spatial_scale`` maps them onto the
feature map (1/16 for a stride-16 map). Everything here runs *before* a kernel: a compiled kernel that
indexes with a bad batch index can read out of bounds instead of raising.
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


def check_features(x, name: str = "input") -> np.ndarray:
    """A float32/float64 NCHW feature map, returned C-contiguous (the kernels index it flat)."""
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


def check_input_shape(input_shape, name: str = "input_shape") -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of the forward's input, four non-negative ints."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 4 ints (N, C, H, W), got {input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 0 or shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{name} must be 4 non-negative ints (N, C, H, W) with H, W >= 1, "
                         f"got {input_shape!r}")
    return shape


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
            part[:, 1:] = b
            parts.append(part)
        rois = np.concatenate(parts, axis=0) if parts else np.zeros((0, 5), dtype=dtype)
    else:
        b = _as_real_array(boxes, name)
        if b.ndim != 2 or b.shape[1] != 5:
            raise ValueError(f"{name} must have shape (K, 5) = (batch_index, x1, y1, x2, y2) rows, "
                             f"or be a list of (L, 4) arrays; got shape {b.shape}")
        rois = b.astype(dtype, copy=True)
    rois = np.ascontiguousarray(rois)
    check_finite(rois, name)
    if rois.shape[0]:
        bidx = rois[:, 0]
        if np.any(bidx < 0) or np.any(np.trunc(bidx) >= num_images):
            bad = bidx[(bidx < 0) | (np.trunc(bidx) >= num_images)][0]
            raise ValueError(f"{name}: batch index must lie in [0, {num_images}) for an input of "
                             f"{num_images} images, got {bad}")
    return rois


@njit(cache=True)
def transpose_into(src, dst):
    """``dst[j, i] = src[i, j]`` for 2-D arrays, 16 columns of ``src`` at a time: each pass reads one
    cache line per row of ``src`` and writes 16 rows of ``dst`` sequentially. The kernels work
    channels-last and use this to hand back channels-first results (a plain double loop would read
    or write with a stride of a whole row at every step)."""
    I, J = src.shape
    for j0 in range(0, J, 16):
        j1 = min(J, j0 + 16)
        for i in range(I):
            for j in range(j0, j1):
                dst[j, i] = src[i, j]
