"""NMS on the GPU with Numba CUDA: the classic bit-mask algorithm (imported only for backend="cuda").

Greedy NMS is sequential along the score order, but almost all of its work - the IoU of every pair
- is not. So the GPU does the pairs and the CPU does the (cheap) sequential walk:

1. Split the N boxes (already in score order) into blocks of 64. A CUDA block (row_block, col_block)
   with 64 threads handles 64 x 64 pairs: thread t compares box i = 64 * row_block + t with every box
   j of the column block that comes *after* it (j > i), and sets bit (j mod 64) of the 64-bit word
   ``mask[i, col_block]`` when IoU(i, j) > threshold. Blocks below the diagonal have no j > i and
   return at once.
2. On the host, walk the boxes in order with a bit set ``removed`` of N bits: box i is kept if its
   bit is clear, and then its mask row is OR-ed into ``removed`` (everything it suppresses).

The IoU arithmetic is the CPU kernel's (same dtype, same order, float64 comparison), so the kept set
is identical. Works under ``NUMBA_ENABLE_CUDASIM=1`` (slow; for tests on small inputs).
"""

from __future__ import annotations

import numpy as np
from numba import njit

try:
    from numba import cuda
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("backend='cuda' needs numba-cuda: pip install numba-cuda") from exc

THREADS_PER_BLOCK = 64  # = bits in one mask word


@cuda.jit
def _nms_mask_kernel(x1, y1, x2, y2, thr, mask):
    n = x1.shape[0]
    row_block = cuda.blockIdx.y
    col_block = cuda.blockIdx.x
    if row_block > col_block:  # every j of this column block precedes every i: nothing to compare
        return
    t = cuda.threadIdx.x
    i = row_block * THREADS_PER_BLOCK + t
    if i >= n:
        return
    zero = x1[i] - x1[i]  # an exact 0 in the boxes' dtype (keeps the arithmetic in float32 for float32)
    iarea = (x2[i] - x1[i]) * (y2[i] - y1[i])
    col_start = col_block * THREADS_PER_BLOCK
    col_end = min(col_start + THREADS_PER_BLOCK, n)
    # on the diagonal block only the boxes after i; elsewhere the whole column block
    first = i + 1 if row_block == col_block else col_start
    bits = np.uint64(0)
    for j in range(first, col_end):
        w = max(zero, min(x2[i], x2[j]) - max(x1[i], x1[j]))
        h = max(zero, min(y2[i], y2[j]) - max(y1[i], y1[j]))
        inter = w * h
        jarea = (x2[j] - x1[j]) * (y2[j] - y1[j])
        iou = inter / (iarea + jarea - inter)
        if iou > thr:
            bits |= np.uint64(1) << np.uint64(j - col_start)
    mask[i, col_block] = bits


@njit(cache=True)
def _walk_mask(mask, n):
    """Step 2: the sequential greedy walk over the suppression bit mask; returns positions kept."""
    col_blocks = mask.shape[1]
    removed = np.zeros(col_blocks, dtype=np.uint64)
    keep = np.empty(n, dtype=np.int64)
    num_kept = 0
    for i in range(n):
        block = i // THREADS_PER_BLOCK
        bit = np.uint64(1) << np.uint64(i % THREADS_PER_BLOCK)
        if removed[block] & bit:
            continue
        keep[num_kept] = i
        num_kept += 1
        for c in range(block, col_blocks):  # i only ever suppresses later boxes
            removed[c] |= mask[i, c]
    return keep[:num_kept]


def nms_sorted_cuda(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, thr: float) -> np.ndarray:
    """Greedy NMS of boxes given as four (N,) columns already in score order; returns positions kept."""
    if not cuda.is_available():
        raise RuntimeError("backend='cuda' needs a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1 to simulate one)")
    n = x1.shape[0]
    col_blocks = (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    columns = [cuda.to_device(np.ascontiguousarray(c)) for c in (x1, y1, x2, y2)]
    # Words left of a row's diagonal block are never written (and never read by the walk); zero them anyway.
    d_mask = cuda.to_device(np.zeros((n, col_blocks), dtype=np.uint64))
    # np.float64, not a Python float: the simulator (plain NumPy) would otherwise compare a float32
    # IoU with the threshold rounded to float32, unlike the C++ and compiled kernels.
    _nms_mask_kernel[(col_blocks, col_blocks), THREADS_PER_BLOCK](*columns, np.float64(thr), d_mask)
    return _walk_mask(d_mask.copy_to_host(), n)
