"""Axis-aligned boxes: area, pairwise IoU, clipping, small-box removal and format conversion.

Coordinate convention (used by every op in this package, and by torchvision):

    A box is ``(x1, y1, x2, y2)`` in *continuous* pixel coordinates: the image covers
    ``[0, W] x [0, H]`` and pixel ``(r, c)`` is the unit square ``[c, c+1] x [r, r+1]``.
    Width is ``x2 - x1`` and height ``y2 - y1``, with **no "+1"** (the legacy py-faster-rcnn
    convention counted inclusive integer pixels and added 1; see ``anchors.py`` for the contrast).

So a box ``(0, 0, 2, 2)`` covers exactly the four pixels (0,0), (0,1), (1,0), (1,1) and has area 4.
Every function here accepts float32 or float64 boxes and returns the same dtype, exactly as
``torchvision.ops`` computes it (same operations in the same order).

Integer and float16 boxes. ``box_area``, ``box_iou`` and ``box_convert`` also take them, with
torchvision's dtypes: areas are computed after its ``_upcast`` (float16 → float32, integers narrower
than 32 bits → int32), integer IoUs come out float32 (torch's true division of integers), and an
integer conversion that involves ``"cxcywh"`` comes out float32 (its halves are not integers).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_finite, float_array

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _boxes_arg(boxes, name: str, finite: bool = True) -> np.ndarray:
    """Check that ``boxes`` is a float (..., 4) array (finite unless told otherwise)."""
    boxes = float_array(boxes, name)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {boxes.shape}")
    if finite:
        check_finite(boxes, name)
    return boxes


def _any_boxes_arg(boxes, name: str) -> np.ndarray:
    """Like ``_boxes_arg`` but also accepting integer and float16 boxes (torchvision computes them)."""
    if isinstance(boxes, np.ndarray) and (boxes.dtype.kind in "iu" or boxes.dtype == np.float16):
        if boxes.ndim < 1 or boxes.shape[-1] != 4:
            raise ValueError(f"{name} must have shape (..., 4), got {boxes.shape}")
        if boxes.dtype == np.float16:
            check_finite(boxes, name)
        return boxes
    return _boxes_arg(boxes, name)


def _upcast(b: np.ndarray) -> np.ndarray:
    """torchvision's ``_upcast``, against overflow in products: float16 → float32, integers of fewer
    than 32 bits → int32 (and unsigned 32/64-bit ones → int64, which numpy has and torch has not)."""
    if b.dtype == np.float16:
        return b.astype(np.float32)
    if b.dtype.kind == "u" and b.dtype.itemsize >= 4:
        return b.astype(np.int64)
    if b.dtype.kind in "iu" and b.dtype.itemsize < 4:
        return b.astype(np.int32)
    return b


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box.

    Args:
        boxes: (..., 4) float array, ``(x1, y1, x2, y2)`` (integer and float16 accepted, see the
            module docstring).

    Returns:
        (...,) array of the same dtype (after the upcast). A reversed box (x2 < x1 xor y2 < y1) gets
        a negative area, as in torchvision; nothing is clamped here.
    """
    boxes = _upcast(_any_boxes_arg(boxes, "boxes"))
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union (Jaccard index).

    ``IoU(a, b) = inter / (area(a) + area(b) - inter)`` where the intersection rectangle is
    ``[max(x1a, x1b), min(x2a, x2b)] x [max(y1a, y1b), min(y2a, y2b)]`` and each of its sides is
    clamped at 0 (disjoint boxes have inter = 0).

    Args:
        boxes1: (N, 4) float array.
        boxes2: (M, 4) float array of the same dtype.

    Returns:
        (N, M) array, ``iou[n, m] = IoU(boxes1[n], boxes2[m])``. Two zero-area boxes give
        ``0 / 0 = nan``, as in torchvision.

    Example: a = (0, 0, 2, 2) and b = (1, 1, 3, 3) overlap in the unit square (1, 1, 2, 2), so
    inter = 1, union = 4 + 4 - 1 = 7 and IoU = 1/7.
    """
    boxes1 = _any_boxes_arg(boxes1, "boxes1")
    boxes2 = _any_boxes_arg(boxes2, "boxes2")
    if boxes1.ndim != 2:
        raise ValueError(f"boxes1 must have shape (N, 4), got {boxes1.shape}")
    if boxes2.ndim != 2:
        raise ValueError(f"boxes2 must have shape (M, 4), got {boxes2.shape}")
    if boxes1.dtype != boxes2.dtype:
        raise TypeError(f"boxes1 and boxes2 must have the same dtype, got {boxes1.dtype} and {boxes2.dtype}")
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    # 1. corners of the intersection rectangle for every pair: (N, M, 2)
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    # 2. its sides, clamped at 0 so that disjoint boxes intersect in nothing (not a negative area)
    #    (integers are upcast before the subtraction, so that uint8 sides cannot wrap around)
    wh = np.maximum(_upcast(_upcast(rb) - _upcast(lt)) if rb.dtype.kind in "iu" else _upcast(rb - lt), 0)
    inter = wh[..., 0] * wh[..., 1]
    # 3. union by inclusion-exclusion; 0/0 (two empty boxes) is nan on purpose, like torchvision
    union = area1[:, None] + area2[None, :] - inter
    if inter.dtype.kind in "iu":  # torch divides integers in its default dtype, float32
        inter, union = inter.astype(np.float32), union.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def clip_boxes_to_image(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Clamp x coordinates to ``[0, width]`` and y coordinates to ``[0, height]``.

    Args:
        boxes: (..., 4) float array, ``(x1, y1, x2, y2)``.
        size: ``(height, width)`` of the image (note: height first, as in torchvision).

    Returns:
        A new array of the same shape and dtype. A box wholly outside the image collapses to a
        zero-width or zero-height box on the border; ``remove_small_boxes`` drops those.
    """
    boxes = _boxes_arg(boxes, "boxes")
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (height, width), got {size!r}") from None
    out = np.empty_like(boxes)
    out[..., 0::2] = np.clip(boxes[..., 0::2], 0, width)
    out[..., 1::2] = np.clip(boxes[..., 1::2], 0, height)
    return out


def remove_small_boxes(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Indices of the boxes whose width and height are both ``>= min_size``.

    Args:
        boxes: (N, 4) float array.
        min_size: smallest allowed side length, in pixels.

    Returns:
        (K,) int64 indices into ``boxes``, increasing.
    """
    boxes = _boxes_arg(boxes, "boxes")
    if boxes.ndim != 2:
        raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
    ws = boxes[:, 2] - boxes[:, 0]
    hs = boxes[:, 3] - boxes[:, 1]
    keep = (ws >= min_size) & (hs >= min_size)
    return np.flatnonzero(keep).astype(np.int64)


def box_convert(boxes: np.ndarray, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Convert boxes between the three axis-aligned formats.

    - ``"xyxy"``: corners ``(x1, y1, x2, y2)``;
    - ``"xywh"``: top-left corner and size ``(x1, y1, w, h)``;
    - ``"cxcywh"``: centre and size ``(cx, cy, w, h)``.

    Conversions that involve neither side being ``"xyxy"`` go through ``"xyxy"`` (as torchvision
    does, so the float rounding is the same). Example: xyxy (1, 2, 5, 10) is xywh (1, 2, 4, 8)
    and cxcywh (3, 6, 4, 8).

    Args:
        boxes: (..., 4) float array (integer and float16 accepted).
        in_fmt, out_fmt: one of ``"xyxy"``, ``"xywh"``, ``"cxcywh"``.

    Returns:
        A new (..., 4) array of the same dtype; float32 for integer boxes converted from or to
        ``"cxcywh"`` (torchvision's dtypes).
    """
    for fmt, name in ((in_fmt, "in_fmt"), (out_fmt, "out_fmt")):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    boxes = _any_boxes_arg(boxes, "boxes")
    if in_fmt == out_fmt:
        return boxes.copy()
    if in_fmt == "xywh":
        boxes = _xywh_to_xyxy(boxes)
    elif in_fmt == "cxcywh":
        boxes = _cxcywh_to_xyxy(boxes)
    if out_fmt == "xywh":
        boxes = _xyxy_to_xywh(boxes)
    elif out_fmt == "cxcywh":
        boxes = _xyxy_to_cxcywh(boxes)
    return boxes


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    x, y, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack((x, y, x + w, y + h), axis=-1)


def _xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack((x1, y1, x2 - x1, y2 - y1), axis=-1)


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    if b.dtype.kind in "iu":  # torch: int * 0.5 and int - float32 are float32
        b = b.astype(np.float32)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    half = b.dtype.type(0.5)
    return np.stack((cx - half * w, cy - half * h, cx + half * w, cy + half * h), axis=-1)


def _xyxy_to_cxcywh(b: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    if b.dtype.kind in "iu":  # torch: integer sums, then a true division in float32
        f = np.float32
        return np.stack(((x1 + x2).astype(f) / f(2), (y1 + y2).astype(f) / f(2), (x2 - x1).astype(f),
                         (y2 - y1).astype(f)), axis=-1)
    two = b.dtype.type(2)
    return np.stack(((x1 + x2) / two, (y1 + y2) / two, x2 - x1, y2 - y1), axis=-1)
