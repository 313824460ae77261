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


def main(target: str, threads: int = 2, repeat: int = 5) -> int:
    if target not in TARGETS:
        raise SystemExit(f"bench target {target!r} is not available yet (known: {sorted(TARGETS)})")
    _set_numba_threads(threads)
    _import_torch(threads)
    TARGETS[target](threads=threads, repeat=repeat)
    return 0
