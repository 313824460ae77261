"""Pieces the propagation methods share: input checks, one-hot labels, colour models, masks.

Everything here sits below the methods (``propagate``, ``embed``, ``redetect``, ``osvos``), which
import it; it imports none of them. The registry of methods is ``video.methods``, above them all.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_inputs", "one_hot", "ColourModel", "box_sum", "mask_iou", "dilate", "near_boundary"]


def check_inputs(frames, first_mask) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate (frames, first_mask); return (frames, first_mask as uint8 ID map, K).

    Raises TypeError / ValueError naming the argument: frames must be a (T, H, W, 3) uint8 array with
    T ≥ 1; first_mask an (H, W) bool or integer array of the frames' size with IDs 0..255, at least one
    object, and every ID 1..K present (an object with an empty first mask cannot be propagated).
    """
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy.ndarray, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape (T, H, W, 3) with T >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if not isinstance(first_mask, np.ndarray):
        raise TypeError(f"first_mask must be a numpy.ndarray, got {type(first_mask).__name__}")
    if first_mask.shape != frames.shape[1:3]:
        raise ValueError(f"first_mask must have the frames' size {frames.shape[1:3]} (H, W), got shape "
                         f"{first_mask.shape}")
    if first_mask.dtype == bool:
        ids = first_mask.astype(np.uint8)
    elif np.issubdtype(first_mask.dtype, np.integer):
        if first_mask.min() < 0 or first_mask.max() > 255:
            raise ValueError("first_mask IDs must lie in 0..255 (0 = background)")
        ids = first_mask.astype(np.uint8)
    else:
        raise TypeError(f"first_mask must be bool or an integer ID map, got dtype {first_mask.dtype}")
    k = int(ids.max())
    if k == 0:
        raise ValueError("first_mask is empty: there is no object to propagate")
    present = np.bincount(ids.ravel(), minlength=k + 1)[1:] > 0
    if not present.all():
        missing = [int(i) + 1 for i in np.flatnonzero(~present)]
        raise ValueError(f"first_mask has no pixel for object(s) {missing}; IDs must be 1..K, all present")
    return frames, ids, k


def one_hot(ids: np.ndarray, k: int) -> np.ndarray:
    """(H, W) ID map → (H, W, K+1) float32 one-hot, channel 0 = background."""
    return (ids[..., None] == np.arange(k + 1)[None, None, :]).astype(np.float32)


class ColourModel:
    """Per-label colour histograms → posterior p(label | colour).

    Colours are quantised to ``bins``³ cells; a small floor keeps unseen colours uninformative rather
    than impossible. ``update`` blends in new counts with weight ``momentum`` so
    the model can follow a slowly changing appearance.
    """

    def __init__(self, image: np.ndarray, ids: np.ndarray, num_labels: int, bins: int = 8):
        self.bins = bins
        self.num_labels = num_labels
        self.hist = self._histograms(image, ids)

    def _cells(self, image):
        q = (image.astype(np.int64) * self.bins) // 256
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def _histograms(self, image, ids):
        """(L, bins³) colour histograms, each normalised to sum 1 (all zero for an absent label)."""
        cells = self._cells(image).ravel()
        flat = ids.ravel().astype(np.int64) * self.bins**3 + cells
        c = np.bincount(flat, minlength=self.num_labels * self.bins**3).astype(np.float64)
        c = c.reshape(self.num_labels, self.bins**3)
        return c / np.maximum(c.sum(1, keepdims=True), 1.0)

    def update(self, image, ids, momentum: float = 0.1) -> None:
        """Blend in the histograms of (image, ids) — any matching shapes, e.g. (N, 3) and (N,)."""
        new = self._histograms(image, ids)
        seen = new.sum(1) > 0  # a label absent from the new pixels keeps its histogram
        self.hist[seen] = (1 - momentum) * self.hist[seen] + momentum * new[seen]

    def support(self, image, mask: np.ndarray, label: int) -> float:
        """Fraction of the pixels under mask (H, W) whose colour is likelier under ``label`` than under
        label 0 (the background); 0 for an empty mask."""
        if not mask.any():
            return 0.0
        cells = self._cells(image[mask])
        return float(np.mean(self.hist[label, cells] > self.hist[0, cells]))

    def posterior(self, image) -> np.ndarray:
        """(H, W, L) p(label | colour) under equal label priors; a 1e-4 floor per cell (Laplace-like)."""
        lik = (self.hist + 1e-4) / (1.0 + 1e-4 * self.hist.shape[1])
        p = lik[:, self._cells(image)]  # (L, H, W)
        p = p / p.sum(0, keepdims=True)
        return np.moveaxis(p, 0, -1).astype(np.float32)


def box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum of a (H, W, ...) over the (2r+1)² window around each pixel (window clipped at borders)."""
    h, w = a.shape[:2]
    c = np.zeros((h + 1, w + 1) + a.shape[2:], np.float64)
    c[1:, 1:] = a.cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    return (c[y1][:, x1] - c[y0][:, x1] - c[y1][:, x0] + c[y0][:, x0]).astype(np.float32)


def mask_iou(masks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(D,) IoU of each of masks (D, H, W) bool with mask (H, W) bool; 0 where both are empty."""
    inter = (masks & mask).sum((1, 2))
    union = (masks | mask).sum((1, 2))
    return inter / np.maximum(union, 1)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """(H, W) bool mask grown by ``r`` pixels (chessboard distance)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ys, ye = max(0, -dy), min(h, h - dy)
            xs, xe = max(0, -dx), min(w, w - dx)
            out[ys:ye, xs:xe] |= mask[ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def near_boundary(labels: np.ndarray, band: int) -> np.ndarray:
    """(H, W) bool: pixels within ``band`` pixels (chessboard distance) of a label change."""
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[1:, :] != labels[:-1, :]
    return dilate(edge, band)
