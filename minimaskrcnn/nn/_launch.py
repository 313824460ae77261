"""Small work runs a parallel kernel's serial twin.

Starting a parallel Numba kernel on the workqueue layer (see ``minimaskrcnn/__init__``) wakes its
worker threads and waits for them: 50–150 µs on 2 cores even for an empty kernel, against under a
microsecond for a serial call (``parallel_start_cost`` measures it; on the TBB layer, picked when
installed, a start costs about 2 µs, and the threshold below, tuned on workqueue, moved the shapes
step's median within noise when lowered to 2^14 or 2^11 there, so it stays). A shapes training step
starts about 200 parallel kernels, many on small arrays (4×4 and 8×8 FPN levels, filter transforms
of a few thousand values, RoI levels that received no RoI), where the start costs more than the
work. So each parallel kernel gets a serial twin, the same Python function compiled without
``parallel=True`` (its ``prange`` loops run as plain ranges, same order within each task, same
results), and the caller picks one by the size of the work:

    sized(im2col, cols.size)(x, cols, ...)     # im2col_serial below SERIAL_BELOW elements

Measured in a shapes training step (each kernel both ways on the same arguments): a 2×2-tile
transform of 128 channels (65 K values) 48 µs serial vs 122 µs parallel, a 16×16 RoIAlign level with
no RoI 15 vs 185 µs, the 8×128×64 group norm 125 vs 260 µs; from about 10⁶ values the parallel
kernel wins (715 K-value layout copies: 179 vs 286 µs).
"""

from __future__ import annotations

import time
import types

import numpy as np
from numba import njit, prange

# Work (elements of the largest array a kernel writes or reads) below which the serial twin runs.
SERIAL_BELOW = 1 << 17

_TWINS: dict = {}


def serial_twin(kernel):
    """The serial twin of a parallel Numba kernel (a dispatcher compiled from the same Python
    function with the same options, less ``parallel=True``); registered for ``sized``. Its own name
    (``<name>_serial``) gives it its own on-disk cache entry."""
    fn = kernel.py_func
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")}
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                              fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"
    twin.__module__ = fn.__module__
    twin.__doc__ = f"``{fn.__name__}`` run serially (see ``minimaskrcnn.nn._launch``)."
    compiled = njit(cache=True, **options)(twin)
    _TWINS[kernel] = compiled
    return compiled


def sized(kernel, work: int):
    """``kernel`` for ``work`` of at least SERIAL_BELOW elements, else its serial twin."""
    return _TWINS[kernel] if work < SERIAL_BELOW else kernel


@njit(cache=True, parallel=True)
def _touch(a):
    """a[i] += 1 for each of a's few elements, one parallel task per thread: all start, no work."""
    for i in prange(a.shape[0]):
        a[i] += 1.0


def parallel_start_cost(calls: int = 2000) -> float:
    """Median seconds of ``calls`` calls of an (almost) empty parallel kernel, after one warm-up call:
    what starting a parallel kernel costs on this machine's threading layer and thread count."""
    a = np.zeros(64)
    _touch(a)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        _touch(a)
        times[i] = time.perf_counter() - t0
    return float(np.median(times))
