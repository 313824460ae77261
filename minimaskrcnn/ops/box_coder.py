"""Box coding: the (dx, dy, dw, dh) regression targets of R-CNN and their inverse.

A detector does not regress box corners directly. It predicts how to move and rescale a reference
box (an anchor in the RPN, a proposal in the box head), in units of that box's own size:

    encode:  dx = wx * (gx - ax) / aw        dw = ww * log(gw / aw)
             dy = wy * (gy - ay) / ah        dh = wh * log(gh / ah)

    decode:  px = dx / wx * aw + ax          pw = exp(min(dw / ww, clip)) * aw
             py = dy / wy * ah + ay          ph = exp(min(dh / wh, clip)) * ah
             box = (px - pw/2, py - ph/2, px + pw/2, py + ph/2)

where (ax, ay, aw, ah) is the reference box's centre and size (w = x2 - x1, cx = x1 + 0.5 * w, no
"+1"), (gx, gy, gw, gh) the target box's, and (wx, wy, ww, wh) fixed weights that scale the targets
to roughly unit variance: (1, 1, 1, 1) in the RPN, (10, 10, 5, 5) in the box head.
``clip = log(1000 / 16)`` stops ``exp`` from producing a box more than 62.5 times larger than its
reference (an untrained network can output anything).

Worked example (weights 1): reference (0, 0, 10, 10) has centre (5, 5), size 10 x 10; target
(2, 2, 22, 12) has centre (12, 7), size 20 x 10. So dx = (12 - 5)/10 = 0.7, dy = (7 - 5)/10 = 0.2,
dw = log(20/10) = log 2 and dh = log 1 = 0. Decoding (0.7, 0.2, log 2, 0) on the reference gives
centre (0.7*10 + 5, 0.2*10 + 5) = (12, 7) and size (2*10, 1*10), i.e. the target back.

The arithmetic below follows torchvision's ``encode_boxes`` / ``BoxCoder.decode_single`` operation
by operation (same products, same order, weights in the boxes' dtype), so float32 results agree
with it to rounding of ``log``/``exp`` and float64 results to ~1e-15.
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_finite, float_array

BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes relative to reference boxes, and decode predicted offsets back into boxes.

    Args:
        weights: ``(wx, wy, ww, wh)``, positive.
        bbox_xform_clip: upper bound on ``dw / ww`` and ``dh / wh`` before ``exp`` in ``decode``.
    """

    def __init__(self, weights, bbox_xform_clip: float = BBOX_XFORM_CLIP):
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4:
            raise ValueError(f"weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
        if not all(w > 0 and math.isfinite(w) for w in weights):
            raise ValueError(f"weights must be positive and finite, got {weights!r}")
        self.weights = weights
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip})"

    def encode(self, reference_boxes: np.ndarray, proposals: np.ndarray) -> np.ndarray:
        """Regression targets that move each proposal onto its reference (ground-truth) box.

        Args:
            reference_boxes: (N, 4) float array, the boxes to reach (e.g. matched ground truth).
            proposals: (N, 4) float array of the same dtype, the boxes to start from (anchors or
                proposals); they need positive width and height (a zero size divides by zero).

        Returns:
            (N, 4) array ``(dx, dy, dw, dh)`` in the input dtype.

        (Argument names and order are torchvision's: ``encode(reference_boxes, proposals)``.)
        """
        reference_boxes = _boxes(reference_boxes, "reference_boxes")
        proposals = _boxes(proposals, "proposals")
        if proposals.shape[0] != reference_boxes.shape[0]:
            raise ValueError(f"proposals must have as many rows as reference_boxes "
                             f"({reference_boxes.shape[0]}), got {proposals.shape[0]}")
        if proposals.dtype != reference_boxes.dtype:
            raise TypeError(f"proposals must have the dtype of reference_boxes ({reference_boxes.dtype}), "
                            f"got {proposals.dtype}")
        dtype = reference_boxes.dtype
        wx, wy, ww, wh = (dtype.type(w) for w in self.weights)
        half = dtype.type(0.5)

        # 1. centre and size of the boxes we start from ("ex" for example boxes, as in torchvision)
        ex_widths = proposals[:, 2] - proposals[:, 0]
        ex_heights = proposals[:, 3] - proposals[:, 1]
        ex_ctr_x = proposals[:, 0] + half * ex_widths
        ex_ctr_y = proposals[:, 1] + half * ex_heights
        # 2. centre and size of the boxes to reach
        gt_widths = reference_boxes[:, 2] - reference_boxes[:, 0]
        gt_heights = reference_boxes[:, 3] - reference_boxes[:, 1]
        gt_ctr_x = reference_boxes[:, 0] + half * gt_widths
        gt_ctr_y = reference_boxes[:, 1] + half * gt_heights
        # 3. centre shift in units of the start box's size; log of the size ratio (scale-invariant)
        targets = np.empty((proposals.shape[0], 4), dtype=dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            targets[:, 0] = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
            targets[:, 1] = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
            targets[:, 2] = ww * np.log(gt_widths / ex_widths)
            targets[:, 3] = wh * np.log(gt_heights / ex_heights)
        return targets

    def decode(self, rel_codes: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Apply predicted offsets to reference boxes.

        Args:
            rel_codes: (N, 4k) float array: k sets of ``(dx, dy, dw, dh)`` per box (k = 1 in the
                RPN, k = number of classes in the box head, one set per class).
            boxes: (N, 4) float array, the reference boxes (anchors or proposals); cast to the
                dtype of ``rel_codes``.

        Returns:
            (N, 4k) array of decoded ``(x1, y1, x2, y2)`` boxes, in ``rel_codes``' dtype; columns
            ``4c .. 4c+3`` are the box for set c. Not clipped to the image (see
            ``clip_boxes_to_image``).
        """
        rel_codes = float_array(rel_codes, "rel_codes", ndim=2)
        if rel_codes.shape[1] % 4 != 0 or rel_codes.shape[1] == 0:
            raise ValueError(f"rel_codes must have shape (N, 4k), got {rel_codes.shape}")
        check_finite(rel_codes, "rel_codes")
        boxes = _boxes(boxes, "boxes")
        if boxes.shape[0] != rel_codes.shape[0]:
            raise ValueError(f"boxes must have as many rows as rel_codes ({rel_codes.shape[0]}), "
                             f"got {boxes.shape[0]}")
        dtype = rel_codes.dtype
        boxes = boxes.astype(dtype, copy=False)
        wx, wy, ww, wh = (dtype.type(w) for w in self.weights)
        half = dtype.type(0.5)
        clip = dtype.type(self.bbox_xform_clip)

        # 1. centre and size of the reference boxes, as columns to broadcast over the k sets
        widths = (boxes[:, 2] - boxes[:, 0])[:, None]
        heights = (boxes[:, 3] - boxes[:, 1])[:, None]
        ctr_x = boxes[:, 0][:, None] + half * widths
        ctr_y = boxes[:, 1][:, None] + half * heights
        # 2. undo the weights; clamp the log-scale so exp cannot overflow into an absurd box
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = np.minimum(rel_codes[:, 2::4] / ww, clip)
        dh = np.minimum(rel_codes[:, 3::4] / wh, clip)
        # 3. predicted centre and size
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = np.exp(dw) * widths
        pred_h = np.exp(dh) * heights
        # 4. back to corners: centre -/+ half the size
        c_to_c_w = half * pred_w
        c_to_c_h = half * pred_h
        pred = np.empty_like(rel_codes)
        pred[:, 0::4] = pred_ctr_x - c_to_c_w
        pred[:, 1::4] = pred_ctr_y - c_to_c_h
        pred[:, 2::4] = pred_ctr_x + c_to_c_w
        pred[:, 3::4] = pred_ctr_y + c_to_c_h
        return pred


def _boxes(boxes, name: str) -> np.ndarray:
    boxes = float_array(boxes, name, ndim=2)
    if boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
    check_finite(boxes, name)
    return boxes
