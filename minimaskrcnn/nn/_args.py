"""Argument checks shared by the functional layer kit (on top of ``minimaskrcnn._checks``)."""

from __future__ import annotations

import numpy as np

from minimaskrcnn._checks import float_array


def _same_dtype(a: np.ndarray, name: str, x: np.ndarray) -> None:
    if a.dtype != x.dtype:
        raise TypeError(f"{name} must have the same dtype as x ({x.dtype}), got {a.dtype}")


def _param(a, name: str, shape: tuple, x: np.ndarray, allow_none: bool = False):
    """Check a parameter array: float, ``shape``, same dtype as ``x``; ``None`` passes if allowed."""
    if a is None and allow_none:
        return None
    a = float_array(a, name, ndim=len(shape))
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    _same_dtype(a, name, x)
    return a


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    """H' = 1 + (H + 2p − d(K − 1) − 1) // s."""
    return 1 + (size + 2 * p - d * (k - 1) - 1) // s
