"""Masks between the image frame and the M x M box frame of the mask head.

The mask head predicts an M x M (28 x 28) grid over each box. Two resamplings connect it with the
image, both exactly as in torchvision's Mask R-CNN:

- training, image -> box: ``project_masks_on_boxes`` RoIAligns each ground-truth mask (0/1 as floats)
  onto its proposal's box, giving soft M x M targets for the per-pixel binary cross-entropy;
- inference, box -> image: ``paste_masks_in_image`` resizes each predicted M x M probability map
  into its detected box and places it in an empty H x W image; the caller thresholds at 0.5.

Pasting convention (torchvision's, kept so that our masks equal its masks pixel for pixel):

1. pad the M x M map with ``padding`` zeros on each side, (M + 2p) x (M + 2p), and enlarge the box
   about its centre by ``scale = (M + 2p) / M`` so that the padded map still covers the box at the
   same resolution. The zero border lets the mask fade out at the box edge instead of being cut off.
2. truncate the enlarged box to integers (toward zero) and treat it as *inclusive* pixel indices:
   it covers ``w = x2 - x1 + 1`` columns (at least 1) - the one "+1" left in the package, inherited
   from torchvision's paste code.
3. bilinearly resize the padded map to h x w (``align_corners=False``: pixel centres at +0.5) and
   write it at rows y1..y2, columns x1..x2, clipped to the image; the rest of the image stays 0.

The other convention, ``paste_masks_in_image(..., convention="continuous")`` (detectron2's
``paste_masks_in_image``): the box stays in continuous pixel coordinates, map cell i covers
[x1 + i w / M, x1 + (i + 1) w / M) with w = x2 - x1, and image pixel c (centre c + 0.5) reads the map
bilinearly at cell coordinate ``s = (c + 0.5 - x1) / w * M - 0.5``, with zeros outside the map (so the
mask fades to 0 within half a cell outside the box). No +1, no truncation: a mask that fills its map
pastes onto exactly the pixels whose centres lie in the box, give or take the half-cell fade.
torchvision's convention pastes the same map about one pixel wider and higher (the +1), with an extra
half-pixel jitter from truncating the enlarged box.

Worked example: M = 2, padding 1, box (10, 10, 20, 20) in a 40 x 40 image. The padded map is 4 x 4
with the prediction in its centre 2 x 2, scale = 4 / 2 = 2, so the box grows about its centre (15, 15)
from half-size 5 to 10: (5, 5, 25, 25). It covers w = h = 25 - 5 + 1 = 21 pixels, so the 4 x 4 map
is resized to 21 x 21 (one map cell = 21/4 = 5.25 pixels) and pasted at rows and columns 5..25.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_finite, float_array, pair


def project_masks_on_boxes(gt_masks: np.ndarray, boxes: np.ndarray, M: int, *, matched_idxs=None,
                           backend: str = "numba", aligned: bool = False) -> np.ndarray:
    """Mask targets: ground-truth masks RoIAligned onto boxes at M x M (torchvision's Mask R-CNN).

    Each target is ``roi_align(gt_mask, box, (M, M), spatial_scale=1, sampling_ratio=-1,
    aligned=False)``: bin (i, j) of the box is the mean of ceil(box_h / M) x ceil(box_w / M)
    bilinear samples of the 0/1 mask, so targets are fractions in [0, 1] along the mask's edge.

    Args:
        gt_masks: (K, H, W) bool, the image's ground-truth instance masks.
        boxes: (P, 4) float32/float64 ``(x1, y1, x2, y2)`` in image pixels (positive proposals).
        M: output side (28 for Mask R-CNN).
        matched_idxs: optional (P,) integer array, the ground-truth mask of each box (torchvision's
            argument); by default box p uses mask p (then P must equal K).
        backend: RoIAlign tier, ``"reference"``, ``"numba"`` or ``"cuda"``.
        aligned: RoIAlign's half-pixel offset. False (torchvision) samples mask pixel index x1 + u,
            i.e. the continuous point x1 + u + 0.5: targets show the mask half a pixel up-left of where
            it is. True samples x1 + u - 0.5 in index terms, the continuous point x1 + u itself.

    Returns:
        (P, M, M) array of ``boxes``' dtype.

    Example: a mask that is all 1 inside the box gives targets of exactly 1 in bins whose samples
    all fall inside the mask, and fractions where a bin straddles the mask's border.
    """
    from .roi_align import roi_align

    if not isinstance(gt_masks, np.ndarray) or gt_masks.dtype != np.bool_:
        raise TypeError(f"gt_masks must be a bool numpy.ndarray, got "
                        f"{getattr(gt_masks, 'dtype', type(gt_masks).__name__)}")
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks must have shape (K, H, W), got {gt_masks.shape}")
    boxes = float_array(boxes, "boxes", ndim=2)
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (P, 4), got {boxes.shape}")
    check_finite(boxes, "boxes")
    if isinstance(M, (bool, np.bool_)) or not isinstance(M, (int, np.integer)) or M < 1:
        raise ValueError(f"M must be an int >= 1, got {M!r}")
    K, P = gt_masks.shape[0], boxes.shape[0]
    if matched_idxs is None:
        if K != P:
            raise ValueError(f"gt_masks must have one mask per box ({P}) when matched_idxs is not given, "
                             f"got {K}")
        matched_idxs = np.arange(P)
    else:
        if not isinstance(matched_idxs, np.ndarray) or matched_idxs.dtype.kind not in "iu":
            raise TypeError("matched_idxs must be an integer numpy.ndarray")
        if matched_idxs.shape != (P,):
            raise ValueError(f"matched_idxs must have shape ({P},) like boxes, got {matched_idxs.shape}")
        if P and (matched_idxs.min() < 0 or matched_idxs.max() >= K):
            raise ValueError(f"matched_idxs must index gt_masks, i.e. lie in [0, {K}), got "
                             f"[{matched_idxs.min()}, {matched_idxs.max()}]")
    if P == 0:
        return np.zeros((0, M, M), dtype=boxes.dtype)
    # The masks become a (K, 1, H, W) float "feature map" and each box an RoI (mask index, x1, y1, x2, y2).
    masks = gt_masks[:, None].astype(boxes.dtype)
    rois = np.concatenate([matched_idxs[:, None].astype(boxes.dtype), boxes], axis=1)
    return roi_align(masks, rois, (M, M), 1.0, sampling_ratio=-1, aligned=bool(aligned),
                     backend=backend)[:, 0]


def paste_masks_in_image(masks: np.ndarray, boxes: np.ndarray, image_shape, padding: int = 1,
                         convention: str = "torchvision") -> np.ndarray:
    """Paste M x M mask probabilities into full-image maps (torchvision's or the continuous convention).

    Args:
        masks: (N, M, M) float32/float64 probabilities (sigmoid of the mask logits of each
            detection's class).
        boxes: (N, 4) float ``(x1, y1, x2, y2)`` detected boxes in image pixels, finite.
        image_shape: ``(H, W)`` of the output image.
        padding: zero border added around each map before resizing (torchvision: 1). Not used by
            the continuous convention, whose bilinear sampling reads zeros outside the map anyway.
        convention: ``"torchvision"`` (the default; equal to torchvision's paste) or ``"continuous"``
            (detectron2's; see the module docstring). A continuous box of zero width or height
            pastes nothing.

    Returns:
        (N, H, W) probabilities in ``masks``' dtype, 0 outside each (enlarged) box; threshold at 0.5
        to get binary masks. A box wholly outside the image pastes nothing.
    """
    masks = float_array(masks, "masks", ndim=3)
    if masks.shape[1] != masks.shape[2] or masks.shape[1] < 1:
        raise ValueError(f"masks must have shape (N, M, M) with M >= 1, got {masks.shape}")
    boxes = float_array(boxes, "boxes", ndim=2)
    if boxes.shape != (masks.shape[0], 4):
        raise ValueError(f"boxes must have shape ({masks.shape[0]}, 4), one per mask, got {boxes.shape}")
    check_finite(boxes, "boxes")
    im_h, im_w = pair(image_shape, "image_shape", minimum=1)
    if isinstance(padding, (bool, np.bool_)) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    if convention not in ("torchvision", "continuous"):
        raise ValueError(f"convention must be 'torchvision' or 'continuous', got {convention!r}")
    if convention == "continuous":
        return _paste_continuous(masks, boxes, im_h, im_w)
    N, M = masks.shape[0], masks.shape[1]

    # 1. zero border, and the box enlarged by the same factor about its centre. The box arithmetic
    #    runs in the boxes' dtype with the scale rounded to it, as torch does for tensor * float.
    padded = np.pad(masks, ((0, 0), (padding, padding), (padding, padding)))
    scale = boxes.dtype.type(float(M + 2 * padding) / M)
    half = boxes.dtype.type(0.5)
    w_half = (boxes[:, 2] - boxes[:, 0]) * half * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * half * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * half
    y_c = (boxes[:, 3] + boxes[:, 1]) * half
    # 2. integer (truncated toward zero) inclusive pixel box
    expanded = np.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), axis=1).astype(np.int64)

    out = np.zeros((N, im_h, im_w), dtype=masks.dtype)
    for n in range(N):
        bx1, by1, bx2, by2 = (int(v) for v in expanded[n])
        w = max(bx2 - bx1 + 1, 1)
        h = max(by2 - by1 + 1, 1)
        # 3. the part of the box inside the image, in image and in box coordinates
        x0, x1 = max(bx1, 0), min(bx2 + 1, im_w)
        y0, y1 = max(by1, 0), min(by2 + 1, im_h)
        if x1 <= x0 or y1 <= y0:
            continue
        # resize to h x w, computing only the rows and columns that land inside the image
        out[n, y0:y1, x0:x1] = _resize_bilinear(padded[n], h, w, np.arange(y0 - by1, y1 - by1),
                                                np.arange(x0 - bx1, x1 - bx1))
    return out


def _paste_continuous(masks: np.ndarray, boxes: np.ndarray, im_h: int, im_w: int) -> np.ndarray:
    """The continuous paste (detectron2's convention): (N, M, M) maps, (N, 4) boxes -> (N, H, W).

    1. per axis, pixel c of the image reads the map at cell coordinate ``s = (c + 0.5 - x1) / w * M - 0.5``
       (w = x2 - x1), computed in the maps' dtype;
    2. bilinear between cells floor(s) and floor(s) + 1, a cell outside 0..M-1 counting as 0; only the
       pixels with -1 < s < M (the box plus half a cell each side) can be non-zero, so only they are
       computed.
    """
    N, M = masks.shape[0], masks.shape[1]
    dt = masks.dtype.type
    # two zero cells on each side: s in (-1, 0) blends a zero with cell 0, and s <= -2 or s >= M + 1
    # (clipped to the outermost zero cells) reads zeros only
    padded = np.pad(masks, ((0, 0), (2, 2), (2, 2)))
    out = np.zeros((N, im_h, im_w), dtype=masks.dtype)
    b = boxes.astype(masks.dtype)
    for n in range(N):
        x1, y1, x2, y2 = b[n]
        if not (x2 > x1 and y2 > y1):
            continue
        taps = []
        for lo, hi, size in ((y1, y2, im_h), (x1, x2, im_w)):
            cell = (hi - lo) / dt(M)
            first = max(int(np.floor(lo - cell)) - 1, 0)  # pixels beyond a cell outside the box read 0
            last = min(int(np.ceil(hi + cell)) + 1, size)
            if last <= first:
                break
            idx = np.arange(first, last)
            s = (idx.astype(masks.dtype) + dt(0.5) - lo) / (hi - lo) * dt(M) - dt(0.5)
            s = np.clip(s + dt(2), dt(0), dt(M + 3))  # in the padded map's cells
            i0 = np.floor(s).astype(np.int64)
            i1 = np.minimum(i0 + 1, M + 3)
            taps.append((idx, i0, i1, s - i0.astype(masks.dtype)))
        if len(taps) < 2:
            continue
        (rows, y0i, y1i, ly), (cols, x0i, x1i, lx) = taps
        p = padded[n]
        top = p[y0i][:, x0i] * (dt(1) - lx) + p[y0i][:, x1i] * lx
        bottom = p[y1i][:, x0i] * (dt(1) - lx) + p[y1i][:, x1i] * lx
        out[n, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = \
            (dt(1) - ly)[:, None] * top + ly[:, None] * bottom
    return out


def _resize_bilinear(image: np.ndarray, out_h: int, out_w: int, rows: np.ndarray, cols: np.ndarray):
    """Rows ``rows``, columns ``cols`` of ``image`` resized to (out_h, out_w), bilinear, align_corners=False.

    This is ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``: output pixel o
    reads the input at ``src = max((o + 0.5) * in / out - 0.5, 0)`` (pixel centres line up), between
    ``i0 = floor(src)`` and ``i1 = min(i0 + 1, in - 1)`` with weights ``1 - (src - i0)`` and ``src - i0``.
    """
    in_h, in_w = image.shape
    y0, y1, ly = _linear_taps(rows, in_h, out_h, image.dtype)
    x0, x1, lx = _linear_taps(cols, in_w, out_w, image.dtype)
    one = image.dtype.type(1)
    hy, hx = one - ly, one - lx
    top = image[y0][:, x0] * hx + image[y0][:, x1] * lx
    bottom = image[y1][:, x0] * hx + image[y1][:, x1] * lx
    return hy[:, None] * top + ly[:, None] * bottom


def _linear_taps(out_idx: np.ndarray, in_size: int, out_size: int, dtype):
    """Source indices (i0, i1) and the weight of i1 for the output positions ``out_idx`` along one axis."""
    scale = dtype.type(in_size / out_size)
    src = np.maximum(scale * (out_idx.astype(dtype) + dtype.type(0.5)) - dtype.type(0.5), dtype.type(0))
    i0 = src.astype(np.int64)  # src >= 0, so truncation is floor
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0.astype(dtype)
