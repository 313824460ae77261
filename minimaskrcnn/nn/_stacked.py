"""Stacks of matrix products split between threads, each thread running whole products.

``np.matmul`` on a stack (B, M, K) @ (B, K, N) runs the B products one after another and OpenBLAS
splits every one of them over its threads, which meet at barriers inside each product. The
Winograd convolutions' stacks are 16 or 36 small products, e.g. (64, 64) @ (64, 2793) for a shapes
mask head: too small for that split to pay. Here T threads (OpenBLAS's own thread count) take
B / T whole products each, with OpenBLAS set to one thread meanwhile, and meet once, at the end.
Measured on 2 cores (best of 20): the mask head's M = U V took 3.3 ms instead of 4.1, its
dU = dM Vᵀ (long sums, small results) 3.4 ms instead of 6.8, and its whole convolution forward +
backward 13.5 ms instead of 16.9.

The thread count is OpenBLAS's, process-wide: while a stack is split, another thread's BLAS calls
also run on one thread. Only one stack is split at a time; a second caller (another Python thread)
meanwhile runs ``np.matmul`` as usual. Without numpy's OpenBLAS (another BLAS, or a build whose
thread count cannot be set) ``stacked_matmul`` is ``np.matmul``.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

# Below this many floating-point operations a stack runs as one np.matmul. Handing half of it to
# another thread costs 20–50 µs, and stacks of small products ran slower split on 2 cores: the three
# stacks of a 128-channel 8×8 F(2×2) layer (16 products of 4 MFLOP, 67 MFLOP a stack) 1.5x slower,
# a 64-channel 16×16 layer's (16 × 5 MFLOP) 1.15x; the mask head's (366 MFLOP) 0.72–0.84x.
MIN_SPLIT_FLOPS = 100_000_000


class _OpenBLASThreads:
    """Get and set the thread count of the OpenBLAS that numpy ships (numpy.libs)."""

    def __init__(self, lib: ctypes.CDLL, setter: str, getter: str):
        self.set = getattr(lib, setter)
        self.set.argtypes, self.set.restype = [ctypes.c_int], None
        self.get = getattr(lib, getter)
        self.get.argtypes, self.get.restype = [], ctypes.c_int


def _find_openblas() -> _OpenBLASThreads | None:
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for setter, getter in (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                               ("openblas_set_num_threads", "openblas_get_num_threads")):
            if hasattr(lib, setter) and hasattr(lib, getter):
                return _OpenBLASThreads(lib, setter, getter)
    return None


_blas: _OpenBLASThreads | None = None
_blas_searched = False
_split_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's threads: start a new pool (and lock) when needed."""
    global _pool, _pool_size, _split_lock
    _pool, _pool_size, _split_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def openblas_threads() -> _OpenBLASThreads | None:
    """numpy's OpenBLAS thread count (``.get()`` / ``.set(n)``), or None for another BLAS."""
    global _blas, _blas_searched
    if not _blas_searched:
        _blas, _blas_searched = _find_openblas(), True
    return _blas


def _workers(n: int) -> ThreadPoolExecutor:
    """A pool of n helper threads (kept; rebuilt when the BLAS thread count changes). Held under
    _split_lock."""
    global _pool, _pool_size
    if _pool is None or _pool_size != n:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="minimaskrcnn-matmul"), n
    return _pool


def stacked_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for a (B, M, K) or (M, K) and b (B, K, N) or (K, N), at least one
    a stack of B products (any strides: transposed views are fine) -> (B, M, N).

    1. Run as one np.matmul when BLAS has one thread, the stack has one product, it is below
       MIN_SPLIT_FLOPS, or another thread is splitting a stack right now.
    2. Otherwise cut the stack into T runs of consecutive products (T = BLAS threads, at most B),
       set BLAS to one thread, give T − 1 runs to helper threads and compute the first here;
    3. wait for all runs (also when one failed: none may still be running when the call returns or
       raises), restore BLAS's thread count.
    """
    if a.ndim != 3 and b.ndim != 3:
        return np.matmul(a, b, out=out)
    batch = a.shape[0] if a.ndim == 3 else b.shape[0]
    if out is None:
        out = np.empty((batch, a.shape[-2], b.shape[-1]), np.result_type(a, b))
    blas = openblas_threads()
    threads = blas.get() if blas is not None else 1
    parts = min(threads, batch)
    flops = 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
    if parts < 2 or flops < MIN_SPLIT_FLOPS or not _split_lock.acquire(blocking=False):  # 1.
        return np.matmul(a, b, out=out)
    try:
        bounds = [batch * i // parts for i in range(parts + 1)]

        def run(lo: int, hi: int):
            return np.matmul(a[lo:hi] if a.ndim == 3 else a, b[lo:hi] if b.ndim == 3 else b, out=out[lo:hi])

        blas.set(1)  # 2.
        try:
            pool = _workers(parts - 1)
            pending = [pool.submit(run, bounds[i], bounds[i + 1]) for i in range(1, parts)]
            try:
                run(bounds[0], bounds[1])
            finally:  # 3. (also when this thread's run failed: no run may outlive the call)
                wait(pending)
            for task in pending:
                task.result()
        finally:
            blas.set(threads)
    finally:
        _split_lock.release()
    return out

