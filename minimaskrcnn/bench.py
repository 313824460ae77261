"""``minimaskrcnn bench``: our kernels timed against the reference in the same run, as ratios.

Both sides run in this process with the same thread count (Numba's and torch's thread pools are
both set to ``threads``). Each timing is the best of ``repeat`` runs after one warm-up call, so
Numba's one-time compilation is reported separately and never counted in a ratio.
"""

from __future__ import annotations

import time


def best_time(fn, repeat: int = 5) -> float:
    """Seconds taken by the fastest of ``repeat`` calls of ``fn()`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _import_torch(threads: int):
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        raise SystemExit("minimaskrcnn bench needs torch and torchvision: pip install -e \".[test]\"") from None
    torch.set_num_threads(threads)
    return torch


def _set_numba_threads(threads: int) -> None:
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def report(name: str, ours: float, theirs: float) -> None:
    print(f"{name:<48s} ours {ours * 1e3:9.2f} ms   torch {theirs * 1e3:9.2f} ms   "
          f"ours/torch {ours / theirs:6.2f}x   (torch/ours {theirs / ours:6.2f}x)")


TARGETS = {}  # name -> function(threads, repeat); filled in below, one section per target


# ---- conv: conv2d forward + backward against torch ------------------------------------------------

def _set_blas_threads(threads: int) -> str:
    """Ask numpy's OpenBLAS for ``threads`` threads (best effort; reports what it found)."""
    import ctypes
    import glob
    import os

    import numpy as np

    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "*openblas*.so*")):
        lib = ctypes.CDLL(path)
        for setter, getter in (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                               ("openblas_set_num_threads", "openblas_get_num_threads")):
            if hasattr(lib, setter) and hasattr(lib, getter):
                getattr(lib, setter)(ctypes.c_int(threads))
                return f"OpenBLAS threads {getattr(lib, getter)()}"
    return "BLAS thread count not controlled (set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)"


def _interleaved_best(fns: dict, repeat: int, block: int = 2) -> dict:
    """Best time of each function, run in alternating blocks of ``block`` calls, ``repeat`` rounds.

    Alternating blocks (rather than all of one side, then all of the other) spreads the noise of a
    shared machine over both sides; running a block rather than single calls lets each side's
    thread pool settle before its timed calls count.
    """
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up: compile, allocate scratch buffers
    for _ in range(repeat):
        for name, fn in fns.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_conv(threads: int, repeat: int) -> None:
    """conv2d forward + backward (float32, 3×3, pad 1, stride 1, bias) against torch on CPU."""
    import numpy as np
    import torch

    from minimaskrcnn.nn import functional as F

    print(f"conv2d forward+backward, float32, {threads} thread(s) each; "
          f"torch {torch.__version__}, {_set_blas_threads(threads)}")
    t0 = time.perf_counter()
    x = np.ones((1, 2, 5, 5), np.float32)
    for dtype in (np.float32, np.float64):
        _, cache = F.conv2d_forward(x.astype(dtype), np.ones((2, 2, 3, 3), dtype), None, padding=1)
        F.conv2d_backward(np.ones((1, 2, 5, 5), dtype), cache)
    print(f"first call (Numba compile or load from cache, float32 + float64): "
          f"{time.perf_counter() - t0:.2f} s")

    rng = np.random.default_rng(0)
    for n, c, h, w, c_out in ((2, 64, 64, 64, 64), (8, 256, 32, 32, 256)):
        best = _time_conv_case(rng, (n, c, h, w), c_out, repeat)
        report(f"conv2d fwd+bwd {n}x{c}x{h}x{w} k3 pad1 {c}->{c_out}", best["ours"], best["torch"])


def _time_conv_case(rng, x_shape, c_out, repeat):
    import numpy as np
    import torch

    from minimaskrcnn.nn import functional as F

    n, c, h, w = x_shape
    x = rng.standard_normal(x_shape, dtype=np.float32)
    wt = rng.standard_normal((c_out, c, 3, 3), dtype=np.float32) * np.float32(0.05)
    b = rng.standard_normal(c_out, dtype=np.float32)
    dout = rng.standard_normal((n, c_out, h, w), dtype=np.float32)

    def ours():
        _, cache = F.conv2d_forward(x, wt, b, 1, 1)
        return F.conv2d_backward(dout, cache)

    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(wt).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_()
    tdout = torch.from_numpy(dout)

    def theirs():
        tx.grad = tw.grad = tb.grad = None
        torch.nn.functional.conv2d(tx, tw, tb, 1, 1).backward(tdout)

    return _interleaved_best({"ours": ours, "torch": theirs}, repeat)


TARGETS["conv"] = bench_conv


def main(target: str, threads: int = 2, repeat: int = 5) -> int:
    if target not in TARGETS:
        raise SystemExit(f"bench target {target!r} is not available yet (known: {sorted(TARGETS)})")
    _set_numba_threads(threads)
    _import_torch(threads)
    TARGETS[target](threads=threads, repeat=repeat)
    return 0
