"""From data-set items to what the model takes: batches of images and targets, and augmentation.

An *item* is a dict with ``image`` (H, W, 3) uint8 (or float in [0, 1]), ``boxes`` (K, 4) float32
(x1, y1, x2, y2, continuous pixel coordinates), ``labels`` (K,) int64 and ``masks`` (K, H, W) bool.
Every augmentation takes an item and an ``np.random.Generator`` and returns a new item in which the
image, the boxes and the masks moved together:

- :func:`hflip` — mirror left-right: x ↦ W − x, so a box (x1, x2) becomes (W − x2, W − x1) and the
  mask columns reverse (the torchvision detection references' ``RandomHorizontalFlip``, p = 0.5).
- :func:`resize_shortest_edge` — scale so the short side is ``short`` unless the long side would
  exceed ``max_size`` (detectron2's ``ResizeShortestEdge``, and exactly the rule of the model's own
  resize, :class:`~minimaskrcnn.model.transform.GeneralizedRCNNTransform`): the image bilinearly
  (align_corners=False), the masks by nearest neighbour, the boxes by (W'/W, H'/H).
- :class:`Augment` — both, with the short side drawn from a range (scale jitter) in training.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["batch_of", "hflip", "resize_shortest_edge", "shortest_edge_size", "Augment", "Subset",
           "split_indices"]


def batch_of(dataset, indices) -> tuple[list, list]:
    """Images and targets (boxes, labels, masks) of ``dataset`` items ``indices``.

    Returns ``(images, targets)``: images a list of (H, W, 3) uint8 arrays, targets a list of dicts
    with ``boxes`` (K, 4) float32, ``labels`` (K,) int64 and ``masks`` (K, H, W) bool."""
    items = [dataset[i] for i in indices]
    return ([it["image"] for it in items],
            [{"boxes": it["boxes"], "labels": it["labels"], "masks": it["masks"]} for it in items])


def hflip(image: np.ndarray, target: dict) -> tuple[np.ndarray, dict]:
    """Mirror an (H, W, 3) image and its target left-right: x1' = W − x2, x2' = W − x1."""
    w = image.shape[1]
    boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    out = {**target, "boxes": flipped}
    if "masks" in target:
        out["masks"] = np.ascontiguousarray(np.asarray(target["masks"])[:, :, ::-1])
    return np.ascontiguousarray(image[:, ::-1]), out


def shortest_edge_size(h: int, w: int, short: float, max_size: float) -> tuple[int, int]:
    """(H', W') for short side ``short`` capped by long side ``max_size`` (floored, as torchvision)."""
    scale = min(short / min(h, w), max_size / max(h, w))
    return max(1, int(math.floor(h * scale))), max(1, int(math.floor(w * scale)))


def resize_shortest_edge(image: np.ndarray, target: dict, short: float, max_size: float):
    """Resize an (H, W, 3) image and its target to short side ``short`` (long side <= ``max_size``).

    Returns ``(image (H', W', 3) float32 in [0, 1], target)``: the image as float so the bilinear
    values are not rounded to uint8 (the model takes float images in [0, 1] as they are), boxes
    scaled by (W'/W, H'/H), masks resized by nearest neighbour — the same functions the model's
    transform uses, so ``short = min_size`` gives exactly the model's own resize."""
    from minimaskrcnn.model.transform import resize_bilinear, resize_boxes, resize_nearest

    h, w = image.shape[:2]
    nh, nw = shortest_edge_size(h, w, short, max_size)
    x = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
    x = resize_bilinear(np.ascontiguousarray(x.transpose(2, 0, 1)), nh, nw).transpose(1, 2, 0)
    out = dict(target)
    out["boxes"] = resize_boxes(np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4), (h, w),
                                (nh, nw)).astype(np.float32)
    if "masks" in target:
        out["masks"] = resize_nearest(np.asarray(target["masks"], dtype=bool), nh, nw)
    return np.ascontiguousarray(x), out


class Augment:
    """Training augmentation: resize (short side drawn from ``short_sides``) then a random flip.

    short_sides: None (no resize here: the model resizes), an int (always that short side) or a
    pair (lo, hi): the short side is drawn uniformly from the integers lo..hi per image
    (detectron2's ``ResizeShortestEdge(sample_style="range")``). max_size: cap of the long side.
    flip_prob: probability of :func:`hflip` (0.5, torchvision's references).
    ``aug(image, target, rng)`` returns the new pair; all randomness comes from ``rng``.
    """

    def __init__(self, short_sides=None, max_size: float = 1333, flip_prob: float = 0.5):
        if short_sides is not None:
            lo, hi = (short_sides, short_sides) if np.isscalar(short_sides) else tuple(short_sides)
            if not 1 <= lo <= hi:
                raise ValueError(f"short_sides must be a positive size or a range lo <= hi, "
                                 f"got {short_sides}")
            short_sides = (int(lo), int(hi))
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.short_sides, self.max_size, self.flip_prob = short_sides, max_size, float(flip_prob)

    def __call__(self, image: np.ndarray, target: dict, rng: np.random.Generator):
        if self.short_sides is not None:
            lo, hi = self.short_sides
            short = int(rng.integers(lo, hi + 1)) if hi > lo else lo
            image, target = resize_shortest_edge(image, target, short, self.max_size)
        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            image, target = hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return (f"Augment(short_sides={self.short_sides}, max_size={self.max_size}, "
                f"flip_prob={self.flip_prob})")


class Subset:
    """Items ``indices`` of ``dataset`` (a held-out split), with the data set's class names and ids."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.class_names = dataset.class_names
        self.category_ids = getattr(dataset, "category_ids", None)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, {len(self)} items)"


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of 0..n−1 into (train, val): round(n · val_fraction) held out, at least one
    each side, both sorted. The same (n, val_fraction, seed) always gives the same split."""
    if n < 2:
        raise ValueError(f"a held-out split needs at least 2 images, the data set has {n}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    order = np.random.default_rng([seed, 4]).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
