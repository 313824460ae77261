"""From data-set items to what the model takes: batches of images and targets."""

from __future__ import annotations


def batch_of(dataset, indices) -> tuple[list, list]:
    """Images and targets (boxes, labels, masks) of ``dataset`` items ``indices``.

    Returns ``(images, targets)``: images a list of (H, W, 3) uint8 arrays, targets a list of dicts
    with ``boxes`` (K, 4) float32, ``labels`` (K,) int64 and ``masks`` (K, H, W) bool."""
    items = [dataset[i] for i in indices]
    return ([it["image"] for it in items],
            [{"boxes": it["boxes"], "labels": it["labels"], "masks": it["masks"]} for it in items])
