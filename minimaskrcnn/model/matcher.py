"""Matcher: assign each prediction (anchor or proposal) to at most one ground-truth box.

The RPN uses it with thresholds 0.7 / 0.3 and low-quality matches allowed; the RoI heads with 0.5 / 0.5
and without. Semantics are torchvision's ``Matcher`` exactly.

Worked example (2 GT boxes, 4 anchors, high 0.7, low 0.3), IoU matrix rows = GT, columns = anchors::

        a0    a1    a2    a3
    g0  0.80  0.10  0.20  0.00
    g1  0.10  0.50  0.40  0.05

    best GT per anchor (column max):  g0 0.80 | g1 0.50 | g1 0.40 | g1 0.05
    thresholds:                        0       | -2 (between) | -2 | -1 (below low)
    low-quality matches: g1's best anchor is a1 (0.50), so a1 gets g1 back: [0, 1, -2, -1]
"""

from __future__ import annotations

import numpy as np

#: prediction whose best IoU is below the low threshold: a negative (background) example
BELOW_LOW_THRESHOLD = -1
#: prediction whose best IoU lies in [low, high): ignored by the losses
BETWEEN_THRESHOLDS = -2


class Matcher:
    """``Matcher(high_threshold, low_threshold, allow_low_quality_matches=False)``.

    ``matcher(match_quality_matrix)`` with a (M, N) matrix of IoUs between M ground-truth boxes and N
    predictions returns ``matches`` (N,) int64: a GT index in [0, M-1], or ``BELOW_LOW_THRESHOLD``
    (best IoU < low) or ``BETWEEN_THRESHOLDS`` (low <= best IoU < high).
    """

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, match_quality_matrix: np.ndarray) -> np.ndarray:
        q = np.asarray(match_quality_matrix)
        if q.ndim != 2:
            raise ValueError(f"match_quality_matrix must be 2-D (M gt, N predictions), got shape {q.shape}")
        if q.size == 0:
            # An image without GT has no matrix to take a maximum over: the caller labels every
            # prediction background itself (as torchvision's RPN and RoI heads do).
            if q.shape[0] == 0:
                raise ValueError("no ground-truth boxes: handle images without objects before matching")
            raise ValueError("no predictions (anchors or proposals) to match")
        # 1. Best GT for each prediction (first GT on ties, like torch.max on CPU).
        matches = np.argmax(q, axis=0).astype(np.int64)
        matched_vals = q[matches, np.arange(q.shape[1])]
        all_matches = matches.copy()
        # 2. Stratify by quality: below low -> -1, in [low, high) -> -2.
        matches[matched_vals < self.low_threshold] = BELOW_LOW_THRESHOLD
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[between] = BETWEEN_THRESHOLDS
        # 3. Low-quality matches: for each GT, every prediction that ties for its highest IoU gets
        #    back its own best GT (which may be a different GT if that one overlaps it more),
        #    so no GT is left without a positive even when its best IoU is below the threshold.
        if self.allow_low_quality_matches:
            highest_per_gt = q.max(axis=1)
            _, pred_inds = np.nonzero(q == highest_per_gt[:, None])
            matches[pred_inds] = all_matches[pred_inds]
        return matches
