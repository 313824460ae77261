"""Tracking by re-detection: the trained Mask R-CNN detects in every frame, detections are associated
with the objects, identities survive occlusion and re-entry.

    masks = propagate_redetect(frames, first_mask, model=None, checkpoint=None, **options)

The detector sees every frame on its own and knows nothing of the objects; the flow tracker
(``propagate.FlowTracker``, the "flow" method) knows where each object was a frame ago but cannot tell
that it has been covered up or has left the frame, and once it has lost an object it never finds it
again. Each object keeps an appearance model — the colour histogram of its pixels in frame 0, and the
background's (``common.ColourModel``, 8³ bins) — and a state, *visible* or *absent*. For each frame t:

1. Detect: the model's detections with score ≥ ``score_thresh`` and at least ``min_area`` pixels
   (the detector was trained on plain shapes and fires on textured background too, so the score
   alone decides little), their masks (mask probability > 0.5) and their colour histograms.
2. Predict: the flow tracker warps every visible object's label probabilities from frame t−1 to frame
   t (per-object affine motion fitted to the optical flow, colour refinement at the boundary). Its mask
   M_j is where object j wins the argmax.
3. Associate (visible objects): the score of detection d for object j is
       IoU(mask_d, M_j) + ``app_weight`` · BC(h_d, h_j)
   where BC is the Bhattacharyya coefficient Σ √(h_d · h_j) of the detection's colour histogram and
   the object's (1 = the same colours). A pair qualifies with IoU ≥ ``iou_min`` and either BC ≥
   ``app_min`` or IoU ≥ ``iou_strong`` (a good overlap vouches for an object whose looks are
   changing); pairs are matched greedily, best score first, one detection per object. A matched
   detection may pull the object's probabilities towards its own: p_j ← (1 − ``fuse``) · p_j +
   ``fuse`` · p_d, and/or cut them to its mask grown by ``gate_radius`` pixels (both off by default:
   the detector's 28 × 28 masks are coarser than the flow's). An unmatched object keeps the flow's
   prediction: the detector may simply have missed it.
4. Occlusion test (visible objects): the *colour support* of M_j is the fraction of its pixels whose
   colour is likelier under the object's histogram than under the background's. When M_j has fewer
   than ``min_area`` pixels, or no detection confirms it and its colour support falls below
   ``support_min``, the object is covered up or gone: it becomes *absent*, its channel is cleared, and
   its appearance model, last position and size (the largest visible area over its last 10 visible
   frames) are kept.
5. Re-acquire (absent objects): a candidate is an unmatched detection not lying on a visible object
   (IoU < 0.3), whose area is within ``area_range`` times the kept size, and either
   a. looks like the object: BC ≥ ``reacquire_app`` and colour support ≥ ``support_min``; the best
      by BC − ``distance_weight`` · (distance to the last position / image diagonal); or, failing
      that,
   b. is near where the object was last seen (within ``reacquire_radius`` image diagonals) and is
      not background (most of its pixels are not likelier under the background's histogram) — the
      object may have changed its looks while it was away. Such a match must be found in
      ``confirm`` frames in a row (overlapping each other), and then replaces the object's histogram.
   The chosen detection's mask probabilities become the object's channel.
6. Commit: background = 1 − Σ objects; the argmax is frame t's answer and the tracker's next state.
   The appearance model of a matched object follows slow changes:
   h_j ← (1 − ``app_momentum``) h_j + ``app_momentum`` · h(mask_j).

With no detection at all this is the flow method plus the occlusion test. Costs per frame: one
detector inference (frames are batched by ``chunk``) and the flow method's two optical flows.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.video.common import ColourModel, check_inputs, dilate, mask_iou
from minimaskrcnn.video.propagate import FlowTracker
from minimaskrcnn.weights import resolve_model

__all__ = ["propagate_redetect", "bhattacharyya"]


def bhattacharyya(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Σ √(p · q) over the last axis of two histograms (each summing to 1): 1 when equal, 0 when disjoint."""
    return np.sqrt(np.maximum(p, 0) * np.maximum(q, 0)).sum(-1)


class _Appearance:
    """Colour histograms of the objects and the background (frame 0), and the tests built on them."""

    def __init__(self, frame: np.ndarray, ids: np.ndarray, k: int, bins: int = 8):
        self.model = ColourModel(frame, ids, k + 1, bins=bins)
        self.hist = self.model.hist.copy()  # (K+1, bins³); row 0 the background

    def cells(self, frame: np.ndarray) -> np.ndarray:
        """(H, W) colour-bin index of every pixel of frame; the other methods take it (once per frame)."""
        return self.model._cells(frame)

    def histograms(self, cells: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(D, bins³) normalised colour histograms of the pixels under masks (D, H, W), from ``cells``."""
        cells = cells.ravel()
        n = self.hist.shape[1]
        out = np.zeros((masks.shape[0], n))
        for i, m in enumerate(masks):
            c = np.bincount(cells[m.ravel()], minlength=n).astype(np.float64)
            out[i] = c / max(c.sum(), 1.0)
        return out

    def support(self, cells: np.ndarray, mask: np.ndarray, j: int) -> float:
        """Fraction of mask's pixels whose colour is likelier under object j than the background."""
        if not mask.any():
            return 0.0
        cells = cells[mask]
        return float(np.mean(self.hist[j, cells] > self.hist[0, cells]))

    def foreground(self, cells: np.ndarray, mask: np.ndarray, j: int) -> float:
        """Fraction of mask's pixels whose colour is not likelier under the background than under
        object j (colours neither has seen count as foreground): is this region background or not?"""
        if not mask.any():
            return 0.0
        cells = cells[mask]
        return float(np.mean(self.hist[0, cells] <= self.hist[j, cells]))

    def update(self, j: int, hist: np.ndarray, momentum: float) -> None:
        self.hist[j] = (1 - momentum) * self.hist[j] + momentum * hist


def _centre(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def propagate_redetect(frames, first_mask, *, model=None, checkpoint=None, score_thresh: float = 0.3,
                       iou_min: float = 0.3, iou_strong: float = 0.6, app_weight: float = 0.5,
                       app_min: float = 0.5, fuse: float = 0.0, gate_radius: int | None = None,
                       min_area: int = 12, support_min: float = 0.5, reacquire_app: float = 0.6,
                       distance_weight: float = 0.5, reacquire_radius: float = 0.25, area_range=(0.4, 2.5),
                       confirm: int = 3, app_momentum: float = 0.1, chunk: int = 8,
                       flow_options: dict | None = None) -> np.ndarray:
    """Tracking by re-detection (module docstring). frames (T, H, W, 3) uint8, first_mask (H, W) bool or
    ID map; returns the (T, H, W) uint8 ID map, frame 0 = first_mask. model / checkpoint: the
    detector (see ``weights.resolve_model``; default the shipped shapes model). flow_options go to
    ``FlowTracker``."""
    frames, ids, k = check_inputs(frames, first_mask)
    model = resolve_model(model, checkpoint)
    for name, v in (("iou_min", iou_min), ("iou_strong", iou_strong), ("app_min", app_min), ("fuse", fuse),
                    ("support_min", support_min), ("reacquire_app", reacquire_app),
                    ("app_momentum", app_momentum)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    t_len, h, w = frames.shape[:3]
    diag = float(np.hypot(h, w))
    tracker = FlowTracker(frames[0], ids, **(flow_options or {}))
    appearance = _Appearance(frames[0], ids, k)
    visible = np.ones(k + 1, bool)  # index 0 unused
    last_pos = [None] + [_centre(ids == j) for j in range(1, k + 1)]
    # Reference size: the largest visible area over the last 10 frames the object was seen (an object
    # being covered up shrinks to nothing before it goes).
    areas = [None] + [[int((ids == j).sum())] for j in range(1, k + 1)]
    pending = [None] * (k + 1)  # absent objects: (candidate mask, frames seen in a row)
    out = np.zeros((t_len, h, w), np.uint8)
    out[0] = ids
    for start in range(1, t_len, int(chunk)):
        batch = model.predict(list(frames[start:start + int(chunk)]))
        for t, det in zip(range(start, start + len(batch)), batch):
            frame = frames[t]
            # 1. detections
            keep = (det["scores"] >= score_thresh) & (det["masks"].sum((1, 2)) >= min_area)
            d_masks, d_probs = det["masks"][keep], det["mask_probs"][keep]
            cells = appearance.cells(frame)
            d_hist = appearance.histograms(cells, d_masks)
            # 2. flow prediction
            probs = tracker.predict(frame)
            labels = probs.argmax(-1)
            # 3. association of the visible objects
            pairs = []
            for j in range(1, k + 1):
                if not visible[j] or not d_masks.shape[0]:
                    continue
                iou = mask_iou(d_masks, labels == j)
                bc = bhattacharyya(d_hist, appearance.hist[j])
                ok = (iou >= iou_min) & ((bc >= app_min) | (iou >= iou_strong))
                for d in np.flatnonzero(ok):
                    pairs.append((iou[d] + app_weight * bc[d], j, int(d)))
            matched, used = {}, set()
            for _, j, d in sorted(pairs, reverse=True):
                if j not in matched and d not in used:
                    matched[j] = d
                    used.add(d)
            for j, d in matched.items():
                p = (1 - fuse) * probs[..., j] + fuse * d_probs[d]
                if gate_radius is not None:
                    p = p * dilate(d_masks[d], int(gate_radius))
                probs[..., j] = p
            # 4. occlusion test
            for j in range(1, k + 1):
                if not visible[j]:
                    continue
                mask = labels == j
                if mask.sum() < min_area or (j not in matched and
                                             appearance.support(cells, mask, j) < support_min):
                    visible[j] = False
                    pending[j] = None
                    probs[..., j] = 0.0
            # 5. re-acquisition of absent objects
            taken = np.zeros((h, w), bool)
            for i in range(1, k + 1):
                if visible[i]:
                    taken |= probs[..., i] > 0.5
            for j in range(1, k + 1):
                if visible[j] or not d_masks.shape[0]:
                    continue
                bc = bhattacharyya(d_hist, appearance.hist[j])
                best, best_d, by_place = -np.inf, None, None
                for d in range(d_masks.shape[0]):
                    area = d_masks[d].sum()
                    if d in used or mask_iou(d_masks[d:d + 1], taken)[0] >= 0.3 or \
                            not area_range[0] <= area / max(areas[j]) <= area_range[1]:
                        continue
                    dist = np.linalg.norm(_centre(d_masks[d]) - last_pos[j]) / diag
                    if bc[d] >= reacquire_app and appearance.support(cells, d_masks[d], j) >= support_min:
                        score = 1.0 + bc[d] - distance_weight * dist  # an appearance match beats any other
                    elif dist <= reacquire_radius and \
                            appearance.foreground(cells, d_masks[d], j) >= support_min:
                        score = -dist  # the object may have changed its looks while it was away
                    else:
                        continue
                    if score > best:
                        best, best_d, by_place = score, d, score < 1.0
                if best_d is None:
                    pending[j] = None
                    continue
                if by_place:  # a position match must be seen in `confirm` frames in a row
                    m = d_masks[best_d]
                    seen = pending[j] is not None and mask_iou(m[None], pending[j][0])[0] >= 0.3
                    pending[j] = (m, pending[j][1] + 1 if seen else 1)
                    if pending[j][1] < confirm:
                        continue
                    appearance.hist[j] = d_hist[best_d]
                visible[j] = True
                pending[j] = None
                used.add(best_d)
                probs[..., j] = d_probs[best_d]
            # 6. commit
            for j in range(1, k + 1):
                if not visible[j]:
                    probs[..., j] = 0.0
            probs[..., 0] = np.clip(1.0 - probs[..., 1:].sum(-1), 0.0, 1.0)
            out[t] = tracker.commit(frame, probs)
            for j in range(1, k + 1):
                mask = out[t] == j
                if mask.any():
                    last_pos[j] = _centre(mask)
                    areas[j] = (areas[j] + [int(mask.sum())])[-10:]
                if j in matched and mask.any():
                    appearance.update(j, appearance.histograms(cells, mask[None])[0], app_momentum)
    return out
