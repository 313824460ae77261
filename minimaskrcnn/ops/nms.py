"""Non-maximum suppression (NMS): keep the best box of every cluster of overlapping boxes.

Greedy NMS, as in torchvision's CPU kernel:

1. order the boxes by decreasing score;
2. walk down that order; a box not yet suppressed is *kept*, and every later box whose IoU with it
   is **strictly greater** than ``iou_threshold`` is suppressed (IoU exactly at the threshold survives);
3. return the kept indices, in decreasing score order.

IoU is computed in the boxes' dtype exactly as torchvision does - ``inter / (area_i + area_j - inter)``
with ``area = (x2 - x1) * (y2 - y1)`` - and compared with the threshold in float64 (C++ promotes
the float to double), so results agree with ``torchvision.ops.nms`` bit for bit.

Ties. Equal scores are ordered by **lower index first** (a stable sort). torchvision's CPU kernel
calls an *unstable* sort whose tie order depends on the CPU's SIMD sort implementation (and differs
again on the GPU); it gives no tie guarantee, so we pick the deterministic one. Without tied scores
the two agree exactly.

Backends (same signature, same results):
- ``"reference"``: the algorithm above in plain Python - the readable specification.
- ``"numba"`` (default): the boxes are first gathered in score order so that the inner loop over
  later boxes reads contiguous memory and runs without branches (SIMD); rows are computed only for
  kept boxes, like the reference. Single-threaded: each row depends on the rows before it. About 20x
  faster than torchvision's CPU kernel on 6,000 random boxes at 0.7.
- ``"cuda"``: the classic GPU algorithm - a kernel fills an upper-triangular bit mask, "box j
  overlaps box i" for all pairs in blocks of 64 x 64, then the host walks it once (``_nms_cuda.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._checks import check_finite, float_array

BACKENDS = ("reference", "numba", "cuda")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, backend: str = "numba") -> np.ndarray:
    """Greedy non-maximum suppression (torchvision semantics, see the module docstring).

    Args:
        boxes: (N, 4) float32/float64 array ``(x1, y1, x2, y2)``, finite.
        scores: (N,) float32/float64 array, finite.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is ``>`` this.
        backend: ``"reference"``, ``"numba"`` or ``"cuda"``.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by decreasing score (ties: lower
        index first). Empty input gives an empty array.

    Example: boxes a = (0, 0, 2, 2), b = (1, 0, 3, 2), c = (4, 4, 5, 5) with scores 0.9, 0.8, 0.7.
    IoU(a, b) = 2 / (4 + 4 - 2) = 1/3, c touches neither. At threshold 0.3, b is suppressed:
    keep = [0, 2]. At threshold 1/3 exactly (in float64) b survives: keep = [0, 1, 2].
    """
    boxes, scores, thr = _check_args(boxes, scores, iou_threshold, backend)
    order = _score_order(scores)
    return _nms_ordered(boxes, order, thr, backend)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float, *,
                backend: str = "numba") -> np.ndarray:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: (N, 4) float array; scores: (N,) float array; both finite.
        idxs: (N,) integer array, the category (or image) of each box.
        iou_threshold, backend: as in ``nms``.

    Returns:
        (K,) int64 indices of the kept boxes of all categories together, by decreasing score
        (ties: lower index first).

    torchvision gets the same result by shifting each category's boxes far apart and running one NMS
    (the "coordinate trick"), which perturbs the float IoUs; we run the plain per-category definition
    instead, with the exact IoUs.
    """
    boxes, scores, thr = _check_args(boxes, scores, iou_threshold, backend)
    if not isinstance(idxs, np.ndarray):
        raise TypeError(f"idxs must be a numpy.ndarray, got {type(idxs).__name__}")
    if idxs.dtype.kind not in "iub":
        raise TypeError(f"idxs must have an integer dtype, got {idxs.dtype}")
    if idxs.shape != (boxes.shape[0],):
        raise ValueError(f"idxs must have shape ({boxes.shape[0]},) like boxes, got {idxs.shape}")
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    # 1. one stable sort by (category, -score): each category becomes a contiguous run, in score order
    order = np.lexsort((-scores.astype(np.float64), idxs)).astype(np.int64)
    cats = idxs[order]
    starts = np.flatnonzero(np.r_[True, cats[1:] != cats[:-1]])
    ends = np.r_[starts[1:], len(order)]
    # 2. NMS inside each run
    kept = [_nms_ordered(boxes, order[s:e], thr, backend) for s, e in zip(starts, ends)]
    keep = np.concatenate(kept)
    # 3. merge the categories by decreasing score, ties by index (a stable sort of sorted indices)
    keep.sort()
    return keep[_score_order(scores[keep])]


def _check_args(boxes, scores, iou_threshold, backend):
    """Validate everything before any kernel runs; return (boxes, scores, threshold as float)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    boxes = float_array(boxes, "boxes", ndim=2)
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
    check_finite(boxes, "boxes")
    scores = float_array(scores, "scores", ndim=1)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have shape ({boxes.shape[0]},) like boxes, got {scores.shape}")
    check_finite(scores, "scores")
    try:
        thr = float(iou_threshold)
    except (TypeError, ValueError):
        raise TypeError(f"iou_threshold must be a number, got {iou_threshold!r}") from None
    if not np.isfinite(thr):
        raise ValueError(f"iou_threshold must be finite, got {iou_threshold!r}")
    return boxes, scores, thr


def _score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score, equal scores by increasing index (negation keeps ties, stable sort)."""
    return np.argsort(-scores, kind="stable").astype(np.int64)


def _nms_ordered(boxes: np.ndarray, order: np.ndarray, thr: float, backend: str) -> np.ndarray:
    """NMS of ``boxes[order]`` walked in the given order; returns indices into ``boxes``."""
    if order.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    if backend == "reference":
        return order[_nms_reference(boxes[order], thr)]
    # Structure of arrays in walking order: contiguous columns for the vectorised inner loop.
    sorted_boxes = np.ascontiguousarray(boxes[order].T)
    x1, y1, x2, y2 = sorted_boxes
    if backend == "numba":
        return order[_nms_sorted_numba(x1, y1, x2, y2, thr, boxes.dtype.type(0))]
    from ._nms_cuda import nms_sorted_cuda

    return order[nms_sorted_cuda(x1, y1, x2, y2, thr)]


def _nms_reference(sorted_boxes: np.ndarray, thr: float) -> np.ndarray:
    """Plain-Python greedy NMS over boxes already in score order; returns positions kept."""
    n = sorted_boxes.shape[0]
    x1, y1, x2, y2 = (sorted_boxes[:, k] for k in range(4))
    zero = sorted_boxes.dtype.type(0)
    areas = (x2 - x1) * (y2 - y1)  # in the boxes' dtype, like torchvision
    suppressed = [False] * n
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)  # nothing kept so far overlaps box i too much: keep it
        for j in range(i + 1, n):
            if suppressed[j]:
                continue
            # intersection rectangle of boxes i and j, sides clamped at 0 (disjoint -> 0)
            w = max(zero, min(x2[i], x2[j]) - max(x1[i], x1[j]))
            h = max(zero, min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = w * h
            with np.errstate(divide="ignore", invalid="ignore"):  # two empty boxes: 0/0 = nan, kept
                iou = inter / (areas[i] + areas[j] - inter)  # numpy scalars: stays in the boxes' dtype
            if float(iou) > thr:  # strict, and in float64 like the C++ float-vs-double comparison
                suppressed[j] = True
    return np.array(keep, dtype=np.int64)


# error_model="numpy": float division by zero gives inf/nan (as in C++) instead of raising, which also
# lets LLVM vectorise the division. Parallel threads would not pay: each row depends on the previous.
@njit(cache=True, error_model="numpy")
def _suppress_row(ix1, iy1, ix2, iy2, iarea, x1, y1, x2, y2, areas, suppressed, thr, zero):
    """suppressed[j] |= IoU(box i, box j) > thr for every box j of the given (contiguous) columns."""
    # Suppressed boxes too, branch-free, so that LLVM can vectorise the loop: OR-ing into an already
    # suppressed box changes nothing, and skipping it would cost a branch per box. (A loop from 0 over
    # slices, rather than from i + 1, also spares the negative-index check that blocks vectorising.)
    for j in range(x1.shape[0]):
        w = max(zero, min(ix2, x2[j]) - max(ix1, x1[j]))
        h = max(zero, min(iy2, y2[j]) - max(iy1, y1[j]))
        inter = w * h
        iou = inter / (iarea + areas[j] - inter)
        suppressed[j] |= iou > thr  # the float32 iou is promoted to float64 for the comparison


@njit(cache=True, error_model="numpy")
def _nms_sorted_numba(x1, y1, x2, y2, thr, zero):
    """Greedy NMS over columns already in score order; returns positions kept (int64)."""
    n = x1.shape[0]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=np.uint8)
    keep = np.empty(n, dtype=np.int64)
    num_kept = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[num_kept] = i
        num_kept += 1
        s = i + 1
        _suppress_row(x1[i], y1[i], x2[i], y2[i], areas[i], x1[s:], y1[s:], x2[s:], y2[s:], areas[s:],
                      suppressed[s:], thr, zero)
    return keep[:num_kept]
