"""Propagation by nearest-neighbour matching of simple pixel features (the "embed" method).

    masks = propagate_embed(frames, first_mask, **options)     (T, H, W, 3) uint8, (H, W) → (T, H, W) uint8
"""

from __future__ import annotations

import numpy as np
from numba import njit

from minimaskrcnn.video.common import box_sum, check_inputs

__all__ = ["propagate_embed"]


@njit(cache=True)
def _global_distances(query, ref, ref_label, num_labels):
    """(N, L) smallest squared feature distance from each query row to a reference row of each label
    (inf for a label without references). query (N, D), ref (M, D), ref_label (M,) in 0..L−1."""
    n, d = query.shape
    out = np.full((n, num_labels), np.inf)
    for i in range(n):
        for j in range(ref.shape[0]):
            acc = 0.0
            for c in range(d):
                diff = query[i, c] - ref[j, c]
                acc += diff * diff
            lab = ref_label[j]
            if acc < out[i, lab]:
                out[i, lab] = acc
    return out


@njit(cache=True)
def _local_distances(query, prev, prev_label, num_labels, radius, pos_weight):
    """(h, w, L) smallest feature + position distance to the previous frame's pixels of each label
    within a (2·radius+1)² window: |f_q − f_p|² + pos_weight·(dy² + dx²). query, prev (h, w, D)."""
    h, w, d = query.shape
    out = np.full((h, w, num_labels), np.inf)
    for y in range(h):
        for x in range(w):
            for yy in range(max(y - radius, 0), min(y + radius + 1, h)):
                for xx in range(max(x - radius, 0), min(x + radius + 1, w)):
                    acc = pos_weight * ((yy - y) ** 2 + (xx - x) ** 2)
                    for c in range(d):
                        diff = query[y, x, c] - prev[yy, xx, c]
                        acc += diff * diff
                    lab = prev_label[yy, xx]
                    if acc < out[y, x, lab]:
                        out[y, x, lab] = acc
    return out


def _pixel_features(frame: np.ndarray, stride: int) -> np.ndarray:
    """(h, w, 7) features of an (H, W, 3) uint8 frame averaged over stride×stride cells: colour (0..1)
    and the 5×5-neighbourhood mean colour and intensity spread (a crude texture descriptor)."""
    img = frame.astype(np.float32) / 255.0
    h, w = img.shape[0] // stride, img.shape[1] // stride
    img = img[: h * stride, : w * stride].reshape(h, stride, w, stride, 3).mean((1, 3))
    ones = box_sum(np.ones((h, w), np.float32), 2)[..., None]
    mean = box_sum(img, 2) / ones
    grey = img.mean(-1)
    spread = np.sqrt(np.maximum(box_sum(grey**2, 2) / ones[..., 0] - (box_sum(grey, 2) / ones[..., 0]) ** 2,
                                0.0))
    return np.concatenate([img, 0.5 * mean, 2.0 * spread[..., None]], -1).astype(np.float64)


def _upsample_labels(scores: np.ndarray, shape: tuple[int, int], stride: int) -> np.ndarray:
    """Nearest-cell upsampling of (h, w, L) scores to (H, W, L); pixels past the last cell repeat it."""
    h, w = scores.shape[:2]
    ys = np.minimum(np.arange(shape[0]) // stride, h - 1)
    xs = np.minimum(np.arange(shape[1]) // stride, w - 1)
    return scores[ys][:, xs]


def propagate_embed(frames, first_mask, *, stride: int = 2, refs_per_label: int = 1500,
                    radius: int = 6, pos_weight: float = 0.002, global_penalty: float = 0.01,
                    temperature: float = 0.01, local_background: bool = True, seed: int = 0) -> np.ndarray:
    """Nearest-neighbour matching of pixel features to the first frame and the previous prediction.

    No learned network: a pixel's "embedding" is its colour, its neighbourhood's mean colour and its
    intensity spread (``_pixel_features``), on a grid of stride×stride cells. For each frame t and each
    label (background and every object), in the spirit of FEELVOS's global and local matching:
      1. global distance: to the nearest first-frame pixel of that label (up to ``refs_per_label``
         pixels per label, drawn with ``seed``) — finds the object anywhere, e.g. after re-entry;
      2. local distance: to the nearest pixel of that label in the previous prediction within
         ``radius`` cells, plus pos_weight·(cell distance)² — follows the object and keeps look-alike
         distractors, which were background a frame ago, in the background;
      3. d_label = min(global + global_penalty, local) (the background's local term can be switched
         off with local_background=False: re-entering objects are then less easily absorbed into the
         background, but look-alike distractors are no longer held there); scores
         exp(−d / temperature); each cell takes the best label, and pixels take their cell's label.
    Limits: an object that re-appears next to background of a similar colour is taken for that
    background and, once labelled so, the local term keeps it there; appearance changes drift away
    from the first frame's references.
    """
    frames, ids, k = check_inputs(frames, first_mask)
    if int(stride) < 1 or int(radius) < 1:
        raise ValueError(f"stride and radius must be >= 1, got {stride} and {radius}")
    t_len, height, width = frames.shape[:3]
    stride = int(stride)
    if height // stride < 2 or width // stride < 2:
        raise ValueError(f"frames of {height}×{width} are too small for stride {stride}")
    rng = np.random.default_rng(seed)
    out = np.zeros(frames.shape[:3], np.uint8)
    out[0] = ids

    feat0 = _pixel_features(frames[0], stride)
    h, w = feat0.shape[:2]
    lab0 = _cell_labels(ids, stride, k)  # majority label of each cell
    ref_f, ref_l = [], []
    for label in range(k + 1):
        where = np.flatnonzero(lab0.ravel() == label)
        if where.size > refs_per_label:
            where = rng.choice(where, refs_per_label, replace=False)
        ref_f.append(feat0.reshape(-1, feat0.shape[-1])[where])
        ref_l.append(np.full(where.size, label, np.int64))
    ref_f, ref_l = np.concatenate(ref_f), np.concatenate(ref_l)

    prev_f, prev_l = feat0, lab0
    for t in range(1, t_len):
        f = _pixel_features(frames[t], stride)
        d_global = _global_distances(f.reshape(-1, f.shape[-1]), ref_f, ref_l, k + 1).reshape(h, w, k + 1)
        d_local = _local_distances(f, prev_f, prev_l, k + 1, int(radius), float(pos_weight))
        d = np.minimum(d_global + global_penalty, d_local)
        if not local_background:
            d[..., 0] = d_global[..., 0]
        scores = np.exp(-(d - d.min(-1, keepdims=True)) / temperature)
        lab = scores.argmax(-1).astype(np.int64)
        out[t] = _upsample_labels(scores, (height, width), stride).argmax(-1)
        prev_f, prev_l = f, lab
    return out


def _cell_labels(ids: np.ndarray, stride: int, k: int) -> np.ndarray:
    """(h, w) majority label of each stride×stride cell of an (H, W) ID map."""
    h, w = ids.shape[0] // stride, ids.shape[1] // stride
    cells = ids[: h * stride, : w * stride].reshape(h, stride, w, stride)
    votes = np.stack([(cells == label).sum((1, 3)) for label in range(k + 1)], -1)
    return votes.argmax(-1).astype(np.int64)
